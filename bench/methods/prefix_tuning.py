"""Prefix tuning (Li & Liang 2021): learnable key/value prefixes at every layer, reparameterized
by an MLP during training. The MLP is dropped after training (peft saves the computed prefixes),
so the inference extra is num_virtual_tokens x layers x 2 x kv_dim."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import PositiveInt

from bench.methods import register
from bench.methods._peft_common import PeftMethod, VirtualTokensConfig


def prefix_params(model: Any) -> int:
    """Size of the per-layer key/value prefixes peft stores for inference."""
    pc = model.peft_config["default"]
    return pc.num_virtual_tokens * pc.num_layers * 2 * pc.token_dim


class PrefixTuningConfig(VirtualTokensConfig):
    encoder_hidden_size: PositiveInt  # width of the reparameterization MLP


class PrefixTuning(PeftMethod):
    name = "prefix_tuning"
    Config = PrefixTuningConfig
    order = 4
    note = (
        "Prefix tuning (Li and Liang, 2021): learnable key/value prefixes at every attention "
        "layer, reparameterised through an MLP during training for stability; after training "
        "only the prefixes are kept."
    )
    projection = True

    def peft_config(self, cfg: Mapping[str, Any], tokenizer_dir: str | None) -> Any:
        from peft import PrefixTuningConfig

        kwargs: dict[str, Any] = {}
        if self.projection:
            kwargs["encoder_hidden_size"] = cfg["encoder_hidden_size"]
        return PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=cfg["num_virtual_tokens"],
            prefix_projection=self.projection,
            **kwargs,
        )

    def inference_extra_params(self, model: Any) -> int:
        return prefix_params(model)


register(PrefixTuning())
