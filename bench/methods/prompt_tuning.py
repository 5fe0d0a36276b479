"""Prompt tuning (Lester et al. 2021): a learnable soft prompt prepended to the input embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from bench.methods import register, require
from bench.methods._peft_common import PeftMethod, VirtualTokensConfig, active_peft_type
from bench.models import ModelInfo


class PromptTuningConfig(VirtualTokensConfig):
    init: Literal["random", "text", "vocab"]
    init_text: str | None


# peft's init for each `init` value: vocab = embeddings of tokens sampled from the vocabulary
INITS = {"random": "RANDOM", "text": "TEXT", "vocab": "SAMPLE_VOCAB"}
PROMPT_LABELS = {"num_virtual_tokens": "tokens", "init": "init", "init_text": "init_text"}


def text_init_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """init_text tells settings apart only when the prompt starts from it (init=text)."""
    if settings.get("init") != "text":
        settings.pop("init_text", None)
    return settings


def drops_position_ids(model: Any) -> bool:
    """peft prompt tuning / P-tuning drop position_ids, so left padding would sit between the
    virtual tokens and the prompt and shift the prompt's positions: batch equal lengths only.
    (Prefix tuning offsets position_ids itself and pads safely.)"""
    return active_peft_type(model) in ("PROMPT_TUNING", "P_TUNING")


class PromptTuning(PeftMethod):
    name = "prompt_tuning"
    Config = PromptTuningConfig
    label_keys = PROMPT_LABELS
    order = 2
    note = (
        "Prompt tuning (Lester et al., 2021): a soft prompt of learnable virtual-token "
        "embeddings is prepended to the input of the frozen model; initialised randomly, from "
        "the embeddings of a text (repeated to length), or from those of tokens sampled from "
        "the vocabulary. Only the prompt is trained and stored."
    )
    wants_tokenizer = True  # text init tokenizes init_text

    def settings(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        return text_init_settings(super().settings(cfg))

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        s = self.parse(cfg)
        if s.init == "text":
            require(bool(s.init_text), "method.init_text", "required when init=text")

    def peft_config(self, cfg: Mapping[str, Any], tokenizer_dir: str | None) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit

        text = cfg["init"] == "text"
        return PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=cfg["num_virtual_tokens"],
            prompt_tuning_init=PromptTuningInit[INITS[cfg["init"]]],
            prompt_tuning_init_text=cfg["init_text"] if text else None,
            tokenizer_name_or_path=tokenizer_dir if text else None,
        )

    def pads_unsafely(self, model: Any) -> bool:
        return drops_position_ids(model)


register(PromptTuning())
