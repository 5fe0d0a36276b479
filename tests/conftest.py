"""Shared fixtures: Hydra-composed configs for the tiny model, offline by construction."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

CONF = Path(__file__).resolve().parent.parent / "conf"
TIERS = ("unit", "integration", "slow")
# A module's default tier (a test may carry its own tier marker instead): unit = no model
# weights, seconds; integration = tiny models end to end; slow = real models or long sweeps.
MODULE_TIERS = {
    "test_config": "unit",
    "test_report": "unit",
    "test_tasks": "unit",
    "test_tracking": "unit",
    "test_schema": "unit",
    "test_evalcost": "unit",
    "test_studies": "unit",  # its tiny-model tests are marked integration themselves
    "test_zh": "unit",  # Chinese data and per-character metrics: a stub model, no weights
}
METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))


def compose(overrides: list[str] | None = None) -> dict[str, Any]:
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hcompose(config_name="config", overrides=overrides or [])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def tiny_cfg(method: str, tmp: Path, *extra: str) -> dict[str, Any]:
    """tiny-random + tiny task + 3-step budget, small splits, no general eval, no logger."""
    return compose(
        [
            f"method={method}",
            "model=tiny-random",
            "task=tiny",
            "budget=tiny",
            "eval=off",
            "logger=none",
            "task.n_train=64",
            "task.n_val=8",
            "task.n_test=8",
            "precision=fp32",
            "threads=1",
            "progress=false",
            "isolate=false",  # in-process (run_one is called directly; the base evaluation too)
            f"results_dir={tmp}",
            "sweep_name=test",
            *extra,
        ]
    )


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    """Tiny models run faster on one thread (no OpenMP sync per op), and xdist-free CI has 2
    cores: one thread per test process keeps timings stable."""
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
            item.add_marker(getattr(pytest.mark, MODULE_TIERS.get(module, "integration")))
