"""Report generation: tables, statistics, determinism, self-contained HTML read by a browser.

Every number here comes from SYNTHETIC TEST FIXTURES written under pytest's tmp_path: they are
schema-valid but invented, and must never be copied into results/ or reports/.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench import record
from bench.report import build_report, load_results
from bench.report.__main__ import main as report_main
from bench.report.frame import frame_of
from bench.report.prepare import prepare
from bench.report.sections.selection import lr_of
from bench.report.stats import mean_ci, pareto_front

pytestmark = pytest.mark.unit  # synthetic records only: no model weights

T_975_1 = 12.706204736174698  # Student t quantile, 0.975, 1 degree of freedom
# LaTeX specials and non-ASCII on purpose: the .tex must escape them (and compile).
OOM_MESSAGE = "torch.OutOfMemoryError: 100% of 2 GiB & more; {x}_1 #3 $HOME ~/a^2 \\p é→ (fixture)"

# ------------------------------------------------------------------- synthetic test fixtures

MODELS = {  # name -> non-embedding parameters (SYNTHETIC)
    "ladder-4m": 4_000_000,
    "smollm2-135m": 106_000_000,  # notes left empty: the report must add the 4-bit caveat
}
TASKS = ("arith", "reverse")
METHODS = {  # name -> (trainable fraction, quality gain, nll delta): SYNTHETIC
    "full": (1.0, 0.30, 0.40),
    "freeze": (0.25, 0.20, 0.15),
    "prompt_tuning": (0.0001, 0.05, 0.0),
    "lora": (0.01, 0.25, 0.05),
}


def fixture_record(
    method: str, model: str, task: str, seed: int, *, lr: float = 1e-4, **over: Any
) -> dict[str, Any]:
    """One SYNTHETIC run record for tests only, validated by ``bench.record.Record`` (after the
    overrides ``over``) and returned as the JSON-ready dict the writer would write: a fixture
    that drifts from the schema fails here, loudly."""
    frac, gain, dnll = METHODS.get(method, (0.01, 0.1, 0.1))
    size = MODELS[model]
    total = size + 1_000_000
    scale = 1.0 if model == "ladder-4m" else 1.5
    before = 0.1 * scale
    after = before + gain * scale + 0.02 * seed
    steps = 20
    batch, seq_len = 8, 80  # 640 padded tokens a step, 512 of them real
    seconds = 10.0 * scale
    tokens_per_s = 1000.0 / scale * (1 + frac) + seed
    rec: dict[str, Any] = {
        "schema_version": 1,
        "run_id": f"{method}-{model}-{task}-s{seed}-lr{lr:g}",
        "status": "success",
        "error": None,
        "method": method,
        "model": model,
        "task": task,
        "seed": seed,
        "sweep": "fixture",
        "budget": {
            "kind": "steps",
            "steps": steps,
            "batch_size": batch,
            "grad_accum": 1,
            "seq_len": seq_len,
            "seconds": None,
            "tokens": steps * 512,
        },
        "config": {"method": {"name": method, "lr": 1e-4}, "train": {"lr": lr}, "seed": seed},
        "params": {
            "total": total,
            "trainable": int(total * frac),
            "trainable_pct": 100 * frac,
            "inference_extra": 0,
            "adapter_bytes": int(total * frac) * 4,
        },
        "train": {
            "steps": steps,
            "tokens": steps * 512,
            "padded_tokens": steps * batch * seq_len,
            "seconds": seconds,
            "tokens_per_s": tokens_per_s,
            "samples_per_s": steps * batch / seconds,
            "step_time_p50": seconds / steps,
            "step_time_p90": 1.2 * seconds / steps,
            "flops_per_token": 6.0 * total,
            "achieved_flops": 6.0 * total * tokens_per_s,
            "loss_curve": [
                [s, 3.0 * math.exp(-s * (0.05 + gain / 5)) + 0.01 * seed]
                for s in range(1, steps + 1)
            ],
            "lr_curve": [[s, lr * (1 - (s - 1) / steps)] for s in range(1, steps + 1)],
            "final_loss": 3.0 * math.exp(-steps * (0.05 + gain / 5)),
            "lr": lr,
            "optimizer": "adamw",
        },
        "memory": {
            "device": "cpu",
            "peak_bytes": int(2**20 * (200 * scale + 400 * frac) + seed * 2**16),
            "mean_bytes": int(2**20 * 150 * scale),
            "p99_bytes": int(2**20 * 190 * scale),
            "breakdown": {"weights": total * 4, "gradients": int(total * frac) * 4},
        },
        "quality": {
            "metric": "exact_match",
            "before": before,
            "after": after,
            "val_loss_before": 2.5,
            "val_loss_after": 2.5 - gain,
            "n_test": 50,
            "extra": {},
            "examples_after": ["12 (fixture)", "7 (fixture)"],
        },
        "forgetting": {
            "nll_before": 3.0,
            "nll_after": 3.0 + dnll + 0.01 * seed,
            "nll_delta": dnll + 0.01 * seed,
            "probes": {
                "general_knowledge": {"before": 0.4, "after": 0.4 - dnll / 4},
                "strategyqa": {"before": 0.5, "after": 0.5 - dnll / 8},
            },
            "mean_relative_drop": ((dnll / 4) / 0.4 + (dnll / 8) / 0.5) / 2,
        },
        "repetition": {
            side: {
                **{f"seq_rep_{n}": 0.1 * n * (1 + k) for n in range(1, 5)},
                **{f"rep_{w}": 0.2 + k * 0.1 for w in (16, 32, 128)},
                **{f"wrep_{w}": 0.1 + k * 0.05 for w in (16, 32, 128)},
                "distinct_1": 0.5,
                "distinct_2": 0.7 - k * 0.1,
                "loop_share": 0.1 * k,
            }
            for side, k in (("before", 0), ("after", frac))
        },
        "hallucination": {
            side: {"accuracy": 0.3, "abstention_rate": 0.2 - k / 10, "hallucination_rate": 0.5}
            for side, k in (("before", 0), ("after", frac))
        },
        "inference": {"tokens_per_s": 50.0 / scale, "latency_ms": 20.0 * scale},
        "env": {
            "git_sha": "0123456789abcdef0123456789abcdef01234567",
            "git_dirty": False,
            "packages": {"torch": "2.13.0", "transformers": "4.57.6", "peft": "0.21.2"},
            "device": "cpu (fixture)",
            "threads": 2,
            "hostname_hash": "deadbeef",
        },
        "started_at": f"2026-01-0{1 + seed}T10:00:00+00:00",
        "finished_at": f"2026-01-0{1 + seed}T10:05:00+00:00",
        "model_info": {
            "name": model,
            "kind": "ladder" if model == "ladder-4m" else "gguf",
            "non_embedding_params": size,
            "total_params": total,
            "source": "fixture",
            "notes": None,
        },
        "task_info": {
            "name": task,
            "metric": "exact_match",
            "source": f"fixture {task} 1.0",
            "license": "CC0-1.0 (fixture)",
            "n_train": 400,
            "n_validation": 50,
            "n_test": 50,
        },
    }
    for key, value in over.items():
        rec[key] = value
    return record.Record.model_validate(rec).dump()


def fixture_records() -> list[dict[str, Any]]:
    """SYNTHETIC sweep: 4 methods x 2 models x 2 tasks x 2 seeds, an lr grid, a failed run."""
    recs = [
        fixture_record(m, model, t, s)
        for m in METHODS
        for model in MODELS
        for t in TASKS
        for s in (0, 1)
    ]
    # Hand-checkable cell: full on ladder-4m x arith has quality.after 0.2 and 0.4.
    for r in recs:
        if (r["method"], r["model"], r["task"]) == ("full", "ladder-4m", "arith"):
            r["quality"]["after"] = 0.2 if r["seed"] == 0 else 0.4
    # lr grid for lora on ladder-4m x reverse: the extra run has the better TEST score but the
    # worse validation loss, so it must not be selected.
    for s in (0, 1):
        extra = fixture_record("lora", "ladder-4m", "reverse", s, lr=1e-3)
        extra["quality"]["after"] = 0.99
        extra["quality"]["val_loss_after"] = 9.0
        recs.append(extra)
    # Forgetting not measured for prompt tuning on smollm2 x reverse: reports must cope.
    for r in recs:
        if (r["method"], r["model"], r["task"]) == ("prompt_tuning", "smollm2-135m", "reverse"):
            r["forgetting"] = None
    failed = fixture_record("qlora", "smollm2-135m", "arith", 0)
    for block in (
        "params",
        "train",
        "memory",
        "quality",
        "forgetting",
        "repetition",
        "hallucination",
        "inference",
    ):
        failed[block] = None
    failed |= {
        "status": "oom",
        "error": "Traceback (most recent call last):\n  ...\n" + OOM_MESSAGE,
    }
    recs.append(failed)
    return recs


def write_folder(folder: Path, records: list[dict[str, Any]]) -> Path:
    """The records as ``<run_id>.json``, each validated first: a test's edits to a fixture
    must keep it schema-valid (the reader would skip it with a warning otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    for r in records:
        record.Record.model_validate(r)
        (folder / f"{r['run_id']}.json").write_text(json.dumps(r, indent=1))
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The SYNTHETIC fixture folder and two independent builds of its report."""
    root = tmp_path_factory.mktemp("report")
    results = write_folder(root / "results" / "fixture", fixture_records())
    a = build_report(results, root / "reports" / "a")
    b = build_report(results, root / "reports" / "b")
    return results, a, b


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- statistics


def test_mean_ci_hand_example() -> None:
    s = mean_ci([0.2, 0.4])
    assert s.n == 2
    assert s.mean == pytest.approx(0.3)
    assert s.sd == pytest.approx(math.sqrt(0.02))
    # t_{0.975,1} * sd / sqrt(2) = 12.706 * 0.1414 / 1.414 = 1.2706
    assert s.half == pytest.approx(T_975_1 * 0.1, rel=1e-9)
    assert (s.low, s.high) == pytest.approx((0.3 - 1.2706205, 0.3 + 1.2706205))
    # n = 3: t_{0.975,2} = 4.302653
    s3 = mean_ci([1.0, 2.0, 3.0])
    assert s3.half == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))
    one, none = mean_ci([0.5, float("nan")]), mean_ci([])
    assert (one.n, one.mean) == (1, 0.5) and math.isnan(one.half)
    assert none.n == 0 and math.isnan(none.mean)


def test_pareto_front() -> None:
    # (memory, quality): b dominates c (less memory, more quality); a and d trade off.
    pts = [(1.0, 0.2), (2.0, 0.5), (3.0, 0.4), (4.0, 0.9), (float("nan"), 1.0)]
    assert pareto_front(pts) == [0, 1, 3]
    # learning (max) vs forgetting (min): same convention
    assert pareto_front([(0.1, 0.3), (0.1, 0.2), (0.0, 0.1)]) == [2, 0]


# -------------------------------------------------------------------------------- frame


def test_load_results_dtypes(built: tuple[Path, Path, Path]) -> None:
    df = load_results(built[0])
    assert len(df) == 4 * 2 * 2 * 2 + 2 + 1
    assert df["run_id"].is_unique
    assert df["status"].dtype == "string" and df["method"].dtype == "string"
    assert df["seed"].dtype == "Int64" and df["memory.peak_bytes"].dtype == "Int64"
    assert df["quality.after"].dtype == "float64"
    assert df["env.git_dirty"].dtype == "boolean"
    assert str(df["started_at"].dtype).startswith("datetime64") and df["started_at"].dt.tz
    assert df["forgetting.probes.strategyqa.after"].dtype == "float64"
    assert df["repetition.after.seq_rep_4"].dtype == "float64"
    assert df["env.packages.torch"].dtype == "string"
    assert isinstance(df["config"].iloc[0], dict)
    assert isinstance(df["train.loss_curve"].iloc[0], list)
    failed = df[df["status"] == "oom"].iloc[0]
    assert failed["error"].endswith(OOM_MESSAGE)
    assert math.isnan(failed["quality.after"]) and failed["memory.peak_bytes"] is pd.NA
    # wandb run folders and other files beside the records are ignored
    assert df["model_size"].max() == 106_000_000


# ------------------------------------------------------------------------------- report


def test_files_written(built: tuple[Path, Path, Path]) -> None:
    out = built[1]
    assert (out / "index.html").is_file() and (out / "report.md").is_file()
    tables = {p.name for p in (out / "tables").iterdir()}
    for name in (
        "leaderboard.csv",
        "runs.csv",
        "budgets.csv",
        "budgets.tex",
        "models.tex",
        "data.tex",
        "packages.tex",
        "repetition.tex",
        "hallucination.tex",
        "probes.tex",
        "failures.csv",
        "failures.tex",
        "selection.tex",
        "leaderboard__ladder-4m__arith.csv",
        "leaderboard__ladder-4m__arith.tex",
    ):
        assert name in tables, name
    figs = sorted(p.name for p in (out / "figures").iterdir())
    stems = {p.rsplit(".", 1)[0] for p in figs}
    assert {f"{s}.png" for s in stems} | {f"{s}.pdf" for s in stems} == set(figs)
    # per cell: Pareto + training; per task: scaling (two model sizes); the summary's rank
    # heatmap and the learning-rate grid evidence
    assert len(stems) == 2 * 2 * 2 + 2 + 2
    assert {"summary_ranks", "selection_grid"} <= stems
    assert "pareto__smollm2-135m__reverse" in stems and "scaling__arith" in stems
    for f in figs:
        assert (out / "figures" / f).read_bytes()[:4] in (b"\x89PNG", b"%PDF")


def test_deterministic(built: tuple[Path, Path, Path]) -> None:
    _, a, b = built
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    differing = [str(f) for f in files if (a / f).read_bytes() != (b / f).read_bytes()]
    # Required: CSV, TeX and Markdown. Figures (and the HTML embedding them) too, here.
    assert differing == []


def test_leaderboard_numbers(built: tuple[Path, Path, Path]) -> None:
    rows = read_csv(built[1] / "tables" / "leaderboard.csv")
    by = {(r["model"], r["task"], r["method"]): r for r in rows}
    full = by[("ladder-4m", "arith", "full")]
    assert full["n"] == "2" and full["n_failed"] == "0"
    assert float(full["quality_after_mean"]) == pytest.approx(0.3)
    assert float(full["quality_after_ci95"]) == pytest.approx(1.2706205, abs=1e-6)
    # per-seed gain = after - before: (0.2 - 0.1, 0.4 - 0.1)
    assert float(full["quality_gain_mean"]) == pytest.approx(0.2)
    # peak memory: 600 MiB and 600 MiB + 64 KiB
    assert float(full["peak_memory_bytes_mean"]) == pytest.approx(600 * 2**20 + 2**15)
    # trainable % from counts: 100 * int(5e6 * 0.01) / 5e6
    lora = by[("ladder-4m", "arith", "lora")]
    assert float(lora["trainable_pct_mean"]) == pytest.approx(1.0)
    # lr grid: the validation choice (lr 1e-4), not the better test score 0.99
    sel = by[("ladder-4m", "reverse", "lora")]
    assert sel["n"] == "2"
    assert float(sel["quality_after_mean"]) == pytest.approx(0.1 + 0.25 + 0.01)
    # failed qlora run: counted, never averaged
    q = by[("smollm2-135m", "arith", "qlora")]
    assert (q["n"], q["n_failed"], q["quality_after_mean"]) == ("0", "1", "")
    # forgetting not measured: empty, not zero
    pt = by[("smollm2-135m", "reverse", "prompt_tuning")]
    assert pt["nll_delta_mean"] == "" and pt["nll_delta_n"] == "0"
    # sorted by quality after, best first
    cell = [r["method"] for r in rows if (r["model"], r["task"]) == ("smollm2-135m", "reverse")]
    assert cell == ["full", "lora", "freeze", "prompt_tuning"]

    selection = read_csv(built[1] / "tables" / "selection.csv")
    kept = {(r["seed"], r["lr"]): r["selected"] for r in selection}
    assert kept == {
        ("0", "0.0001"): "True",
        ("0", "0.001"): "False",
        ("1", "0.0001"): "True",
        ("1", "0.001"): "False",
    }


def test_report_text(built: tuple[Path, Path, Path]) -> None:
    md = (built[1] / "report.md").read_text()
    order = [
        md.index(h)
        for h in (
            "## Provenance",
            "## Leaderboards",
            "## Scaling",
            "## Repetition",
            "## Hallucination",
            "## Failures",
            "## Method notes",
        )
    ]
    assert order == sorted(order)
    assert "0123456789abcdef0123456789abcdef01234567 (clean, 35 runs)" in md
    assert "dequantized" in md  # SmolLM2 caveat added although the record's notes are empty
    assert "fixture arith 1.0" in md and "CC0-1.0 (fixture)" in md
    assert "transformers | 4.57.6" in md
    assert OOM_MESSAGE in md
    assert "0.100 → 0.300 ± 1.271" in md  # the hand-computed cell
    assert "Lester et al., 2021" in md and "Hu et al., 2021" in md
    assert "(n=1)" not in md


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action"):
                self.refs.append((tag, name, value or ""))


def test_html_self_contained(built: tuple[Path, Path, Path]) -> None:
    out = built[1]
    text = (out / "index.html").read_text()
    parser = _Refs()
    parser.feed(text)
    external = [r for r in parser.refs if not r[2].startswith(("data:", "#"))]
    assert external == []
    assert not {"script", "link", "iframe", "object", "embed"} & set(parser.tags)
    assert "url(" not in text and "@import" not in text
    imgs = [v for tag, name, v in parser.refs if tag == "img"]
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(imgs) == len(pngs)
    embedded = {base64.b64decode(v.split(",", 1)[1]) for v in imgs}
    assert embedded == {p.read_bytes() for p in pngs}


# ----------------------------------------------------------------------------------- LaTeX

_TEX = shutil.which("pdflatex") or shutil.which("lualatex") or shutil.which("xelatex")


def _tex_rows(body: str) -> list[str]:
    return [ln for ln in body.splitlines() if ln.endswith(r"\\")]


def test_tex_tables(built: tuple[Path, Path, Path], tmp_path: Path) -> None:
    texs = sorted((built[1] / "tables").glob("*.tex"))
    assert len(texs) >= 10
    for path in texs:
        body = path.read_text()
        assert body.isascii(), path.name
        lines = [ln for ln in body.splitlines() if not ln.startswith("%")]
        spec = re.fullmatch(r"\\begin\{tabular\}\{([lrc]+)\}", lines[0])
        assert spec, path.name
        assert lines[1:2] == [r"\toprule"] and lines[3] == r"\midrule"
        assert lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
        for row in _tex_rows(body):
            # unescaped & separate columns; the count matches the column spec
            assert len(re.findall(r"(?<!\\)&", row)) == len(spec.group(1)) - 1, (path, row)
            assert not re.search(r"(?<!\\)[_%#]", row), (path, row)
            assert len(re.findall(r"(?<!\\)\$", row)) % 2 == 0  # math mode closed
            stripped = re.sub(r"\\[{}]", "", row)
            assert stripped.count("{") == stripped.count("}")
    if _TEX is None:
        return  # no TeX engine here: structural checks only
    doc = tmp_path / "doc.tex"
    inputs = "\n".join(f"\\input{{{p}}}\\par" for p in texs)
    doc.write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage[T1]{fontenc}"
        f"\\begin{{document}}\n{inputs}\n\\end{{document}}\n"
    )
    proc = subprocess.run(
        [_TEX, "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


# -------------------------------------------------------------------------- degraded data


def test_degrades_without_measurements(tmp_path: Path) -> None:
    recs = [fixture_record("lora", "ladder-4m", "arith", s) for s in (0, 1)]
    for r in recs:
        r["forgetting"] = r["repetition"] = r["hallucination"] = r["inference"] = None
        del r["model_info"], r["task_info"]
        r["train"]["loss_curve"] = []  # none recorded
    # a record missing whole blocks, with an empty config and no end time (a record without
    # a seed or start time is invalid: see test_skips_invalid_records)
    gone = dict.fromkeys(("forgetting", "repetition", "hallucination", "inference", "budget"))
    recs.append(
        fixture_record(
            "freeze",
            "ladder-4m",
            "arith",
            0,
            env=None,
            config={},
            finished_at=None,
            **gone,
        )
    )
    recs.append(
        fixture_record(
            "full",
            "ladder-4m",
            "arith",
            0,
            status="cancelled",
            error=None,
            params=None,
            memory=None,
            quality=None,
        )
    )
    out = build_report(write_folder(tmp_path / "r", recs), tmp_path / "out")
    md = (out / "report.md").read_text()
    for phrase in (
        "No run measured repetition.",
        "No run measured hallucination.",
        "No run measured probes.",
        "No run recorded how its evaluation time splits.",
        "fewer than two models",
        "| cancelled |",
    ):
        assert phrase in md
    assert (out / "figures" / "pareto__ladder-4m__arith.png").is_file()

    empty = build_report(write_folder(tmp_path / "empty", []), tmp_path / "out-empty")
    assert "No run records were found." in (empty / "report.md").read_text()


def failed_only(seed: int = 0) -> list[dict[str, Any]]:
    """One SYNTHETIC failed run: a report without figures, cheap to build."""
    return [fixture_record("lora", "ladder-4m", "arith", seed, status="failed", error="boom")]


def test_skips_invalid_records(tmp_path: Path) -> None:
    """A record-shaped file the schema rejects, one without a seed and a truncated file are
    each skipped with a warning naming the file (and the first problem); the report is built
    from the valid records."""
    good = failed_only(0) + failed_only(1)
    results = write_folder(tmp_path / "r", good)
    exploded = fixture_record("lora", "ladder-4m", "arith", 2) | {"status": "exploded"}
    (results / "exploded.json").write_text(json.dumps(exploded, indent=1))
    seedless = fixture_record("lora", "ladder-4m", "arith", 3) | {"seed": None}
    (results / "seedless.json").write_text(json.dumps(seedless, indent=1))
    text = json.dumps(fixture_record("lora", "ladder-4m", "arith", 4), indent=1)
    (results / "truncated.json").write_text(text[: len(text) // 2])
    (results / "wandb-summary.json").write_text(json.dumps({"_runtime": 3}))  # not a record

    with pytest.warns(UserWarning) as caught:
        df = load_results(results)
    messages = [str(w.message) for w in caught]
    assert any(
        m.startswith("skipping exploded.json: invalid run record (status:") for m in messages
    )
    assert any(m.startswith("skipping seedless.json: invalid run record (seed:") for m in messages)
    assert any(m.startswith("skipping unreadable truncated.json:") for m in messages)
    assert "skipping wandb-summary.json: not a run record" in messages
    assert sorted(df["run_id"]) == sorted(r["run_id"] for r in good)

    with pytest.warns(UserWarning) as caught:
        out = build_report(results, tmp_path / "out")
    assert sum(str(w.message).startswith("skipping ") for w in caught) == 4
    (board,) = read_csv(out / "tables" / "leaderboard.csv")
    assert (board["method"], board["n"], board["n_failed"]) == ("lora", "0", "2")


def test_replaces_only_reports(tmp_path: Path) -> None:
    results = write_folder(tmp_path / "r", failed_only())
    out = tmp_path / "rep"
    build_report(results, out)
    (out / "figures" / "stale.png").write_bytes(b"old")  # e.g. from a model since removed
    build_report(results, out)
    assert not (out / "figures" / "stale.png").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_report(results, precious)
    assert (precious / "thesis.tex").read_text() == "keep me"


def test_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_folder(tmp_path / "results" / "mini", failed_only())
    assert report_main(["--sweep", "mini"]) == 0
    assert (tmp_path / "reports" / "mini" / "index.html").is_file()
    assert report_main(["--results", "results/mini", "--out", "elsewhere"]) == 0
    assert (tmp_path / "elsewhere" / "tables" / "leaderboard.csv").is_file()
    assert report_main(["--sweep", "missing"]) == 2


# ------------------------------------------------------------------ headless Chromium check

CHROMIUM = "/usr/bin/chromium"


class _DevTools:
    """Chrome DevTools protocol over --remote-debugging-pipe (fds 3/4, NUL-framed JSON)."""

    def __init__(self, profile: Path) -> None:
        import fcntl

        to_r, self._w = os.pipe()
        self._r, from_w = os.pipe()
        # Chromium wants the pipe on fds 3 and 4; bash moves them there (no preexec_fn, which
        # is unsafe in a threaded process). Above 10 first, so the moves cannot clobber them.
        hi_r = fcntl.fcntl(to_r, fcntl.F_DUPFD_CLOEXEC, 10)
        hi_w = fcntl.fcntl(from_w, fcntl.F_DUPFD_CLOEXEC, 10)
        move = f'exec 3<&{hi_r} 4>&{hi_w} {hi_r}<&- {hi_w}>&-; exec "$0" "$@"'

        self.log = profile.with_suffix(".log")  # chromium's stderr, for debugging
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    "bash",
                    "-c",
                    move,
                    CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={profile}",
                    "--remote-debugging-pipe",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(hi_r, hi_w),
            )
        for fd in (to_r, from_w, hi_r, hi_w):
            os.close(fd)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _next(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], min(left, 0.5))[0]:
                if left <= 0:
                    return None
                continue
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        return self.wait(lambda m: m.get("id") == self._id, timeout)["result"]

    def wait(self, pred: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if m is None:
                raise TimeoutError("no answer from chromium")
            if pred(m):
                if "error" in m:
                    raise RuntimeError(m["error"])
                return m
            self.events.append(m)

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (m := self._next(deadline)) is not None:
            self.events.append(m)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)


@pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason="needs Debian chromium: run tests/setup_chromium.sh"
)
def test_chromium_renders_report(built: tuple[Path, Path, Path], tmp_path: Path) -> None:
    page = (built[1] / "index.html").resolve()
    n_figures = len(list((built[1] / "figures").glob("*.png")))
    cdp = _DevTools(tmp_path / "profile")
    try:
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.call(f"{domain}.enable", session=sid)
        cdp.call("Page.navigate", {"url": page.as_uri()}, session=sid)
        cdp.wait(lambda m: m.get("method") == "Page.loadEventFired")
        probe = (
            "JSON.stringify({imgs: Array.from(document.images).map(i => "
            "[i.complete, i.naturalWidth, i.naturalHeight]), "
            "tables: document.querySelectorAll('table').length, "
            "title: document.title})"
        )
        res = cdp.call(
            "Runtime.evaluate", {"expression": probe, "returnByValue": True}, session=sid
        )
        cdp.drain(0.5)  # late console messages
    finally:
        cdp.close()
    info = json.loads(res["result"]["value"])
    assert info["title"].startswith("Fine-tuning benchmark")
    assert len(info["imgs"]) == n_figures
    assert all(ok and w > 100 and h > 100 for ok, w, h in info["imgs"]), info["imgs"]
    assert info["tables"] >= 10
    errors = [
        e
        for e in cdp.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (
            e.get("method") == "Runtime.consoleAPICalled"
            and e["params"]["type"] in ("error", "assert", "warning")
        )
        or (
            e.get("method") == "Log.entryAdded"
            and e["params"]["entry"]["level"] in ("error", "warning")
        )
        or e.get("method") == "Network.loadingFailed"
    ]
    assert errors == []
    fetched = [
        e["params"]["request"]["url"]
        for e in cdp.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert [u for u in fetched if not u.startswith("data:")] == [page.as_uri()]


def _eval_timing(
    before_general: float, after_general: float, inference: float, *, cached: bool = True
) -> dict[str, Any]:
    """A record's `timing`: task quality 20 s / 8 s and validation loss 10 s / 4 s (before /
    after) beside the given general-metric and inference seconds."""
    return {
        "before_eval_s": before_general + 30.0,
        "before_cached": cached,
        "before_parts": {"quality_s": 20.0, "val_loss_s": 10.0, "general_s": before_general},
        "after_eval_s": after_general + 12.0,
        "after_parts": {"quality_s": 8.0, "val_loss_s": 4.0, "general_s": after_general},
        "inference_s": inference,
    }


def test_eval_cost_hand_worked(tmp_path: Path) -> None:
    """Two runs read one cached base evaluation (identical before timings) and share it; a
    third (QLoRA: its own 4-bit base) pays its own. Every figure below is worked by hand."""
    recs = [
        fixture_record("full", "ladder-4m", "arith", 0, timing=_eval_timing(100.0, 90.0, 10.0)),
        fixture_record("lora", "ladder-4m", "arith", 0, timing=_eval_timing(100.0, 70.0, 6.0)),
        fixture_record(
            "qlora", "ladder-4m", "arith", 0, timing=_eval_timing(80.0, 60.0, 4.0, cached=False)
        ),
        fixture_record("freeze", "ladder-4m", "arith", 0),  # an older record: no split
    ]
    for r, train_s in zip(recs, (300.0, 200.0, 400.0, 50.0), strict=True):
        r["train"]["seconds"] = train_s
    out = build_report(write_folder(tmp_path / "r", recs), tmp_path / "out")
    rows = {r["method"]: r for r in read_csv(out / "tables" / "eval_cost.csv")}
    assert set(rows) == {"full", "lora", "qlora"}
    # full: 90 + 10 + 100 / 2 = 150 general; 8 + 4 + (20 + 10) / 2 = 27 task; / 300 s training
    assert float(rows["full"]["general_s"]) == pytest.approx(150.0)
    assert float(rows["full"]["task_eval_s"]) == pytest.approx(27.0)
    assert float(rows["full"]["general_over_train"]) == pytest.approx(0.5)
    assert float(rows["full"]["all_eval_over_train"]) == pytest.approx(177 / 300)
    assert float(rows["lora"]["general_over_train"]) == pytest.approx((70 + 6 + 50) / 200)
    # qlora alone read its base evaluation: all of it is its own
    assert float(rows["qlora"]["general_s"]) == pytest.approx(60 + 4 + 80)
    assert float(rows["qlora"]["task_eval_s"]) == pytest.approx(12 + 30)
    assert "## Evaluation cost" in (out / "report.md").read_text()


def test_eval_cost_shares_base_evaluation_by_before_key(tmp_path: Path) -> None:
    """Runs share a base evaluation by the cache key they record, not by equal seconds: QLoRA's
    own 4-bit base evaluation took, by coincidence, exactly as long as the shared one."""
    timing = _eval_timing(100.0, 50.0, 10.0)
    recs = [
        fixture_record(m, "ladder-4m", "arith", 0, timing=timing | {"before_key": k})
        for m, k in (("full", "bf16-base"), ("lora", "bf16-base"), ("qlora", "nf4-base"))
    ]
    for r in recs:
        r["train"]["seconds"] = 400.0
    out = build_report(write_folder(tmp_path / "r", recs), tmp_path / "out")
    rows = {r["method"]: r for r in read_csv(out / "tables" / "eval_cost.csv")}
    # full and lora: 50 + 10 + 100 / 2 = 110; qlora: 50 + 10 + 100 = 160 (not 100 / 3 each)
    assert float(rows["full"]["general_s"]) == pytest.approx(110.0)
    assert float(rows["lora"]["task_eval_s"]) == pytest.approx(12 + 30 / 2)
    assert float(rows["qlora"]["general_s"]) == pytest.approx(160.0)
    assert float(rows["qlora"]["general_over_train"]) == pytest.approx(0.4)


# ------------------------------------------------------------------ labels and record keys


def _labelled(label: str, seed: int, lr: float = 1e-4, *, after: float = 0.3) -> dict[str, Any]:
    """A SYNTHETIC record of one method setting (``label``) in ladder-4m x arith."""
    method = label.split(":", 1)[0]
    timing = _eval_timing(100.0, 90.0, 10.0)
    rec = fixture_record(method, "ladder-4m", "arith", seed, lr=lr, label=label, timing=timing)
    rec["run_id"] = f"{label.replace(':', '-')}-s{seed}-lr{lr:g}"
    rec["quality"]["after"] = after + 0.01 * seed
    return rec


def test_variants_of_one_method_are_distinct_rows(tmp_path: Path) -> None:
    # Two settings of one method in one (model, task, seed) cell: two rows, no selection.
    recs = [_labelled(v, s, after=a) for v, a in (("freeze:mlp-2", 0.3), ("freeze:all-4", 0.5))
            for s in (0, 1)]  # fmt: skip
    # Two learning rates of one label: still reduced to the validation-selected run.
    for s in (0, 1):
        recs.append(_labelled("lora", s, 1e-4, after=0.2))
        worse = _labelled("lora", s, 1e-3, after=0.9)  # better test score, worse validation
        worse["quality"]["val_loss_after"] = 9.0
        recs.append(worse)
    out = build_report(write_folder(tmp_path / "r", recs), tmp_path / "out")

    board = read_csv(out / "tables" / "leaderboard.csv")
    assert [(r["method"], r["n"]) for r in board] == [
        ("freeze:all-4", "2"),
        ("freeze:mlp-2", "2"),
        ("lora", "2"),
    ]
    by = {r["method"]: r for r in board}
    assert float(by["freeze:all-4"]["quality_after_mean"]) == pytest.approx(0.505)
    assert float(by["freeze:mlp-2"]["quality_after_mean"]) == pytest.approx(0.305)
    assert float(by["lora"]["quality_after_mean"]) == pytest.approx(0.205)  # lr 1e-4 kept
    cell = read_csv(out / "tables" / "leaderboard__ladder-4m__arith.csv")
    assert [r["method"] for r in cell] == ["freeze:all-4", "freeze:mlp-2", "lora"]
    for name in ("repetition", "hallucination", "probes", "eval_cost"):
        rows = read_csv(out / "tables" / f"{name}.csv")
        assert [r["method"] for r in rows] == ["freeze:all-4", "freeze:mlp-2", "lora"], name
    selection = read_csv(out / "tables" / "selection.csv")
    assert {(r["method"], r["lr"], r["selected"]) for r in selection} == {
        ("lora", "0.0001", "True"),
        ("lora", "0.001", "False"),
    }
    runs = read_csv(out / "tables" / "runs.csv")
    assert sorted({r["method"] for r in runs}) == ["freeze:all-4", "freeze:mlp-2", "lora"]
    assert sum(r["selected"] == "True" for r in runs) == 6
    md = (out / "report.md").read_text()
    # one note per method (its default's), naming the settings that ran
    assert md.count("Partial fine-tuning") == 1
    assert "- freeze (runs labelled freeze:all-4, freeze:mlp-2: the method's default" in md


def test_label_falls_back_to_method() -> None:
    old = fixture_record("lora", "ladder-4m", "arith", 0)
    new = fixture_record("lora", "ladder-4m", "arith", 0, label="lora:r8", run_id="new")
    d = prepare(frame_of([old, new]))
    assert d.labels == ["lora", "lora:r8"]
    assert len(d.ok) == 2 and d.candidates.empty


def test_lr_written_keys() -> None:
    rec = fixture_record("lora", "ladder-4m", "arith", 0, lr=3e-4)
    row = frame_of([rec]).iloc[0]
    assert lr_of(row) == "0.0003"  # the record's train.lr
    del rec["train"]["lr"]
    assert lr_of(frame_of([rec]).iloc[0]) == "0.0003"  # config.train.lr overrides method.lr
    rec["config"]["train"] = {"lr": None}
    assert lr_of(frame_of([rec]).iloc[0]) == "0.0001"  # the method's default
    rec["config"] = {"optim": {"lr": 0.5}}  # no such block in the config
    assert lr_of(frame_of([rec]).iloc[0]) == "–"


def test_sizes_and_merged_from_written_keys(tmp_path: Path) -> None:
    rec = fixture_record("lora", "ladder-4m", "arith", 0)
    rec["model_info"]["non_embedding_params"] = None
    rec["inference"]["merged"] = {"tokens_per_s": 80.0, "latency_ms": 10.0}
    df = frame_of([rec])
    assert df["model_size"].iloc[0] == MODELS["ladder-4m"] + 1_000_000  # total_params
    assert df["model_size_source"].iloc[0] == "total parameters"
    out = build_report(write_folder(tmp_path / "r", [rec]), tmp_path / "out")
    (board,) = read_csv(out / "tables" / "leaderboard.csv")
    assert float(board["merged_tokens_per_s_mean"]) == 80.0
    (data,) = read_csv(out / "tables" / "data.csv")
    assert (data["n_train"], data["n_val"], data["n_test"]) == ("400", "50", "50")


# ----------------------------------------------------------------------------- paired tests


def test_paired_test_hand_worked() -> None:
    """d = A - B = (1, 0, 0, 1): mean 0.5. The exact sign-flip distribution (16 flips, the two
    zeros do not matter) gives means 0.5, 0, 0, -0.5 equally often, so the two-sided p-value is
    P(|mean| >= 0.5) = 2/4."""
    from bench.report.stats import example_means, paired

    r = paired([[1, 0, 1, 1]], [[0, 0, 1, 0]])
    assert (r.n_examples, r.n_seeds, r.diff) == (4, 1, 0.5)
    assert r.p == pytest.approx(0.5)
    assert r.low <= 0.5 <= r.high
    same = paired([[1, 0, 1], [0, 0, 1]], [[1, 0, 1], [0, 0, 1]])
    assert (same.diff, same.p, same.low, same.high) == (0.0, 1.0, 0.0, 0.0)
    far = paired([[1.0] * 40, [1.0] * 40], [[0.0] * 40, [0.0] * 40])
    assert far.diff == 1.0 and far.p < 1e-3 and far.low == far.high == 1.0
    # seeds are averaged per example first: (1 + 0) / 2 and (1 + 1) / 2
    assert example_means([[1, 1], [0, 1]]) == [0.5, 1.0]
    with pytest.raises(ValueError, match="same ones"):
        paired([[1, 0]], [[1, 0, 1]])


def test_proportion_interval_is_wilsons() -> None:
    from bench.report.stats import proportion_ci

    lo, hi = proportion_ci(0, 200)  # a base model at the floor: 0/200
    assert lo == 0.0 and hi == pytest.approx(3.8415 / (200 + 3.8415), rel=1e-3)
    lo, hi = proportion_ci(42, 200)
    assert lo < 0.21 < hi and hi - lo == pytest.approx(0.113, abs=0.002)


def test_cell_tests_mark_the_best_and_the_floor() -> None:
    """Three methods on 40 shared examples, two seeds each, base at 0/40. 'a' gets 30 right,
    'b' 29 of those (one example apart: cannot be told from 'a'), 'full' 5: clearly worse.
    The base's Wilson interval ends at 0.088, so the cell has signal; with every method at 0 it
    has none."""
    import pandas as pd

    from bench.report.sections import significance as sig

    def rows(k: int) -> pd.DataFrame:
        after = [1.0] * k + [0.0] * (40 - k)
        return pd.DataFrame(
            {
                "quality.per_example.after.score": [after, after],
                "quality.per_example.before.score": [[0.0] * 40] * 2,
            }
        )

    per = {"a": (rows(30), None, 0), "b": (rows(29), None, 0), "full": (rows(5), None, 0)}
    t = sig.cell_tests(per)
    assert t.best == "a" and t.signal and t.base_high == pytest.approx(3.8415 / 43.8415, 1e-3)
    assert sig.mark(t, "a") == "best"
    assert t.vs_best["b"].p >= sig.ALPHA and sig.mark(t, "b").startswith("≈ best")
    assert t.vs_best["full"].p < 1e-3 and t.vs_best["full"].diff == pytest.approx(-25 / 40)
    assert sig.csv_fields(t, "b")["indistinguishable_from_best"]
    assert not sig.csv_fields(t, "full")["indistinguishable_from_best"]
    assert sig.csv_fields(t, "a")["diff_vs_baseline"] == pytest.approx(25 / 40)
    floor = {k: (rows(0), None, 0) for k in ("a", "full")}
    assert not sig.cell_tests(floor).signal


def test_cell_tests_vs_base_and_the_bar() -> None:
    """'a' 30/40 right after, 0/40 before: paired Δ vs base +0.75 and above the base's Wilson
    bound (0.088); 'b' 3/40 = 0.075 is below the bound: it does not beat the base."""
    import pandas as pd

    from bench.report.sections import significance as sig

    def rows(k: int) -> pd.DataFrame:
        after = [1.0] * k + [0.0] * (40 - k)
        return pd.DataFrame({"quality.per_example.after.score": [after],
                             "quality.per_example.before.score": [[0.0] * 40]})  # fmt: skip

    t = sig.cell_tests({"a": (rows(30), None, 0), "b": (rows(3), None, 0)})
    assert t.vs_base["a"].diff == pytest.approx(0.75) and t.vs_base["a"].p < 1e-3
    assert t.beats_base("a") and not t.beats_base("b")
    assert sig.csv_fields(t, "b")["beats_base"] is False


def test_edge_of_grid_and_interval_ties() -> None:
    from bench.report.sections.selection import Choice
    from bench.report.sections.summary import best_by_interval
    from bench.report.stats import mean_ci

    grid = (1e-4, 3e-4, 1e-3)
    edge = Choice("m", "t", "lora", 0, grid, (2.0, 1.5, 1.2), 1e-3, 3.0)
    assert edge.edge == "highest"
    assert Choice("m", "t", "lora", 0, grid, (1.0, 1.5, 1.2), 1e-4, 3.0).edge == "lowest"
    assert Choice("m", "t", "lora", 0, grid, (2.0, 1.0, 1.2), 3e-4, 3.0).edge == ""
    # a: 1, 2, 3 -> 2 ± 2.48; b: 4, 5, 6 -> 5 ± 2.48 (intervals overlap); c: 10, 10.1, 9.9
    stats = {"a": mean_ci([1, 2, 3]), "b": mean_ci([4, 5, 6]), "c": mean_ci([10, 10.1, 9.9])}
    low = best_by_interval(stats, higher=False)
    assert (low.best, low.ties) == ("a", ["b"])
    high = best_by_interval(stats, higher=True)
    assert (high.best, high.ties) == ("c", [])
    one = best_by_interval({"a": mean_ci([1]), "b": mean_ci([1.1])}, higher=False)
    assert (one.best, one.ties) == ("a", [])  # n = 1: no interval, no tie claimed


def test_concurrency_from_run_times() -> None:
    from bench.report.prepare import concurrency

    t = pd.to_datetime
    df = pd.DataFrame({"started_at": t(["2026-01-01 10:00", "2026-01-01 10:30",
                                        "2026-01-01 12:00"], utc=True),
                       "finished_at": t(["2026-01-01 11:00", "2026-01-01 11:30",
                                         "2026-01-01 12:10"], utc=True)})  # fmt: skip
    assert concurrency(df) == (2, 3)  # the first two overlap, the third ran alone


def test_probe_validity_keeps_probes_above_chance(tmp_path: Path) -> None:
    """strategyqa at 0.5 on 200 yes/no items is chance: left out of the mean drop; a probe at
    0.6 of 200 with chance 0.25 (Wilson low 0.53) counts. The report's drop then averages the
    kept probe only."""
    recs = []
    for s in (0, 1):
        r = fixture_record("lora", "ladder-4m", "arith", s)
        r["forgetting"]["probes"] = {
            "general_knowledge": {"before": 0.6, "after": 0.3, "n": 200, "chance": 0.25},
            "strategyqa": {"before": 0.5, "after": 0.25, "n": 200, "chance": 0.5},
        }
        recs.append(r)
    from bench.report import load_results
    from bench.report.prepare import prepare

    d = prepare(load_results(write_folder(tmp_path / "r", recs)))
    v = d.probes["ladder-4m"]
    assert v["general_knowledge"].kept and not v["strategyqa"].kept
    assert v["general_knowledge"].low == pytest.approx(0.531, abs=0.002)
    assert d.ok["d.probe_drop"].tolist() == pytest.approx([0.5, 0.5])  # (0.6 - 0.3) / 0.6
    out = build_report(tmp_path / "r", tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "Left out of the mean drop: strategyqa" in md
    assert "probes at chance, left out of forgetting: strategyqa" in md


def test_summary_verdict_follows_the_numbers(tmp_path: Path) -> None:
    """Two methods, 3 seeds, 40 test examples each; which one the summary names as best, and
    whether the other is '≈', must change when the per-example scores change."""

    def recs(k_full: int, k_lora: int) -> list[dict[str, Any]]:
        out = []
        for m, k in (("full", k_full), ("lora", k_lora)):
            for s in (0, 1, 2):
                r = fixture_record(m, "ladder-4m", "arith", s)
                after = [1.0] * k + [0.0] * (40 - k)
                r["quality"] |= {"after": k / 40, "before": 0.0, "n_test": 40, "per_example": {
                    "before": {"score": [0.0] * 40}, "after": {"score": after}}}  # fmt: skip
                out.append(r)
        return out

    a = build_report(write_folder(tmp_path / "a", recs(30, 10)), tmp_path / "ra")
    text = (a / "report.md").read_text()
    assert "full has the best exact_match" in text and "every other method is worse" in text
    b = build_report(write_folder(tmp_path / "b", recs(10, 30)), tmp_path / "rb")
    text = (b / "report.md").read_text()
    assert "lora has the best exact_match" in text
    c = build_report(write_folder(tmp_path / "c", recs(30, 29)), tmp_path / "rc")
    text = (c / "report.md").read_text()
    assert "full has the best exact_match" in text and "lora cannot be told apart" in text
    assert "## Limitations" in text and "Seeds: 3 per (method, cell)" in text
