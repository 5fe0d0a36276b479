"""P-tuning v1 (Liu et al. 2021, "GPT Understands, Too"): virtual-token embeddings produced by
a prompt encoder (MLP or LSTM). The encoder is only needed in training: peft saves its output
embeddings, so the inference cost is num_virtual_tokens x hidden."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.methods import register, require
from bench.methods._peft_common import PeftMethod, check_virtual_tokens
from bench.models import ModelInfo

ENCODERS = {"mlp": "MLP", "lstm": "LSTM"}


class PTuningV1(PeftMethod):
    name = "ptuning_v1"

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        check_virtual_tokens(cfg)
        e = cfg.get("encoder")
        require(e in ENCODERS, "method.encoder", f"got {e!r}; valid: {list(ENCODERS)}")
        h = cfg.get("encoder_hidden_size")
        require(
            isinstance(h, int) and h > 0, "method.encoder_hidden_size", f"must be > 0, got {h!r}"
        )

    def peft_config(self, cfg: Mapping[str, Any]) -> Any:
        from peft import PromptEncoderConfig, PromptEncoderReparameterizationType

        return PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=cfg["num_virtual_tokens"],
            encoder_reparameterization_type=PromptEncoderReparameterizationType[
                ENCODERS[cfg["encoder"]]
            ],
            encoder_hidden_size=cfg["encoder_hidden_size"],
            encoder_num_layers=cfg.get("encoder_num_layers", 2),
            encoder_dropout=cfg.get("encoder_dropout", 0.0),
        )

    def inference_extra_params(self, model: Any) -> int:
        return model.peft_config["default"].num_virtual_tokens * model.config.hidden_size


register(PTuningV1())
