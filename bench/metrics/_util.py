"""Small helpers shared by the metrics: device, token conventions, side-effect guards."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from bench.generate import eos_ids, generate_ids, model_device, pad_id
from bench.train import prompt_ids

__all__ = ["continue_ids", "eos_ids", "model_device", "pad_id", "prompt_ids"]


def continue_ids(model: Any, tok: Any, prompts: Any, **kw: Any) -> list[list[int]]:
    """bench.generate.generate_ids with the metrics' conventions: every EOS id the model or
    tokenizer knows ends a continuation, padding with the model's pad id."""
    return generate_ids(model, tok, prompts, eos=eos_ids(model, tok), pad=pad_id(model, tok), **kw)


def prefix_token_id(tok: Any) -> int:
    """The token that conditions the first scored token: BOS, else EOS (lm-eval's rule)."""
    if tok.bos_token_id is not None:
        return int(tok.bos_token_id)
    return int(tok.eos_token_id)


def num_virtual_tokens(model: Any) -> int:
    """Extra sequence positions a peft prompt-learning adapter adds (0 otherwise / disabled)."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is None or not getattr(cfg, "is_prompt_learning", False):
        return 0
    return int(cfg.num_virtual_tokens)


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Dropout off during measurement; the caller's train/eval flag comes back afterwards."""
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the global RNGs afterwards: lm-eval reseeds python/numpy/torch, and the "before"
    evaluation runs before training, so it must not change the run's random stream."""
    import numpy as np

    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
