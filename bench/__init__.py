"""ft-bench: comparative benchmark of fine-tuning methods for causal language models."""

from __future__ import annotations

from typing import Any


def _register_resolvers() -> None:
    try:
        from omegaconf import OmegaConf
    except ImportError:  # plain-library use without Hydra
        return
    if not OmegaConf.has_resolver("pick"):
        # `${pick:${method.lr_grid},${lr_index}}`: the lr_index-th point of a method's grid
        OmegaConf.register_new_resolver("pick", lambda seq, i: list(seq)[int(i)])


_register_resolvers()
__all__: list[Any] = []
