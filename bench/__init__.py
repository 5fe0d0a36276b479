"""ft-bench: comparative benchmark of fine-tuning methods for causal language models."""

from __future__ import annotations

from typing import Any


def _register_resolvers() -> None:
    try:
        from omegaconf import OmegaConf
    except ImportError:  # plain-library use without Hydra
        return
    if not OmegaConf.has_resolver("pick"):
        # `${pick:${method.lr_grid},${lr_index}}`: the lr_index-th point of a method's grid;
        # lr_index=chosen is resolved by bench.config.check from the grid's finished runs
        OmegaConf.register_new_resolver(
            "pick", lambda seq, i: None if str(i) == "chosen" else list(seq)[int(i)]
        )
    if not OmegaConf.has_resolver("idiv"):
        # `${idiv:${budget.tokens_per_step},${task.seq_len}}`: sequences per step at a fixed
        # token count per step, so tasks with long and short sequences get comparable steps
        OmegaConf.register_new_resolver("idiv", lambda a, b: max(1, int(a) // int(b)))


_register_resolvers()
__all__: list[Any] = []
