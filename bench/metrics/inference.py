"""Inference cost of the model as it will be served: adapter active, and merged where possible.

  latency_ms       median wall time of one forward pass over a fixed batch (`batch_size` rows of
                   the same `prompt_tokens` held-out tokens), no KV cache.
  tokens_per_s     generated tokens per second: batch_size * new_tokens / median wall time of a
                   greedy `generate()` of exactly new_tokens tokens (prefill included).
Prompt-learning adapters (prompt tuning, P-tuning, prefix tuning) are measured as they run, so
their virtual tokens / prefix positions (`extra_positions`) show in both figures. LoRA-type
adapters are also measured on a merged deep copy (`merge_and_unload`): the `merged` block.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from bench.metrics._util import (
    eval_mode,
    model_device,
    num_virtual_tokens,
    pad_id,
    prefix_token_id,
)
from bench.metrics.nll import heldout_texts
from bench.metrics.settings import EvalSettings, InferenceSettings, parse


def can_merge(model: Any) -> bool:
    """A peft model whose adapter folds into the weights (LoRA and relatives)."""
    cfg = getattr(model, "active_peft_config", None)
    return (
        cfg is not None
        and not getattr(cfg, "is_prompt_learning", False)
        and hasattr(model, "merge_and_unload")
    )


def merged_copy(model: Any) -> Any:
    """A deep copy with the adapter merged into the base weights (the original is untouched)."""
    return copy.deepcopy(model).merge_and_unload()


def _fixed_prompt(tok: Any, n: int) -> list[int]:
    """`n` tokens of held-out text (same for every row and every model state)."""
    ids = [prefix_token_id(tok)]
    for text in heldout_texts(20, part="prefix"):
        ids += tok(" " + text, add_special_tokens=False)["input_ids"]
        if len(ids) >= n:
            break
    return (ids * (n // len(ids) + 1))[:n]


def _median_time(fn: Callable[[], Any], *, warmup: int, repeats: int, cuda: bool) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def _measure(model: Any, tok: Any, s: InferenceSettings) -> dict[str, Any]:
    dev = model_device(model)
    ids = torch.tensor([_fixed_prompt(tok, s.prompt_tokens)] * s.batch_size, device=dev)
    mask = torch.ones_like(ids)
    cuda = dev.type == "cuda"
    pad = pad_id(model, tok)

    def forward() -> None:
        model(input_ids=ids, attention_mask=mask, use_cache=False)

    def generate() -> None:
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            num_beams=1,
            max_new_tokens=s.new_tokens,
            min_new_tokens=s.new_tokens,  # fixed length, whatever the model wants
            pad_token_id=pad,
            temperature=None,
            top_p=None,
            top_k=None,
        )

    with eval_mode(model):
        lat = _median_time(forward, warmup=s.warmup, repeats=s.repeats, cuda=cuda)
        gen = _median_time(generate, warmup=s.warmup, repeats=s.repeats, cuda=cuda)
    return {
        "latency_ms": 1000.0 * lat,
        "tokens_per_s": s.batch_size * s.new_tokens / gen,
        "forward_tokens_per_s": s.batch_size * s.prompt_tokens / lat,
        "generate_s": gen,
    }


def measure_inference(
    model: Any, tok: Any, cfg: Mapping[str, Any] | EvalSettings | None
) -> dict[str, Any]:
    """Inference figures of one model state; `cfg` is the whole `eval` config (its `inference`
    section is used). Adds a `merged` block for mergeable adapters when inference.merged."""
    s = parse(cfg).inference
    out: dict[str, Any] = _measure(model, tok, s)
    out.update(
        batch_size=s.batch_size,
        prompt_tokens=s.prompt_tokens,
        new_tokens=s.new_tokens,
        extra_positions=num_virtual_tokens(model),
        device=str(model_device(model)),
        threads=torch.get_num_threads(),
        merged=None,
    )
    if s.merged and can_merge(model):
        try:
            m = merged_copy(model)
        except Exception as e:  # e.g. a 4-bit base that cannot be copied or merged here
            out["merged_error"] = f"{type(e).__name__}: {e}"
        else:
            out["merged"] = _measure(m, tok, s)
            del m
    return out
