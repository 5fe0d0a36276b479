"""Per-run resource measurements: memory (CPU RSS or CUDA allocator), parameters, FLOPs.

CPU memory is the resident set size from /proc (VmRSS sampled each step, VmHWM for the peak,
reset through /proc/self/clear_refs), never tracemalloc, which cannot see torch's allocations.
"""

from __future__ import annotations

import ctypes
import gc
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    return (kb or 0) * 1024


def release_memory() -> None:
    """Give freed heap back to the OS so the next RSS baseline is honest."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


@dataclass
class MemoryMeter:
    """Samples memory once per step; `peak` uses the kernel's high-water mark (catches spikes
    between samples) on CPU, and the allocator's maximum on CUDA."""

    device: str
    baseline: int = 0
    samples: list[int] = field(default_factory=list)
    hwm_reset: bool = False

    def start(self, baseline: int | None = None) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = 0 if baseline is None else baseline
            return
        self.baseline = rss_bytes() if baseline is None else baseline
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False

    def sample(self) -> None:
        if self.device.startswith("cuda"):
            self.samples.append(torch.cuda.memory_allocated())
        else:
            self.samples.append(rss_bytes())

    def summary(self) -> dict[str, Any]:
        if self.device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated()
            extra = {"peak_reserved_bytes": torch.cuda.max_memory_reserved()}
            kind = "cuda_allocated"
        else:
            hwm = (_status_kb("VmHWM") or 0) * 1024
            peak = max([hwm if self.hwm_reset else 0, *self.samples])
            extra = {"hwm_reset": self.hwm_reset}
            kind = "cpu_rss"
        s = sorted(self.samples) or [0]
        p99 = s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]
        return {
            "device": self.device,
            "kind": kind,
            "baseline_bytes": self.baseline,
            "peak_bytes": peak - self.baseline,
            "mean_bytes": int(sum(s) / len(s)) - self.baseline,
            "p99_bytes": p99 - self.baseline,
            "samples": len(self.samples),
            **extra,
        }


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def param_counts(model: Any) -> dict[str, int]:
    """Counts unique tensors (tied weights once); 4-bit params count their logical size."""
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        qs = getattr(p, "quant_state", None)
        if qs is not None:  # bitsandbytes packs two 4-bit values per uint8 element
            n = int(torch.Size(qs.shape).numel())
        total += n
        trainable += n if p.requires_grad else 0
    return {"total": total, "trainable": trainable}


def memory_breakdown(model: Any, optimizer_state_per_param: int = 2) -> dict[str, int]:
    """Analytic bytes: weights as stored, trainable weights, their gradients, AdamW moments."""
    seen: set[int] = set()
    weights = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        weights += tensor_bytes(p)
        if p.requires_grad:
            trainable += tensor_bytes(p)
    grads = trainable
    optim = sum(
        p.numel() * 4 * optimizer_state_per_param for p in model.parameters() if p.requires_grad
    )
    return {
        "weights_bytes": weights,
        "trainable_weights_bytes": trainable,
        "gradients_bytes": grads,
        "optimizer_state_bytes": optim,
    }


def train_flops_per_token(
    n_params: int,
    n_trainable: int,
    n_layers: int,
    d: int,
    seq: int,
    backward: tuple[int, int] | None = None,
) -> float:
    """Model FLOPs per trained token (Chowdhery et al. 2022, appendix B): forward 2N, backward
    through activations 2N_b, weight gradients 2N_trainable, attention score/value matmuls
    4·L·T·d forward and 8·L_b·T·d backward. N_b and L_b (`backward`, from `backward_extent`)
    are the parameters and layers the backward pass must cross: down to the lowest trainable
    layer only (freeze of the top blocks stops there); all of them by default."""
    n_b, l_b = backward if backward is not None else (n_params, n_layers)
    return 2 * n_params + 2 * n_b + 2 * n_trainable + 4 * n_layers * seq * d + 8 * l_b * seq * d


def model_flops_per_token(model: Any, n_layers: int, d: int, seq: int) -> float:
    """`train_flops_per_token` of a loaded (and applied) model: its counts and backward extent."""
    counts = param_counts(model)
    back = backward_extent(model, n_layers)
    return train_flops_per_token(counts["total"], counts["trainable"], n_layers, d, seq, back)


_LAYER = re.compile(r"\.layers\.(\d+)\.")


def backward_extent(model: Any, n_layers: int) -> tuple[int, int]:
    """(parameters, decoder layers) the activation backward crosses: from the lowest layer that
    holds a trainable tensor up to the output head. A trainable tensor outside the decoder
    layers other than the final norm or head (embeddings, soft prompts, prefix encoders) sits
    at the input: the backward crosses everything."""
    lowest = n_layers
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        m = _LAYER.search(name)
        if m:
            lowest = min(lowest, int(m.group(1)))
        elif not any(k in name for k in ("lm_head", ".norm.", "model.norm")):
            lowest = 0
    if lowest == 0:
        return param_counts(model)["total"], n_layers
    seen: set[int] = set()
    n = 0
    head = model.get_output_embeddings()
    for name, p in [*model.named_parameters(), ("lm_head.weight", head.weight)]:
        m = _LAYER.search(name)
        above = (int(m.group(1)) >= lowest) if m else ("lm_head" in name or "norm" in name)
        if above and id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n, n_layers - lowest


def measure_matmul_peak(
    dtype: torch.dtype = torch.bfloat16, n: int = 1024, seconds: float = 1.0
) -> float:
    """Achieved FLOP/s of a square matmul: the machine's practical peak for MFU."""
    import time

    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)
