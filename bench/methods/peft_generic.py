"""Any other peft method (IA3, AdaLoRA, DoRA via LoraConfig(use_dora=True), LoHa, ...):
`method=peft method.peft_type=IA3 method.kwargs='{target_modules: [k_proj, v_proj, down_proj],
feedforward_modules: [down_proj]}'`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.methods import register, require
from bench.methods._peft_common import PeftMethod
from bench.models import ModelInfo


def _config_classes() -> dict[str, Any]:
    import peft

    return {
        n[: -len("Config")]: getattr(peft, n)
        for n in dir(peft)
        if n.endswith("Config") and n != "PeftConfig" and isinstance(getattr(peft, n), type)
    }


class GenericPeft(PeftMethod):
    name = "peft"

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        t = cfg.get("peft_type")
        valid = sorted(_config_classes())
        require(t in valid, "method.peft_type", f"got {t!r}; valid: {valid}")
        require(isinstance(cfg.get("kwargs") or {}, Mapping), "method.kwargs", "must be a mapping")

    def peft_config(self, cfg: Mapping[str, Any]) -> Any:
        cls = _config_classes()[cfg["peft_type"]]
        return cls(task_type="CAUSAL_LM", **dict(cfg.get("kwargs") or {}))


register(GenericPeft())
