"""Frozen weights in the compute dtype: under bf16 autocast the frozen weights are held in bf16,
trainable ones keep fp32 masters, training follows the all-fp32-masters curve, and fp32 runs are
untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bench import methods, precision
from bench.run import run_one
from tests.conftest import tiny_cfg

# Largest |loss difference| at any of 20 steps of the tiny model, bf16-held frozen weights vs
# fp32-held (both under bf16 autocast). Measured <= 1e-3 for every method (2026-12-01).
TOLERANCE = 5e-3
FROZEN_METHODS = [m for m in methods.swept() if m != "full"]  # full fine-tuning freezes nothing


def _model(method: str, prec: str) -> Any:
    cfg = tiny_cfg(method, Path("/nonexistent"))
    model, _, _ = methods.load_and_apply(cfg["model"], cfg["method"], device="cpu", precision=prec)
    return model


@pytest.mark.parametrize("method", methods.swept())
def test_frozen_weights_bf16_trainable_fp32(method: str) -> None:
    model = _model(method, "bf16-autocast")
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad and p.is_floating_point()}
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    assert trainable == {torch.float32}
    assert frozen <= {torch.bfloat16}  # empty for full fine-tuning
    assert bool(frozen) == (method != "full")


@pytest.mark.parametrize("method", methods.swept())
def test_fp32_precision_changes_nothing(method: str) -> None:
    model = _model(method, "fp32")
    assert {p.dtype for p in model.parameters() if p.is_floating_point()} == {torch.float32}
    assert precision.hold_frozen(model, "fp32") == 0


@pytest.mark.parametrize("method", FROZEN_METHODS)
def test_loss_curve_matches_fp32_frozen_weights(
    method: str, tmp_path: Path, monkeypatch: Any
) -> None:
    def curve(tag: str) -> list[float]:
        cfg = tiny_cfg(method, tmp_path, "precision=bf16-autocast", "budget.steps=20",
                       f"sweep_name={tag}", "state.keep=false")  # fmt: skip
        rec = run_one(cfg)
        assert rec["status"] == "success", rec.get("error")
        return [v for _, v in rec["train"]["loss_curve"]]

    held = curve("bf16-held")
    monkeypatch.setattr(precision, "hold_frozen", lambda model, prec: 0)  # fp32-held frozen
    reference = curve("fp32-held")
    assert len(held) == len(reference) == 20
    assert max(abs(a - b) for a, b in zip(held, reference, strict=True)) <= TOLERANCE
    assert held[-1] < held[0]  # and it still learns


@pytest.mark.parametrize("method", ["freeze", "prompt_tuning"])
def test_general_evaluation_runs_in_the_compute_precision(method: str, tmp_path: Path) -> None:
    """Freeze trains fp32 blocks between frozen bf16 ones: every evaluation part (lm-eval's
    probes included, which run their own autocast context) must run under bf16 autocast."""
    rec = run_one(tiny_cfg(method, tmp_path, "precision=bf16-autocast", "eval=tiny"))
    assert rec["status"] == "success", rec.get("error")
    assert rec["forgetting"]["probes"] and rec["inference"] is not None
