"""Shared pieces for the peft-backed methods (not a method itself: leading underscore)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import PositiveInt

from bench.methods import Method, MethodConfig, dir_bytes, require
from bench.models import ModelInfo


class PeftMethod(Method):
    """Base for methods that wrap the model with a peft config built by `peft_config`."""

    def peft_config(self, cfg: Mapping[str, Any], tokenizer_dir: str | None) -> Any:
        raise NotImplementedError

    def apply(self, model: Any, cfg: Mapping[str, Any], tokenizer_dir: str | None = None) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(cfg, tokenizer_dir))

    def inference_extra_params(self, model: Any) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def save(self, model: Any, out: Path) -> int:
        model.save_pretrained(out)
        return dir_bytes(out)


def active_peft_type(model: Any) -> str | None:
    """The peft type name of a model's active adapter (None for a plain model)."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is None:
        return None
    return str(getattr(cfg.peft_type, "value", cfg.peft_type))


class VirtualTokensConfig(MethodConfig):
    num_virtual_tokens: PositiveInt


class LoraSettings(MethodConfig):
    """LoRA's keys (QLoRA composes the same YAML, so it shares this schema)."""

    r: PositiveInt
    alpha: float
    dropout: float
    target_modules: list[str] | Literal["all-linear"]
    init: Literal["kaiming", "gaussian"]
    rslora: bool
    # with a vocabulary expansion: also train the new tokens' rows (peft trainable_token_indices;
    # a tied output layer follows). Absent from lora.yaml, so existing run ids keep.
    train_new_tokens: bool = False


def check_targets(cfg: Mapping[str, Any], info: ModelInfo, key: str = "target_modules") -> None:
    t = cfg.get(key)
    if t == "all-linear":
        return
    require(
        isinstance(t, list | tuple) and len(t) > 0,
        f"method.{key}",
        f"must be a non-empty list or 'all-linear'; valid names: {list(info.module_names)}",
    )
    bad = [m for m in t if m not in info.module_names]
    require(not bad, f"method.{key}", f"unknown modules {bad}; valid: {list(info.module_names)}")
