"""Expected run seconds per (model, method, task) cell, from the records already on disk; used
by the ordered sweeper (longest expected first) and by the sweep ETA (bench/sweep.py).

A cell's estimate is the mean wall time of, in this order of preference:
  1. this sweep's successful records of the cell (`<results_dir>/<sweep>/*.json`);
  2. successful records of the cell in any other sweep folder under `results_dir`;
  3. known cells (1 or 2) of the same method, else of any method, each scaled by
     (params / their params) ** SIZE_EXP ("scaled");
  4. no records at all: params ** SIZE_EXP, or 1.0 for a model of unknown size ("prior"): a
     relative size only, not seconds, so the ETA waits for a finished run to calibrate it.
Wall time is finished_at - started_at (whole seconds), never less than the timed parts
(train + before/after evaluation + inference). Failed records are not used: a crash says little
about how long the run takes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import fmean
from typing import Any

import yaml

Cell = tuple[str, str, str]  # (model, method, task)
CONF = Path(__file__).resolve().parent.parent / "conf"
# Run time grows slower than the parameter count: on the 2-core CPU, results/default gives
# ladder-s -> ladder-m -> smollm2-135m (1.9M, 6.6M, 135M params) exponents of 0.45 to 0.8,
# since evaluation and generation overheads do not scale with size.
SIZE_EXP = 0.7


@dataclass(frozen=True)
class Estimate:
    seconds: float
    source: str  # "sweep" | "history" | "scaled" | "prior" (steps 1-4 of the module docstring)


@dataclass(frozen=True)
class Planned:
    cell: Cell
    seconds: float  # expected; 0 for a job that a finished record turns into a skip
    done: bool = False


@dataclass
class Plan:
    jobs: list[Planned]
    calibrated: bool  # seconds come from records (steps 1-3), not from the size prior alone
    error: str | None = None  # why estimating failed (then every job is 1.0: Hydra's order)
    sources: Counter[str] = field(default_factory=Counter)

    def order(self) -> list[int]:
        """Job indices, longest expected first; a stable sort, so ties keep Hydra's order."""
        return sorted(range(len(self.jobs)), key=lambda i: -self.jobs[i].seconds)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def wall_seconds(rec: Mapping[str, Any]) -> float | None:
    timing, train = rec.get("timing") or {}, rec.get("train") or {}
    parts = [_num(train.get("seconds"))]
    keys = ("after_eval_s", "inference_s") + (
        () if timing.get("before_cached") else ("before_eval_s",)
    )
    parts += [_num(timing.get(k)) for k in keys]  # a cached base evaluation cost this run nothing
    timed = sum(p for p in parts if p is not None)
    wall = 0.0
    try:
        t0, t1 = (datetime.fromisoformat(rec[k]) for k in ("started_at", "finished_at"))
        wall = (t1 - t0).total_seconds()
    except (KeyError, TypeError, ValueError):
        pass
    best = max(wall, timed)
    return best if best > 0 else None


def _name(rec: Mapping[str, Any], key: str) -> str | None:
    v = rec.get(key)  # the record's top-level name; older shapes nest it (or only in config)
    if isinstance(v, Mapping):
        v = v.get("name")
    if v is None:
        v = ((rec.get("config") or {}).get(key) or {}).get("name")
    return str(v) if v is not None else None


def record_cell(rec: Mapping[str, Any]) -> Cell | None:
    names = tuple(_name(rec, k) for k in ("model", "method", "task"))
    return names if all(names) else None  # type: ignore[return-value]


def cell_of_run_id(run_id: str) -> Cell:
    method, model, task = ([*run_id.split("__"), "", ""])[:3]  # method__model__task__s..__hash
    return (model, method, task)


def _read_records(results_dir: Path, sweep: str) -> tuple[dict, dict, dict[str, float]]:
    """Wall seconds of successful records by cell, this sweep's and other sweeps', and the
    recorded parameter count by model name."""
    this: dict[Cell, list[float]] = {}
    other: dict[Cell, list[float]] = {}
    params: dict[str, float] = {}
    for p in sorted(results_dir.glob("*/*.json")):
        if p.name.startswith(".") or p.parent.name.startswith("."):
            continue
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or rec.get("status") != "success":
            continue
        cell, secs = record_cell(rec), wall_seconds(rec)
        if cell is None or secs is None:
            continue
        (this if p.parent.name == sweep else other).setdefault(cell, []).append(secs)
        total = _num((rec.get("model_info") or {}).get("total_params"))
        if total:
            params[cell[0]] = total
    return this, other, params


