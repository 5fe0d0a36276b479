"""Prompt tuning (Lester et al. 2021): a learnable soft prompt prepended to the input embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.methods import register, require
from bench.methods._peft_common import PeftMethod, check_virtual_tokens
from bench.models import ModelInfo

INITS = ("random", "text")


class PromptTuning(PeftMethod):
    name = "prompt_tuning"

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        check_virtual_tokens(cfg)
        init = cfg.get("init")
        require(init in INITS, "method.init", f"got {init!r}; valid: {list(INITS)}")
        if init == "text":
            require(bool(cfg.get("init_text")), "method.init_text", "required when init=text")

    def apply(self, model: Any, cfg: Mapping[str, Any]) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

        text = cfg["init"] == "text"
        pc = PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=cfg["num_virtual_tokens"],
            prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
            prompt_tuning_init_text=cfg.get("init_text") if text else None,
            tokenizer_name_or_path=cfg.get("_tokenizer_path") if text else None,
        )
        return get_peft_model(model, pc)


register(PromptTuning())
