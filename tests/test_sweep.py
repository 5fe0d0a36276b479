"""Named sweeps through the real Hydra CLI: job counts, resume, failure isolation, kill -9."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.conftest import CONF

ROOT = CONF.parent
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


def grid_size(name: str) -> int:
    params = yaml.safe_load((CONF / "sweep" / f"{name}.yaml").read_text())["hydra"]["sweeper"][
        "params"
    ]
    return math.prod(len(str(v).split(",")) for v in params.values())


def test_named_sweeps_exist() -> None:
    assert {"smoke", "default", "paper"} <= set(SWEEPS)


@pytest.mark.parametrize("name", SWEEPS)
def test_job_count_equals_grid(name: str) -> None:
    """Hydra's own parser expands the sweep to exactly the product of its grid."""
    from hydra import compose, initialize_config_dir

    from bench.sweep import job_count

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    ov = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    expanded = math.prod(len(list(o.sweep_string_iterator())) for o in ov if o.is_sweep_override())
    assert expanded == grid_size(name) == job_count(cfg)


def sweep(
    tmp: Path, *extra: str, env: dict[str, str] | None = None, **kw: object
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "bench.run",
        "+sweep=smoke",
        "eval=off",
        "logger=none",
        f"results_dir={tmp}",
        "progress=false",
        f"hydra.sweep.dir={tmp}/multirun",
        *extra,
    ]
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def records(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def test_resume_and_failure_isolation(tmp_path: Path) -> None:
    methods = "method=lora,full,prompt_tuning"
    p = sweep(tmp_path, methods, env={"BENCH_METHOD_PLUGINS": "tests.fault_methods"})
    out, _ = p.communicate(timeout=600)
    recs = records(tmp_path / "smoke")
    assert len(recs) == 3, out
    status = {r["method"]: r["status"] for r in recs.values()}
    assert status == {"lora": "success", "full": "failed", "prompt_tuning": "success"}, out
    assert "injected failure" in recs[next(k for k in recs if k.startswith("full"))]["error"]
    assert "2 done, 0 skipped, 1 failed" in out and "full__tiny-random" in out
    assert p.returncode == 1, out  # a sweep with a failed cell exits non-zero, after its summary
    mtimes = {k: (tmp_path / "smoke" / f"{k}.json").stat().st_mtime for k in recs}

    p = sweep(tmp_path, methods)  # rerun: successes skipped, the failed cell runs again
    out, _ = p.communicate(timeout=600)
    assert "1 done, 2 skipped, 0 failed" in out, out
    assert p.returncode == 0, out
    recs2 = records(tmp_path / "smoke")
    assert all(r["status"] == "success" for r in recs2.values())
    for k, r in recs2.items():
        same = (tmp_path / "smoke" / f"{k}.json").stat().st_mtime == mtimes[k]
        assert same == (r["method"] != "full")  # finished records were not rewritten


def test_kill_leaves_no_partial_record(tmp_path: Path) -> None:
    p = sweep(tmp_path, "method=lora,prompt_tuning", "budget.steps=400")
    folder = tmp_path / "smoke"
    deadline = time.time() + 300
    while time.time() < deadline and not (folder / ".cache").exists():  # first run is training
        time.sleep(0.5)
    time.sleep(2.0)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    for f in folder.glob("*.json"):
        assert json.loads(f.read_text())["status"] in ("success", "failed", "cancelled")
    p = sweep(tmp_path, "method=lora,prompt_tuning", "budget.steps=20")
    out, _ = p.communicate(timeout=600)
    assert {r["status"] for r in records(folder).values()} == {"success"}, out
    assert len(records(folder)) == 2


def test_joblib_launcher_isolated_runs(tmp_path: Path) -> None:
    """Two joblib (loky) workers, each spawning its isolated run process (as `default` does)."""
    p = sweep(
        tmp_path, "method=lora,prompt_tuning", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
    )
    out, _ = p.communicate(timeout=600)
    recs = records(tmp_path / "smoke")
    assert sorted(r["method"] for r in recs.values()) == ["lora", "prompt_tuning"], out
    assert all(r["status"] == "success" for r in recs.values()), out
    assert "2 done, 0 skipped, 0 failed" in out


@pytest.mark.parametrize(("task", "batch"), [("arithmetic", 32), ("squad_shifts", 4)])
def test_default_budget_fixes_tokens_per_step(task: str, batch: int) -> None:
    """budget=default: batch_size = tokens_per_step // seq_len, so steps carry equal tokens."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["budget=default", f"task={task}"])
    assert cfg.budget.batch_size == batch
    assert cfg.budget.batch_size * cfg.budget.seq_len == cfg.budget.tokens_per_step == 1024


def test_submitit_local_launcher(tmp_path: Path) -> None:
    """The Slurm launcher's local twin: same plugin, jobs as submitit subprocesses."""
    p = sweep(
        tmp_path,
        "method=lora,ptuning_v2",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
    )
    out, _ = p.communicate(timeout=600)
    recs = records(tmp_path / "smoke")
    assert sorted(r["method"] for r in recs.values()) == ["lora", "ptuning_v2"], out
    assert all(r["status"] == "success" for r in recs.values()), out
    assert list((tmp_path / "multirun").rglob("*_submitted.pkl"))  # submitit really ran them
