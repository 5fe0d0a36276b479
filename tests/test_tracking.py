"""W&B tracking: offline run files are read back with wandb's own protobuf records.

The record logged here is a SYNTHETIC TEST FIXTURE (invented numbers), written under tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import tracking
from bench.tracking import Tracker, log_report_artifact, read_run_file, summary_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _hermetic_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep wandb's settings, cache and artifact staging out of $HOME; never go online."""
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "online")  # the explicit mode="offline" must win
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def fixture_record(status: str = "success") -> dict[str, Any]:
    """A SYNTHETIC record with the DESIGN section 9 blocks (values invented for the test)."""
    return {
        "schema_version": 1,
        "run_id": "lora-tiny-s0",
        "status": status,
        "error": None if status == "success" else "RuntimeError: boom (fixture)",
        "method": "lora",
        "model": "tiny-random",
        "task": "tiny",
        "seed": 0,
        "sweep": "smoke",
        "budget": {"kind": "steps", "steps": 3, "tokens": 96, "seconds": None},
        "config": {"method": {"name": "lora", "r": 8}, "optim": {"lr": 1e-3}},
        "params": {"total": 1000, "trainable": 40, "trainable_pct": 4.0, "adapter_bytes": 160},
        "train": {
            "steps": 3,
            "tokens": 96,
            "tokens_per_s": 123.5,
            "loss_curve": [[1, 2.0], [2, 1.5], [3, 1.25]],
            "final_loss": 1.25,
        },
        "memory": {"device": "cpu", "peak_bytes": 2**20, "breakdown": {"weights": 4000}},
        "quality": {"metric": "exact_match", "before": 0.0, "after": 0.5},
        "forgetting": {"nll_delta": 0.125, "probes": {"gk": {"before": 0.5, "after": 0.25}}},
        "env": {"git_sha": "abc", "git_dirty": True, "packages": {"peft": "0.21.2"}},
        "repetition": None,
    }


def run_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))


def records_of(path: Path, timeout: float = 60) -> dict[str, list[Any]]:
    """Records by type, once the run's exit record is on disk: run.finish() returns before
    wandb-core has written the transaction log, so a test that reads at once can race it."""
    deadline = time.monotonic() + timeout
    while True:
        out: dict[str, list[Any]] = {}
        try:
            for rec in read_run_file(path):
                out.setdefault(rec.WhichOneof("record_type"), []).append(rec)
        except (OSError, ValueError):
            out = {}
        if "exit" in out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def _items(updates: Any) -> dict[str, Any]:
    """Summary / history items -> {"a/b": value} (wandb splits nested keys)."""
    out = {}
    for item in updates:
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json)
    return out


def start(tracker: Tracker, folder: Path, mode: str = "offline") -> None:
    tracker.start(
        {"method": {"name": "lora", "r": 8}, "optim": {"lr": 1e-3}},
        sweep="smoke",
        run_id="lora-tiny-s0",
        method="lora",
        model="tiny-random",
        task="tiny",
        seed=0,
        mode=mode,
        dir=folder,
    )


def test_summary_of_flattens_record() -> None:
    s = summary_of(fixture_record() | {"quality": {"after": float("nan"), "before": 0.0}})
    assert s["params/trainable"] == 40 and s["memory/breakdown/weights"] == 4000
    assert s["forgetting/probes/gk/after"] == 0.25
    assert s["quality/after"] == "nan"  # JSON cannot carry NaN
    assert not [k for k in s if k.startswith("config") or k.endswith("_curve")]
    assert "repetition" not in s and "error" not in s  # None values are left out


