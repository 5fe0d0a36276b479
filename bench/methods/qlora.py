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


def _quant_state_bytes(qs: Any) -> int:
    """Bytes of a bitsandbytes QuantState's tensors (absmax, code; nested state when double-
    quantized), i.e. what the 4-bit weights need beside the packed data."""
    import torch

    from bench.measure import tensor_bytes

    tensors = (getattr(qs, k, None) for k in ("absmax", "code", "offset"))
    n = sum(tensor_bytes(t) for t in tensors if isinstance(t, torch.Tensor))
    s2 = getattr(qs, "state2", None)
    return n + (_quant_state_bytes(s2) if s2 is not None else 0)


def linear4bit_report(model: Any) -> dict[str, Any]:
    """The 4-bit layers of a loaded model as stored: packed bytes, quantization-state bytes,
    logical parameters and bits per parameter (everything counted per layer, as saved)."""
    import bitsandbytes as bnb
    import torch

    from bench.measure import tensor_bytes

    mods = [mod for mod in model.modules() if isinstance(mod, bnb.nn.Linear4bit)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m not in mods]
    packed = qstate = logical = 0
    keys = ("weight_storage_dtypes", "weight_classes", "quant_types", "double_quant")
    seen: dict[str, set[Any]] = {k: set() for k in (*keys, "compute_dtypes", "devices")}
    for mod in mods:
        w = mod.weight
        qs = w.quant_state
        packed += tensor_bytes(w)
        qstate += _quant_state_bytes(qs)
        logical += int(torch.Size(qs.shape).numel())
        seen["weight_storage_dtypes"].add(str(w.dtype))
        seen["weight_classes"].add(type(w).__name__)
        seen["quant_types"].add(qs.quant_type)
        seen["double_quant"].add(bool(qs.nested))
        seen["compute_dtypes"].add(str(mod.compute_dtype))
        seen["devices"].add(w.device.type)
    return {
        "n_linear4bit": len(mods),
        "n_other_linear": len(linears),  # lm_head (tied) and LoRA A/B stay unquantized
        **{k: sorted(v) for k, v in seen.items()},
        "packed_bytes": packed,
        "quant_state_bytes": qstate,
        "logical_params": logical,
        "bf16_equivalent_bytes": 2 * logical,
        "bits_per_param": 8 * (packed + qstate) / max(logical, 1),
    }


class QLoRA(LoRA):
    name = "qlora"
    Config = QLoRAConfig
    label_keys = QLORA_LABELS
    variant_of = "lora"  # the same adapters, at the same targets and rank
    variant_change = "4-bit quantized base"
    order = 7
    quantized = True
    note = (
        "QLoRA (Dettmers et al., 2023): LoRA, with LoRA's settings (here q and v by default; "
        "the paper adapts all linear layers), on a frozen base quantized to 4-bit NormalFloat "
        "(NF4) with double quantization of the scales; matmuls run in the compute dtype "
        "(bf16 where the hardware has it). Only the base is quantized: the LoRA adapters stay "
        "in 16/32-bit. Paged AdamW where CUDA exists."
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

    def base_storage(self, model: Any) -> dict[str, Any] | None:
        """The measured storage of the 4-bit base (double quantization shrinks the scales)."""
        r = linear4bit_report(model)
        keep = ("n_linear4bit", "packed_bytes", "quant_state_bytes", "logical_params",
                "bits_per_param")  # fmt: skip
        return {k: r[k] for k in keep}


register(QLoRA())
