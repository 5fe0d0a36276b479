"""`precision=auto`, decided from hardware capability alone (never from a timing), so a loaded
machine resolves it the same way as an idle one and a run keeps its id across resumes.

Rule, shared by runs, QLoRA's compute dtype and the ladder pretraining: bf16 autocast (fp32
master weights) on CUDA devices with bf16 support and on CPUs with native bf16 matmul
instructions (AVX-512-BF16 or AMX-BF16); fp32 everywhere else. AVX2-only CPUs (and AVX-512 CPUs
without BF16) emulate bf16 and run it several times slower than fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "bf16-autocast", "fp32", "bf16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags (empty where /proc/cpuinfo is unreadable)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    return any(f in (cpu_flags() if flags is None else flags) for f in BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: str, flags: set[str] | None = None) -> str:
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        import torch

        return "bf16-autocast" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16-autocast" if cpu_has_bf16(flags) else "fp32"


def load_dtype(precision: str) -> Any:
    """The dtype weights are loaded in: fp32 (trainable weights keep fp32 masters) unless the run
    is pure bf16; `hold_frozen` then moves the frozen ones to the compute dtype."""
    import torch

    return torch.bfloat16 if precision == "bf16" else torch.float32


def hold_frozen(model: Any, precision: str) -> int:
    """Under bf16 autocast, hold frozen floating-point weights in bf16: autocast would cast them
    at every matmul anyway, so this saves that cast and half their memory, while trainable
    weights stay fp32 masters. Quantized (integer) weights and buffers are left as they are.
    Returns the number of parameters moved."""
    import torch

    if precision != "bf16-autocast":
        return 0
    n = 0
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point() and p.dtype != torch.bfloat16:
            p.data = p.data.to(torch.bfloat16)
            n += p.numel()
    return n


def timing_flags() -> str:
    """The CPU flags that decide bf16 speed, for every recorded timing."""
    have = cpu_flags()
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in have]
    return " ".join(shown) or "none of avx2/avx512/amx"
