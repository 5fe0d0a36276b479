"""Full fine-tuning: the baseline; every parameter is trainable."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.methods import dir_bytes, register
from bench.models import ModelInfo


class Full:
    name = "full"

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        pass

    def load_kwargs(self, cfg: Mapping[str, Any], device: str) -> dict[str, Any]:
        return {}

    def apply(self, model: Any, cfg: Mapping[str, Any]) -> Any:
        model.requires_grad_(True)
        return model

    def inference_extra_params(self, model: Any) -> int:
        return 0  # a new copy of the weights, but no extra parameters

    def save(self, model: Any, out: Path) -> int:
        model.save_pretrained(out)
        return dir_bytes(out)


register(Full())
