"""Greedy generation that is correct for every method, and the reference it is tested against.

transformers 4.57.x `generate()` handles peft prompt and prefix methods correctly (5.x drops
prefix-tuning prefixes silently); tests/test_generation.py compares `greedy_generate` with
`greedy_reference`, a plain no-cache argmax loop over the adapter-active forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bench.train import autocast_ctx, prompt_ids


def padding_unsafe(model: Any) -> bool:
    """peft prompt tuning / P-tuning drop position_ids, so left padding would sit between the
    virtual tokens and the prompt and shift the prompt's positions: batch equal lengths only.
    (Prefix tuning offsets position_ids itself and pads safely.)"""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is None or not getattr(cfg, "is_prompt_learning", False):
        return False
    return str(getattr(cfg.peft_type, "value", cfg.peft_type)) not in ("PREFIX_TUNING", "CARTRIDGE")


def length_batches(
    prompts: Sequence[Sequence[int]], batch_size: int, *, equal_lengths: bool
) -> list[list[int]]:
    """Index batches, sorted by prompt length so they pad little (or not at all)."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = []
    for i in order:
        last = out[-1] if out else None
        if (
            last is None
            or len(last) >= batch_size
            or (equal_lengths and len(prompts[last[0]]) != len(prompts[i]))
        ):
            out.append([i])
        else:
            last.append(i)
    return out


class NewlineStop:
    """Per-row stop once the generated part (after the `start` prompt columns) has a newline."""

    def __init__(self, tok: Any, start: int) -> None:
        self.tok, self.start = tok, start

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kw: Any) -> torch.Tensor:
        rows = [self.tok.decode(r[self.start :], skip_special_tokens=True) for r in input_ids]
        return torch.tensor(["\n" in r for r in rows], device=input_ids.device)


@torch.no_grad()
def greedy_generate(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    precision: str = "fp32",
    device: str = "cpu",
    stop_at_newline: bool = False,
) -> list[list[int]]:
    """New token ids per prompt (EOS and everything after it removed). Left-padded batches.
    `stop_at_newline` ends a row once its continuation holds a newline (answers are one line,
    scored on their first line, so this changes no score and saves most decoding steps)."""
    model.eval()
    out: list[list[int]] = []
    all_ids = [prompt_ids(p, tok) for p in prompts]
    res: dict[int, list[int]] = {}
    for idx in length_batches(all_ids, batch_size, equal_lengths=padding_unsafe(model)):
        seqs = [all_ids[i] for i in idx]
        n = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, x in enumerate(seqs):
            ids[j, n - len(x) :] = torch.tensor(x)
            mask[j, n - len(x) :] = 1
        with autocast_ctx(precision, device):
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                stopping_criteria=[NewlineStop(tok, n)] if stop_at_newline else None,
            )
        new = gen[:, n:].tolist()
        for j, i in enumerate(idx):
            row = new[j]
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            res[i] = row
    out = [res[i] for i in range(len(prompts))]
    return out


@torch.no_grad()
def greedy_reference(model: Any, tok: Any, prompt: str, *, max_new_tokens: int) -> list[int]:
    """The definition of greedy decoding: full forward pass each step (no cache), argmax."""
    model.eval()
    ids = torch.tensor([prompt_ids(prompt, tok)])
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        nxt = int(logits[0, -1].argmax())
        if nxt == tok.eos_token_id:
            break
        new.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return new


def generate_text(model: Any, tok: Any, prompts: Sequence[str], **kw: Any) -> list[str]:
    return [
        tok.decode(x, skip_special_tokens=True) for x in greedy_generate(model, tok, prompts, **kw)
    ]
