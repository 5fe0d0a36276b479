"""Shared pieces for the peft-backed methods (not a method itself: leading underscore)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.methods import dir_bytes, require
from bench.models import ModelInfo


class PeftMethod:
    """Base for methods that wrap the model with a peft config built by `peft_config`."""

    name = "peft-base"

    def peft_config(self, cfg: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        pass

    def load_kwargs(self, cfg: Mapping[str, Any], device: str) -> dict[str, Any]:
        return {}

    def apply(self, model: Any, cfg: Mapping[str, Any]) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(cfg))

    def inference_extra_params(self, model: Any) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def save(self, model: Any, out: Path) -> int:
        model.save_pretrained(out)
        return dir_bytes(out)


def check_virtual_tokens(cfg: Mapping[str, Any]) -> None:
    n = cfg.get("num_virtual_tokens")
    require(
        isinstance(n, int) and n > 0, "method.num_virtual_tokens", f"must be an int > 0, got {n!r}"
    )


def check_targets(cfg: Mapping[str, Any], info: ModelInfo, key: str = "target_modules") -> None:
    t = cfg.get(key)
    if t in ("all-linear",):
        return
    require(
        isinstance(t, (list, tuple)) and len(t) > 0,
        f"method.{key}",
        f"must be a non-empty list or 'all-linear'; valid names: {list(info.module_names)}",
    )
    bad = [m for m in t if m not in info.module_names]
    require(not bad, f"method.{key}", f"unknown modules {bad}; valid: {list(info.module_names)}")