def test_offline_run_files_hold_logged_values(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "smoke"
    tracker = Tracker()
    start(tracker, folder)
    assert tracker.active and tracker.run_dir is not None
    for step, loss in ((1, 2.0), (2, 1.5), (3, 1.25)):
        tracker.log_step(
            step,
            {
                "train/loss": loss,
                "train/lr": 1e-3 * step,
                "train/tokens_per_s": 100.0 + step,
                "train/memory_bytes": 2**20 + step,
            },
        )
    tracker.finish(fixture_record())
    assert not tracker.active

    [path] = run_files(folder)
    assert path.parent == tracker.run_dir
    recs = records_of(path)
    run = recs["run"][0].run
    assert (run.project, run.run_group, run.job_type, run.display_name) == (
        "ft-bench",
        "smoke",
        "lora",
        "lora-tiny-s0",
    )
    assert list(run.tags) == ["model:tiny-random", "task:tiny", "seed:0"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["method"] == {"name": "lora", "r": 8} and config["optim"] == {"lr": 1e-3}

    history = [_items(r.history.item) for r in recs["history"]]
    assert [h["_step"] for h in history] == [1, 2, 3]
    assert [h["train/loss"] for h in history] == [2.0, 1.5, 1.25]
    assert [h["train/lr"] for h in history] == pytest.approx([1e-3, 2e-3, 3e-3])
    assert [h["train/tokens_per_s"] for h in history] == [101.0, 102.0, 103.0]
    assert history[-1]["train/memory_bytes"] == 2**20 + 3

    summary: dict[str, Any] = {}
    for r in recs["summary"]:
        summary |= _items(r.summary.update)
    expected = summary_of(fixture_record())
    assert {k: summary[k] for k in expected} == expected
    assert summary["quality/after"] == 0.5 and summary["status"] == "success"
    assert summary["env/packages/peft"] == "0.21.2"
    assert recs["exit"][0].exit.exit_code == 0


def test_failed_run_is_marked_failed(tmp_path: Path) -> None:
    tracker = Tracker()
    start(tracker, tmp_path)
    tracker.finish(fixture_record(status="oom"))
    recs = records_of(run_files(tmp_path)[0])
    assert recs["exit"][0].exit.exit_code == 1
    summary: dict[str, Any] = {}
    for r in recs["summary"]:
        summary |= _items(r.summary.update)
    assert summary["error"] == "RuntimeError: boom (fixture)"


def test_errors_never_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    def broken_init(**_: Any) -> None:
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", broken_init)
    tracker = Tracker()
    with pytest.warns(UserWarning, match="W&B init failed"):
        start(tracker, tmp_path)
    assert not tracker.active
    tracker.log_step(1, {"train/loss": 1.0})  # no-ops, no errors
    tracker.finish(fixture_record())
    monkeypatch.undo()

    # a failure while writing the summary still closes the run
    def broken_summary(_: Any) -> dict[str, Any]:
        raise ValueError("bad record")

    monkeypatch.setattr(tracking, "summary_of", broken_summary)
    tracker = Tracker()
    start(tracker, tmp_path / "second")
    with pytest.warns(UserWarning, match="W&B summary failed"):
        tracker.finish(fixture_record())
    recs = records_of(run_files(tmp_path / "second")[0])
    assert recs["exit"][0].exit.exit_code == 1  # summary unknown: not claimed a success


def test_none_mode_never_imports_wandb(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from bench.tracking import Tracker, log_report_artifact\n"
        "t = Tracker()\n"
        f"t.start({{}}, sweep='s', run_id='r', method='m', model='x', task='t', seed=0,"
        f" mode='none', dir=Path({str(tmp_path)!r}))\n"
        "t.log_step(1, {'train/loss': 1.0}); t.finish({'status': 'success'})\n"
        f"log_report_artifact(Path({str(tmp_path)!r}), 's', 'none', Path({str(tmp_path)!r}))\n"
        "assert 'wandb' not in sys.modules, 'wandb imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
    assert list(tmp_path.iterdir()) == []


def test_offline_mode_resolves_no_host(tmp_path: Path) -> None:
    """No name lookup (the first step of any connection) from the Python side, up to and
    including wandb's exit handlers; $WANDB_MODE=online must not matter."""
    calls = tmp_path / "lookups.json"
    code = f"""
import atexit, json, socket
from pathlib import Path
seen = []
def spy(host, *args, **kwargs):
    seen.append(str(host))
    raise OSError("network disabled by test")
socket.getaddrinfo = spy
atexit.register(lambda: Path({str(calls)!r}).write_text(json.dumps(seen)))  # runs last
from bench.tracking import Tracker, log_report_artifact
t = Tracker()
t.start({{}}, sweep="s", run_id="r", method="m", model="x", task="t", seed=0,
        mode="offline", dir=Path({str(tmp_path)!r}))
t.log_step(1, {{"loss": 1.0}})
t.finish({{"status": "success"}})
log_report_artifact(Path({str(tmp_path)!r}), "s", "offline", Path({str(tmp_path)!r}))
"""
    env = {**os.environ, "WANDB_MODE": "online"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=180, env=env)
    assert json.loads(calls.read_text()) == []


def test_report_artifact_offline(tmp_path: Path) -> None:
    report = tmp_path / "reports" / "smoke"
    (report / "tables").mkdir(parents=True)
    (report / "index.html").write_text("<!DOCTYPE html><title>fixture</title>")
    (report / "tables" / "leaderboard.csv").write_text("method\nlora\n")
    folder = tmp_path / "results" / "smoke"
    log_report_artifact(report, "smoke", "offline", folder)
    [path] = run_files(folder)
    recs = records_of(path)
    run = recs["run"][0].run
    assert (run.run_group, run.job_type) == ("smoke", "report")
    [art] = [r.artifact for r in recs["artifact"]]
    assert (art.type, art.name) == ("report", "report-smoke")
    assert sorted(e.path for e in art.manifest.contents) == ["index.html", "tables/leaderboard.csv"]


def test_logger_configs() -> None:
    for name, mode in (("wandb_offline", "offline"), ("wandb", "online"), ("none", "none")):
        cfg = yaml.safe_load((ROOT / "conf" / "logger" / f"{name}.yaml").read_text())
        assert cfg == {"mode": mode, "project": "ft-bench", "entity": None}
        assert cfg["mode"] in tracking.MODES
