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
