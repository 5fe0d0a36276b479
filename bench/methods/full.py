"""Full fine-tuning: the baseline; every parameter is trainable."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.methods import Method, dir_bytes, register


class Full(Method):
    name = "full"
    order = 0
    baseline = True  # reports compare every method with it
    note = (
        "Full fine-tuning: every parameter is trained. The reference for quality and the upper "
        "bound on memory (weights, gradients and two AdamW moments for every parameter)."
    )

    def apply(self, model: Any, cfg: Mapping[str, Any], tokenizer_dir: str | None = None) -> Any:
        model.requires_grad_(True)
        return model

    def save(self, model: Any, out: Path) -> int:
        model.save_pretrained(out)
        return dir_bytes(out)


register(Full())
