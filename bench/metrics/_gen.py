"""Batched greedy generation for the metrics: left padding, attention mask, new tokens only.

transformers 4.57.x `generate()` is correct for every peft method (prompt, P-tuning, prefix,
LoRA) and for 4-bit models; tests/test_generation.py guards that for the run pipeline.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from bench.metrics._util import eos_ids, model_device, pad_id


class _StopOnText(StoppingCriteria):
    """Per-row stop once the decoded new text contains `text` (e.g. a newline ends an answer)."""

    def __init__(self, tok: Any, prompt_len: int, text: str) -> None:
        self.tok, self.prompt_len, self.text = tok, prompt_len, text

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kw: Any) -> torch.BoolTensor:
        texts = self.tok.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        done = [self.text in t for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


from bench.generate import length_batches as _batches  # noqa: E402
from bench.generate import padding_unsafe as _padding_unsafe  # noqa: E402


@torch.no_grad()
def greedy_generate(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    min_new_tokens: int = 0,
    stop_text: str | None = None,
) -> list[list[int]]:
    """Greedy continuation ids of each prompt (token-id lists), cut before the first EOS.

    `min_new_tokens` masks EOS until that many tokens exist (min = max gives fixed-length
    continuations). `stop_text` ends a row early once its decoded continuation contains it
    (the text is kept; callers cut at it). Prompts are sorted by length so batches pad little;
    for prompt tuning / P-tuning only equal-length prompts share a batch (see _padding_unsafe).
    """
    dev = model_device(model)
    pad, eos = pad_id(model, tok), sorted(eos_ids(model, tok))
    out: dict[int, list[int]] = {}
    greedy = {
        "do_sample": False,
        "num_beams": 1,
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": min_new_tokens or None,
        "pad_token_id": pad,
        "eos_token_id": eos or None,
        "temperature": None,  # override sampling defaults a generation_config may carry
        "top_p": None,
        "top_k": None,
    }
    for idx in _batches(prompts, batch_size, equal_lengths=_padding_unsafe(model)):
        n = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), n), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(idx):
            p = list(prompts[i])
            ids[j, n - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[j, n - len(p) :] = 1
        stop = StoppingCriteriaList([_StopOnText(tok, n, stop_text)]) if stop_text else None
        with warnings.catch_warnings():
            # handled above (no padding), so peft's per-step warning about it is noise
            warnings.filterwarnings("ignore", message="Position ids are not supported")
            gen = model.generate(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), stopping_criteria=stop, **greedy
            )
        for j, i in enumerate(idx):
            row = gen[j, n:].tolist()
            cut = next((k for k, t in enumerate(row) if t in eos), len(row))
            out[i] = row[:cut]
    return [out[i] for i in range(len(prompts))]
