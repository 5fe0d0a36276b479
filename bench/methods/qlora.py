"""QLoRA (Dettmers et al. 2023): LoRA on a frozen base quantized to 4-bit NF4 (bitsandbytes).

Only the base weights are quantized; the LoRA adapters stay in 16/32-bit. Paged AdamW is used
where CUDA exists (the training loop asks `optimizer_name`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.methods import register, require
from bench.methods._peft_common import PeftMethod
from bench.methods.lora import check_lora, lora_config
from bench.models import ModelInfo

QUANT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = ("auto", "bfloat16", "float16", "float32")


class QLoRA(PeftMethod):
    name = "qlora"

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        q = cfg.get("quant_type")
        require(q in QUANT_TYPES, "method.quant_type", f"got {q!r}; valid: {list(QUANT_TYPES)}")
        c = cfg.get("compute_dtype")
        require(
            c in COMPUTE_DTYPES, "method.compute_dtype", f"got {c!r}; valid: {list(COMPUTE_DTYPES)}"
        )
        check_lora(cfg, info)

    def load_kwargs(self, cfg: Mapping[str, Any], device: str) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        from bench.measure import resolve_precision

        dtype = cfg["compute_dtype"]
        if dtype == "auto":  # bf16 where it is fast (GPUs, AVX-512-BF16/AMX CPUs), else fp32
            dtype = "bfloat16" if resolve_precision("auto", device) != "fp32" else "float32"

        return {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=cfg["quant_type"],
                bnb_4bit_use_double_quant=cfg["double_quant"],
                bnb_4bit_compute_dtype=getattr(torch, dtype),
                bnb_4bit_quant_storage=torch.uint8,
            )
        }

    def apply(self, model: Any, cfg: Mapping[str, Any]) -> Any:
        from peft import get_peft_model, prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.get("gradient_checkpointing", False)
        )
        return get_peft_model(model, lora_config(cfg))

    def optimizer_name(self, device: str) -> str:
        return "paged_adamw_32bit" if device.startswith("cuda") else "adamw"


register(QLoRA())
