"""Reliability drills (issue 14): unreadable files, concurrent sweeps, determinism, safe
loading, secrets, preemption. Each injects its fault the way a real one arrives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.config import check
from bench.record import Record
from bench.results import run_id
from bench.run import run_one
from tests.conftest import tiny_cfg

TRUNCATED = '{"schema_version": 3, "run_id": "lora__tiny-random__tiny__s0__abc", "status": "succ'
FOREIGN = json.dumps({"_runtime": 3, "_step": 2})  # e.g. a W&B summary copied into the folder


@pytest.mark.parametrize("text", [TRUNCATED, FOREIGN], ids=["truncated", "foreign"])
def test_unreadable_record_is_redone_with_a_warning(tmp_path: Path, text: str) -> None:
    """A truncated or foreign JSON file at a run's record path counts as missing: the run is
    redone (never skipped, never a crash), the warning names the file, and the new record
    replaces it."""
    cfg = tiny_cfg("lora", tmp_path)
    path = tmp_path / "test" / f"{run_id(check(cfg).raw)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with pytest.warns(UserWarning, match=f"{path.name} is not a readable run record"):
        rec = run_one(cfg)
    assert rec["status"] == "success", rec["error"]
    on_disk = Record.model_validate(json.loads(path.read_text()))
    assert on_disk.train is not None and len(on_disk.train.loss_curve) == 3


@pytest.mark.unit
def test_report_lists_unreadable_files(tmp_path: Path) -> None:
    """The report is built from the readable records and names every file it left out."""
    from bench.report import build_report
    from tests.test_report import failed_only, write_folder

    results = write_folder(tmp_path / "r", failed_only(0))
    (results / "cut.json").write_text(TRUNCATED)
    (results / "foreign.json").write_text(FOREIGN)
    with pytest.warns(UserWarning, match="skipping"):
        out = build_report(results, tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "Unreadable files" in md and "cut.json" in md and "foreign.json" in md
    assert "2 JSON file(s)" in md
    clean = build_report(write_folder(tmp_path / "ok", failed_only(0)), tmp_path / "out2")
    assert "Unreadable files" not in (clean / "report.md").read_text()


def test_two_sweeps_on_one_folder_train_each_run_once(tmp_path: Path) -> None:
    """Two sweeps started together on one results folder: the per-run lock lets only one train
    a run; the other waits for it, then finds the record and skips. Every run trains exactly
    once, every record is valid, and each sweep's summary counts only its own runs."""
    import re

    from bench.sweep import PROGRESS
    from tests.test_sweep import records, sweep

    methods = "method=lora,prompt_tuning,freeze"
    procs = [sweep(tmp_path, methods, f"hydra.sweep.dir={tmp_path}/multirun{i}") for i in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    recs = records(tmp_path / "smoke")
    assert len(recs) == 3 and all(r["status"] == "success" for r in recs.values()), outs
    for r in recs.values():
        Record.model_validate(r)
    lines = [json.loads(x) for x in (tmp_path / "smoke" / PROGRESS).read_text().splitlines()]
    trained = sorted(d["run_id"] for d in lines if not d["skipped"])
    assert trained == sorted(recs), lines  # each run trained once, by one of the two sweeps
    assert len(lines) == 6 and len({d["sweep_id"] for d in lines}) == 2
    counts = [re.search(r"(\d+) done, (\d+) skipped, (\d+) failed", o) for o in outs]
    assert all(counts), outs
    done = [tuple(int(g) for g in m.groups()) for m in counts if m]
    assert sum(d[0] for d in done) == 3 and all(d[0] + d[1] == 3 and d[2] == 0 for d in done)
    assert not list((tmp_path / "smoke").glob("*.tmp"))  # no half-written record left behind


# Blocks that must not change between two runs of one config and seed (timings may).
SAME_BLOCKS = ("quality", "validation", "forgetting", "repetition", "hallucination", "params")


def test_same_config_and_seed_give_identical_results_in_two_processes(tmp_path: Path) -> None:
    """fp32, one thread, every evaluation part on: two processes, two results folders,
    bitwise-identical loss curves and metric blocks."""
    import os
    import subprocess
    import sys

    from tests.conftest import CONF

    args = ["method=lora", "budget=tiny", "eval=tiny", "logger=none", "task.n_train=64"]
    args += ["task.n_val=8", "task.n_test=8", "precision=fp32", "threads=1", "progress=false"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.run",
                *args,
                f"results_dir={tmp_path / d}",
                "sweep_name=det",
                f"hydra.run.dir={tmp_path / d}/hydra",
            ],
            cwd=CONF.parent,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for d in ("A", "B")
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    (a,) = [json.loads(p.read_text()) for p in (tmp_path / "A" / "det").glob("*.json")]
    (b,) = [json.loads(p.read_text()) for p in (tmp_path / "B" / "det").glob("*.json")]
    assert a["status"] == b["status"] == "success" and a["run_id"] == b["run_id"]
    assert a["train"]["loss_curve"] == b["train"]["loss_curve"]
    assert a["train"]["tokens"] == b["train"]["tokens"]
    for block in SAME_BLOCKS:
        assert a[block] is not None and a[block] == b[block], block
