"""A run's trained state, kept beside its record so metrics can be recomputed without retraining.

The state is every trainable tensor by parameter name (the adapter for peft methods, the trained
blocks for freeze, everything for full fine-tuning), in safetensors. The same config rebuilds the
same module tree (`methods.load_and_apply`), so loading the tensors back by name restores the
trained model exactly. It lives in `<results>/<sweep>/.state/<run_id>/`, outside git.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATE_DIR = ".state"
FILE = "trainable.safetensors"


def state_path(sweep_dir: Path, rid: str) -> Path:
    return Path(sweep_dir) / STATE_DIR / rid / FILE


def trainable_tensors(model: Any) -> dict[str, Any]:
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def keep(model: Any, sweep_dir: Path, rid: str, max_mb: float | None) -> dict[str, Any]:
    """Save the trainable tensors unless they exceed `max_mb` (the disk bound for methods that
    train the whole model); returns the record's `state` block (path relative to the sweep)."""
    from safetensors.torch import save_file

    path = state_path(sweep_dir, rid)
    tensors = trainable_tensors(model)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if max_mb is not None and size > max_mb * 2**20:
        return {"kept": False, "bytes": size, "path": None,
                "reason": f"{size / 2**20:.0f} MB > state.max_mb={max_mb}"}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)  # a kill mid-write leaves no half file under the final name
    rel = str(path.relative_to(sweep_dir))
    return {"kept": True, "bytes": path.stat().st_size, "path": rel, "reason": None}


def restore(model: Any, path: Path) -> None:
    """Load a kept state into a freshly applied model; every trainable tensor must match."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    want = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != want:
        missing, extra = sorted(want - set(tensors)), sorted(set(tensors) - want)
        raise ValueError(
            f"state {path} does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    params = dict(model.named_parameters())
    for n, t in tensors.items():
        p = params[n]
        if p.shape != t.shape:
            raise ValueError(f"state {path}: {n} has shape {tuple(t.shape)}, model {p.shape}")
        p.data.copy_(t.to(p.device, p.dtype))
