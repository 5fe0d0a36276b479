"""QLoRA (Dettmers et al. 2023): LoRA on a frozen base quantized to 4-bit NF4 (bitsandbytes).

Only the base weights are quantized; the LoRA adapters stay in 16/32-bit. Paged AdamW is used
where CUDA exists. conf/method/qlora.yaml composes lora.yaml, so the LoRA keys are shared."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from bench.methods import register
from bench.methods._peft_common import LoraSettings
from bench.methods.lora import LORA_LABELS, LoRA, lora_config

QUANT_KEYS = ("quant_type", "double_quant", "compute_dtype")  # what the loaded base depends on
QLORA_LABELS = {**LORA_LABELS, "quant_type": "quant", "double_quant": "dq",
                "compute_dtype": "compute", "gradient_checkpointing": "ckpt"}  # fmt: skip


class QLoRAConfig(LoraSettings):
    quant_type: Literal["nf4", "fp4"]
    double_quant: bool
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"]
    gradient_checkpointing: bool


class QLoRA(LoRA):
    name = "qlora"
    Config = QLoRAConfig
    label_keys = QLORA_LABELS
    variant_of = "lora"  # the same adapters, at the same targets and rank
    variant_change = "4-bit quantized base"
    order = 7
    quantized = True
    note = (
        "QLoRA (Dettmers et al., 2023): LoRA on all linear layers of a frozen base quantized "
        "to 4-bit NormalFloat (NF4) with double quantization of the scales; matmuls run in "
        "the 16-bit compute dtype. Only the base is quantized: the LoRA adapters stay in "
        "16/32-bit. Paged AdamW where CUDA exists."
    )

    def load_kwargs(self, cfg: Mapping[str, Any], device: str) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        from bench.precision import resolve_precision

        dtype = cfg["compute_dtype"]
        if dtype == "auto":  # bf16 where the hardware has it (GPUs, AVX-512-BF16/AMX CPUs)
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

    def base_key(self, cfg: Mapping[str, Any]) -> dict[str, Any] | None:
        return {k: cfg[k] for k in QUANT_KEYS}

    def apply(self, model: Any, cfg: Mapping[str, Any], tokenizer_dir: str | None = None) -> Any:
        from peft import get_peft_model, prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg["gradient_checkpointing"]
        )
        return get_peft_model(model, lora_config(cfg))

    def optimizer(self, device: str) -> str:
        return "paged_adamw_32bit" if device.startswith("cuda") else "adamw"


register(QLoRA())