def conf_params(model: str, conf_dir: Path = CONF) -> float | None:
    """Rough parameter count from conf/model/<model>.yaml: 12 L h^2 (+ 3 L h (I - 8h/3) when
    the MLP width I is given) + vocab x h."""
    try:
        m = yaml.safe_load((conf_dir / "model" / f"{model}.yaml").read_text())
        a = m.get("arch") or m
        h, n_layers = float(a["hidden_size"]), float(a["num_layers"])
    except (OSError, KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError):
        return None
    inter = float(a.get("intermediate_size") or 8 * h / 3)
    return n_layers * (4 * h * h + 3 * h * inter) + float(a.get("vocab_size") or 0) * h


def estimates(
    cells: Iterable[Cell], results_dir: Path, sweep: str, conf_dir: Path = CONF
) -> dict[Cell, Estimate]:
    this, other, params = _read_records(Path(results_dir), sweep)
    known = {c: Estimate(fmean(v), "sweep") for c, v in this.items()}
    for c, v in other.items():
        known.setdefault(c, Estimate(fmean(v), "history"))

    def size(model: str) -> float | None:
        return params.get(model) or conf_params(model, conf_dir)

    def scale(to: str, frm: str) -> float:
        a, b = size(to), size(frm)
        return (a / b) ** SIZE_EXP if a and b else 1.0

    out: dict[Cell, Estimate] = {}
    for cell in dict.fromkeys(cells):
        if cell in known:
            out[cell] = known[cell]
            continue
        for method in (cell[1], None):  # the same method first, else any
            vals = [
                e.seconds * scale(cell[0], c[0]) for c, e in known.items() if method in (None, c[1])
            ]
            if vals:
                out[cell] = Estimate(fmean(vals), "scaled")
                break
        else:
            s = size(cell[0])
            out[cell] = Estimate(s**SIZE_EXP if s else 1.0, "prior")
    return out


def make_plan(cells: Sequence[Cell], done: Sequence[bool], results_dir: Path, sweep: str) -> Plan:
    est = estimates(cells, results_dir, sweep)
    jobs = [Planned(c, 0.0 if d else est[c].seconds, d) for c, d in zip(cells, done, strict=True)]
    sources = Counter("done" if d else est[c].source for c, d in zip(cells, done, strict=True))
    return Plan(jobs, calibrated=any(e.source != "prior" for e in est.values()), sources=sources)


def uniform_plan(cells: Sequence[Cell], error: str) -> Plan:
    return Plan([Planned(c, 1.0) for c in cells], calibrated=False, error=error)


def remaining_seconds(plan: Plan, finished: Iterable[Mapping[str, Any]], workers: int) -> float:
    """Expected seconds until the sweep ends: the planned jobs not yet finished (in flight
    ones count whole), spread over `workers` but never less than the longest of them, times
    actual / expected of the runs finished so far. NaN while that ratio is unknown and the
    plan is uncalibrated. `finished`: .progress.jsonl lines (run_id, skipped, status, s)."""
    left = Counter((j.cell, j.done) for j in plan.jobs)
    secs = {(j.cell, j.done): j.seconds for j in plan.jobs}
    actual = expected = 0.0
    for d in finished:
        cell = cell_of_run_id(str(d.get("run_id", "")))
        key = (cell, bool(d.get("skipped")))
        if not left[key]:  # a skip the plan did not foresee, or the reverse
            key = (cell, not key[1])
        if not left[key]:
            continue
        left[key] -= 1
        s = _num(d.get("s"))
        if not d.get("skipped") and d.get("status") == "success" and s and secs[key] > 0:
            actual, expected = actual + s, expected + secs[key]
    ratio = actual / expected if expected > 0 else 1.0 if plan.calibrated else float("nan")
    todo = [secs[k] for k, n in left.items() for _ in range(n)]
    if not todo:
        return 0.0
    return ratio * max(sum(todo) / max(1, workers), max(todo))
