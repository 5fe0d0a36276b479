"""Greedy generation that is correct for every method, and the reference it is tested against.

transformers 4.57.x `generate()` handles peft prompt and prefix methods correctly (5.x drops
prefix-tuning prefixes silently); tests/test_generation.py compares `greedy_generate` with
`greedy_reference`, a plain no-cache argmax loop over the adapter-active forward pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from bench import methods
from bench.train import autocast_ctx, prompt_ids


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


def model_device(model: Any) -> torch.device:
    """Where inputs must go: the embedding's device (robust for 4-bit and peft-wrapped models)."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device


def _gen_cfg(model: Any, key: str) -> Any:
    gc = getattr(model, "generation_config", None)
    return getattr(gc, key, None) if gc is not None else None


def pad_id(model: Any, tok: Any) -> int:
    for v in (tok.pad_token_id, _gen_cfg(model, "pad_token_id"), tok.eos_token_id):
        if v is not None:
            return int(v[0] if isinstance(v, list | tuple) else v)
    return 0


def eos_ids(model: Any, tok: Any) -> set[int]:
    """Every id that ends a generation: the model's generation config and the tokenizer's EOS."""
    out: set[int] = set()
    for v in (_gen_cfg(model, "eos_token_id"), tok.eos_token_id):
        if v is None:
            continue
        out.update(int(x) for x in (v if isinstance(v, list | tuple) else [v]))
    return out


class StopOnText(StoppingCriteria):
    """Per-row stop once the decoded new part (after `start` prompt columns) contains `text`
    (e.g. a newline ends a one-line answer); the text is kept, callers cut at it."""

    def __init__(self, tok: Any, start: int, text: str) -> None:
        self.tok, self.start, self.text = tok, start, text

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kw: Any) -> torch.BoolTensor:
        rows = self.tok.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
        done = [self.text in r for r in rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def decoding_options(decoding: Any | None) -> dict[str, Any]:
    """transformers `generate()` options of a decoding setting (`eval.decoding`; None: greedy).
    Sampling defaults a model's generation_config may carry are overridden either way."""
    opts: dict[str, Any] = {"do_sample": False, "num_beams": 1, "temperature": None,
                            "top_p": None, "top_k": None}  # fmt: skip
    if decoding is None:
        return opts
    if decoding.repetition_penalty != 1.0:
        opts["repetition_penalty"] = decoding.repetition_penalty
    if decoding.no_repeat_ngram_size:
        opts["no_repeat_ngram_size"] = decoding.no_repeat_ngram_size
    if decoding.do_sample:  # top_k 0: nucleus sampling alone, as the setting states it
        opts.update(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p,
                    top_k=0)  # fmt: skip
    return opts


@torch.no_grad()
def generate_ids(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    eos: Collection[int],
    pad: int,
    min_new_tokens: int = 0,
    stop_text: str | None = None,
    decoding: Any | None = None,
    seed: int = 0,
) -> list[list[int]]:
    """Continuation ids of each token-id prompt (greedy unless `decoding`, an
    `eval.decoding` setting, says otherwise), cut before the first id in `eos`.

    Left-padded batches sorted by prompt length (equal lengths only where padding is unsafe).
    `min_new_tokens` masks EOS until that many tokens exist (min = max gives fixed-length
    continuations). `stop_text` ends a row once its decoded continuation contains it. Sampling
    draws from a generator seeded with `seed`; the caller's random state is left as it was."""
    dev = model_device(model)
    eos_list = sorted(eos)
    opts = {
        **decoding_options(decoding),
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": min_new_tokens or None,
        "pad_token_id": pad,
        "eos_token_id": eos_list or None,
    }
    if opts["do_sample"]:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            return _generate(model, tok, prompts, dev, opts, batch_size, eos, pad, stop_text)
    return _generate(model, tok, prompts, dev, opts, batch_size, eos, pad, stop_text)


def _generate(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[int]],
    dev: torch.device,
    opts: dict[str, Any],
    batch_size: int,
    eos: Collection[int],
    pad: int,
    stop_text: str | None,
) -> list[list[int]]:
    out: dict[int, list[int]] = {}
    for idx in length_batches(prompts, batch_size, equal_lengths=methods.pads_unsafely(model)):
        n = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), n), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(idx):
            ids[j, n - len(prompts[i]) :] = torch.tensor(list(prompts[i]), dtype=torch.long)
            mask[j, n - len(prompts[i]) :] = 1
        stop = StoppingCriteriaList([StopOnText(tok, n, stop_text)]) if stop_text else None
        with warnings.catch_warnings():
            # handled above (no padding), so peft's per-step warning about it is noise
            warnings.filterwarnings("ignore", message="Position ids are not supported")
            gen = model.generate(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), stopping_criteria=stop, **opts
            )
        for j, i in enumerate(idx):
            row = gen[j, n:].tolist()
            cut = next((k for k, t in enumerate(row) if t in eos), len(row))
            out[i] = row[:cut]
    return [out[i] for i in range(len(prompts))]


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
    decoding: Any | None = None,
    seed: int = 0,
) -> list[list[int]]:
    """New token ids per text prompt (the task template's encoding), EOS and after removed.
    `stop_at_newline` ends a row once its continuation holds a newline (answers are one line,
    scored on their first line, so this changes no score and saves most decoding steps)."""
    model.eval()
    with autocast_ctx(precision, device):
        return generate_ids(
            model,
            tok,
            [prompt_ids(p, tok) for p in prompts],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            eos=[] if tok.eos_token_id is None else [tok.eos_token_id],  # as before: None = no EOS
            pad=tok.pad_token_id,
            stop_text="\n" if stop_at_newline else None,
            decoding=decoding,
            seed=seed,
        )


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
