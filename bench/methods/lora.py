"""LoRA (Hu et al. 2021): W' = W + (alpha/r) B A with A random, B zero, W frozen."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.methods import register, require
from bench.methods._peft_common import PeftMethod, check_targets
from bench.models import ModelInfo

INITS = {"kaiming": True, "gaussian": "gaussian"}  # peft `init_lora_weights` values


def lora_config(cfg: Mapping[str, Any]) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg["r"],
        lora_alpha=cfg["alpha"],
        lora_dropout=cfg["dropout"],
        target_modules=cfg["target_modules"]
        if cfg["target_modules"] != "all-linear"
        else "all-linear",
        init_lora_weights=INITS[cfg["init"]],
        use_rslora=cfg.get("rslora", False),
        bias="none",
    )


def check_lora(cfg: Mapping[str, Any], info: ModelInfo) -> None:
    r = cfg.get("r")
    require(isinstance(r, int) and r > 0, "method.r", f"must be an int > 0, got {r!r}")
    require(cfg.get("alpha", 0) > 0, "method.alpha", f"must be > 0, got {cfg.get('alpha')!r}")
    d = cfg.get("dropout", 0.0)
    require(0.0 <= d < 1.0, "method.dropout", f"must be in [0, 1), got {d!r}")
    require(
        cfg.get("init") in INITS, "method.init", f"got {cfg.get('init')!r}; valid: {list(INITS)}"
    )
    check_targets(cfg, info)


class LoRA(PeftMethod):
    name = "lora"

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        check_lora(cfg, info)

    def peft_config(self, cfg: Mapping[str, Any]) -> Any:
        return lora_config(cfg)


register(LoRA())
