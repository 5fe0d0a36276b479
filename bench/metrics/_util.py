"""Small helpers shared by the metrics: device, token conventions, side-effect guards."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def model_device(model: Any) -> torch.device:
    """Where inputs must go: the embedding's device (robust for 4-bit and peft-wrapped models)."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device


def prefix_token_id(tok: Any) -> int:
    """The token that conditions the first scored token: BOS, else EOS (lm-eval's rule)."""
    if tok.bos_token_id is not None:
        return int(tok.bos_token_id)
    return int(tok.eos_token_id)


def prompt_ids(text: str, tok: Any) -> list[int]:
    """Prompt encoding for generation, the same rule as bench.train.prompt_ids (the run
    pipeline's templates): BOS only for tokenizers that add it themselves."""
    bos = [tok.bos_token_id] if tok.bos_token_id is not None and _wants_bos(tok) else []
    return bos + tok(text, add_special_tokens=False)["input_ids"]


def _wants_bos(tok: Any) -> bool:
    return bool(getattr(tok, "add_bos_token", False))


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


def _gen_cfg(model: Any, key: str) -> Any:
    gc = getattr(model, "generation_config", None)
    return getattr(gc, key, None) if gc is not None else None


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
