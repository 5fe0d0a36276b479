"""End to end on tiny-random: every method trains 3 steps and writes a valid record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.record import STATUSES
from bench.results import run_id
from bench.run import run_one
from tests.conftest import METHODS, tiny_cfg

REQUIRED = [
    "schema_version",
    "run_id",
    "status",
    "error",
    "method",
    "model",
    "task",
    "seed",
    "sweep",
    "budget",
    "config",
    "params",
    "train",
    "memory",
    "quality",
    "forgetting",
    "repetition",
    "hallucination",
    "inference",
    "env",
    "started_at",
    "finished_at",
]


@pytest.mark.parametrize("name", METHODS)
def test_three_steps_write_a_record(name: str, tmp_path: Path) -> None:
    cfg = tiny_cfg(name, tmp_path)
    rec = run_one(cfg)
    path = tmp_path / "test" / f"{run_id(cfg)}.json"
    on_disk = json.loads(path.read_text())
    assert on_disk["status"] == "success", on_disk.get("traceback")
    assert set(REQUIRED) <= set(on_disk)
    assert on_disk["run_id"] == rec["run_id"] == run_id(cfg)
    assert on_disk["method"] == name
    t = on_disk["train"]
    assert (
        t["steps"] == 3 and len(t["loss_curve"]) == 3 and t["tokens"] > 0 and t["tokens_per_s"] > 0
    )
    assert on_disk["budget"]["tokens"] == t["tokens"]
    assert t["tokens"] <= 3 * 4 * 32  # never more than steps x batch x seq_len real tokens
    p = on_disk["params"]
    assert 0 < p["trainable"] <= p["total"] and p["adapter_bytes"] > 0
    q = on_disk["quality"]
    assert 0.0 <= q["before"] <= 1.0 and 0.0 <= q["after"] <= 1.0 and q["n_test"] == 8
    assert q["val_loss_before"] > 0 and q["val_loss_after"] > 0
    m = on_disk["memory"]
    assert m["device"] == "cpu" and m["peak_bytes"] >= m["p99_bytes"] and m["samples"] == 3
    assert on_disk["env"]["packages"]["transformers"].startswith("4.57")
    assert not list((tmp_path / "test").glob(".*.tmp"))  # atomic write leaves no temp file


def test_failure_writes_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.fit

    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(bench.fit, "train", broken)
    cfg = tiny_cfg("lora", tmp_path)
    rec = run_one(cfg)
    assert rec["status"] == "failed" and "injected failure" in rec["error"]
    on_disk = json.loads((tmp_path / "test" / f"{rec['run_id']}.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["status"] in STATUSES


def test_nan_loss_is_diverged(tmp_path: Path) -> None:
    cfg = tiny_cfg("full", tmp_path, "train.lr=1e30", "train.clip=0")
    rec = run_one(cfg)
    assert rec["status"] == "diverged", rec["error"]


def test_run_id_changes_with_result_settings(tmp_path: Path) -> None:
    a = tiny_cfg("lora", tmp_path)
    assert run_id(a) == run_id(tiny_cfg("lora", tmp_path))
    assert run_id(a) == run_id(
        tiny_cfg("lora", tmp_path, "logger=wandb_offline", "sweep_name=other")
    )
    for o in (
        "method.r=4",
        "seed=1",
        "budget.steps=4",
        "task.n_train=32",
        "precision=bf16-autocast",
    ):
        assert run_id(tiny_cfg("lora", tmp_path, o)) != run_id(a), o


def test_record_carries_general_metrics_and_eval_cost(tmp_path: Path) -> None:
    """With evaluation on, every metric block is filled and the record splits evaluation time
    into its parts (the cost check of the default sweep reads these)."""
    cfg = tiny_cfg("prompt_tuning", tmp_path, "eval=tiny")
    rec = run_one(cfg)
    assert rec["status"] == "success", rec.get("traceback")
    f = rec["forgetting"]
    assert f["nll_delta"] == pytest.approx(f["nll_after"] - f["nll_before"])
    n_virtual = cfg["method"]["num_virtual_tokens"]
    assert set(f["probes"]) and rec["inference"]["extra_positions"] == n_virtual
    for block in ("repetition", "hallucination"):
        assert rec[block]["before"] and rec[block]["after"]
    t = rec["timing"]
    for state in ("before", "after"):
        parts = t[f"{state}_parts"]
        total = parts["quality_s"] + parts["val_loss_s"] + parts["general_s"]
        assert total == pytest.approx(t[f"{state}_eval_s"], abs=1e-6)
        assert set(parts["general"]) == {"nll", "repetition", "probes", "hallucination", "total"}
        assert parts["general"]["total"] <= parts["general_s"]
    assert t["before_cached"] is False and t["inference_s"] > 0
    sweep_dir = Path(cfg["results_dir"]) / cfg["sweep_name"]
    assert (sweep_dir / ".cache" / f"before-{t['before_key']}.json").is_file()


def test_single_failed_run_exits_nonzero(tmp_path: Path) -> None:
    """Scripts can tell: `python -m bench.run` whose run failed exits 1 (a success exits 0)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    args = ["model=tiny-random", "task=tiny", "budget=tiny", "eval=off", "logger=none"]
    args += [f"results_dir={tmp_path}", "progress=false", "precision=fp32", "method=full"]
    env = {**os.environ, "BENCH_METHOD_PLUGINS": "tests.fault_methods"}
    cmd = [sys.executable, "-m", "bench.run", *args, f"hydra.run.dir={tmp_path}/out"]
    bad = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "injected failure" in bad.stdout + bad.stderr, bad.stdout
    env.pop("BENCH_METHOD_PLUGINS")
    ok = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_isolated_runs_measure_the_base_in_a_child_process(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """With isolate=true the base evaluation runs in its own process, so no run's training
    memory carries its residue; the second run of a cell reads the cache."""
    from bench import evaluate

    calls: list[str] = []

    def child(fn: Any, *args: Any) -> None:  # same work, recorded instead of spawned
        calls.append(fn.__name__)
        fn(*args)

    monkeypatch.setattr(evaluate, "_in_child", child)
    a = run_one(tiny_cfg("lora", tmp_path, "isolate=true"))
    b = run_one(tiny_cfg("freeze", tmp_path, "isolate=true"))
    assert calls == ["_measure_base"]
    assert not a["timing"]["before_cached"] and b["timing"]["before_cached"]


def test_run_over_its_memory_limit_records_oom_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """A run process under a memory limit (RLIMIT_AS, as ulimit sets it) that needs more becomes
    an `oom` record; the other cell of the same sweep succeeds."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "BENCH_METHOD_PLUGINS": "tests.fault_oom"}
    cmd = [sys.executable, "-m", "bench.run", "-m", "method=prompt_tuning,lora"]
    cmd += ["model=tiny-random", "task=tiny", "budget=tiny", "eval=off", "logger=none"]
    cmd += ["precision=fp32", "threads=1", "progress=false", f"results_dir={tmp_path}"]
    cmd += ["sweep_name=oom"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]  # a cell failed: non-zero
    recs = {
        r["method"]: r
        for r in (json.loads(f.read_text()) for f in (tmp_path / "oom").glob("*.json"))
    }
    assert recs["prompt_tuning"]["status"] == "oom", recs["prompt_tuning"]["error"]
    assert recs["lora"]["status"] == "success"
