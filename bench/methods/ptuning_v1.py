"""P-tuning v1 (Liu et al. 2021, "GPT Understands, Too"): virtual-token embeddings produced by
a prompt encoder (MLP or LSTM). The encoder is only needed in training: peft saves its output
embeddings, so the inference cost is num_virtual_tokens x hidden."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import NonNegativeFloat, PositiveInt

from bench.methods import register
from bench.methods._peft_common import PeftMethod, VirtualTokensConfig
from bench.methods.prompt_tuning import drops_position_ids

ENCODERS = {"mlp": "MLP", "lstm": "LSTM"}
PTUNING_V1_LABELS = {"num_virtual_tokens": "tokens", "encoder": "encoder",
                     "encoder_hidden_size": "hidden", "encoder_num_layers": "layers",
                     "encoder_dropout": "encoder_dropout"}  # fmt: skip


class PTuningV1Config(VirtualTokensConfig):
    encoder: Literal["mlp", "lstm"]
    encoder_hidden_size: PositiveInt
    encoder_num_layers: PositiveInt
    encoder_dropout: NonNegativeFloat


class PTuningV1(PeftMethod):
    name = "ptuning_v1"
    Config = PTuningV1Config
    label_keys = PTUNING_V1_LABELS
    order = 3
    note = (
        "P-tuning (Liu et al., 2021, 'GPT Understands, Too'): the virtual-token embeddings are "
        "produced by a prompt encoder (MLP or LSTM) and enter at the input layer only; the "
        "encoder is discarded after training. A parameter-efficient method, not a "
        "learning-rate schedule."
    )

    def peft_config(self, cfg: Mapping[str, Any], tokenizer_dir: str | None) -> Any:
        from peft import PromptEncoderConfig, PromptEncoderReparameterizationType

        return PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=cfg["num_virtual_tokens"],
            encoder_reparameterization_type=PromptEncoderReparameterizationType[
                ENCODERS[cfg["encoder"]]
            ],
            encoder_hidden_size=cfg["encoder_hidden_size"],
            encoder_num_layers=cfg["encoder_num_layers"],
            encoder_dropout=cfg["encoder_dropout"],
        )

    def pads_unsafely(self, model: Any) -> bool:
        return drops_position_ids(model)

    def inference_extra_params(self, model: Any) -> int:
        return model.peft_config["default"].num_virtual_tokens * model.config.hidden_size


register(PTuningV1())
