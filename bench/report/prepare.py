"""Results DataFrame -> :class:`Data`: derived columns, the validation choice, display order.

Aggregation rules (stated in the report too):
- only runs with status "success" enter statistics; the others are listed under Failures;
- a row of every table is one method *label* (the method with the settings that make it a
  distinct row, ``<method>:<setting>``); records without a ``label`` fall back to ``method``;
- when a label has several runs for one (model, task, seed) (a learning-rate grid), the run
  with the lowest *validation* loss after training is kept; test scores never select;
- mean and two-sided 95% Student-t interval over seeds, with n shown;
- a probe counts for forgetting only where the base model is above chance beyond its 95%
  Wilson interval (``probe_validity``); the probe drop averages those probes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench import methods
from bench.report import figures as F
from bench.report.doc import finite
from bench.report.stats import Stat, mean_ci, proportion_ci

NLL_LABEL = "ΔNLL on general text (after − before)"
BPB_LABEL = "Δ bits per byte on general text (after − before)"
KEYS = ["model", "task", "label", "seed"]  # one statistics slot; more runs = a choice


def col(df: pd.DataFrame, name: str) -> np.ndarray:
    """A column as float64 (NaN where missing, absent or not a number)."""
    if name not in df:
        return np.full(len(df), np.nan)
    s = df[name]
    if s.dtype == object:
        s = s.map(lambda v: v if isinstance(v, int | float) and not isinstance(v, bool) else None)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def stat_of(df: pd.DataFrame, name: str) -> Stat:
    return mean_ci(col(df, name))


def first(df: pd.DataFrame, name: str) -> Any:
    """The alphabetically first value of a text column (one per model or task in practice)."""
    if name not in df:
        return None
    vals = sorted({str(v) for v in df[name].dropna()})
    return vals[0] if vals else None


@dataclass
class Data:
    df: pd.DataFrame  # all runs, with derived columns
    ok: pd.DataFrame  # successful runs kept for statistics (one per label, cell, seed)
    candidates: pd.DataFrame  # successful runs in groups that needed a validation choice
    labels: list[str]  # method labels, in the registry's order
    styles: dict[str, tuple[str, str]]
    cells: list[tuple[str, str]]  # (model, task), models by size
    flagged: pd.DataFrame  # chosen runs that failed to learn: listed, not ranked
    probes: dict[str, dict[str, ProbeValidity]]  # model -> probe -> the base's standing on it
    # per (model, task): what sections.leaderboards.cell_view computed (its paired tests resample
    # 9,999 times per pair; four sections read them)
    views: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    # per task: what bench.sweep.write_references measured beside the runs (sources, reference
    # tokenizers); read from the results folder like the records
    references: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ProbeValidity:
    """The base model on one probe: accuracy with its Wilson interval against chance."""

    n: int | None  # items scored (None: the records predate it)
    chance: float  # mean of 1/choices over those items (NaN: unrecorded)
    base: float  # the base model's accuracy (the most common "before" among the model's runs)
    low: float
    high: float

    @property
    def kept(self) -> bool:
        """Above chance beyond the interval; a probe without n or chance is kept (unknown)."""
        return not math.isfinite(self.chance) or not math.isfinite(self.low) or (
            self.low > self.chance)  # fmt: skip


def prepare(df: pd.DataFrame) -> Data:
    validity = probe_validity(df)
    df = _derived(df, validity)
    ok = df[df["status"] == "success"].copy()
    ok["_val"] = np.nan_to_num(col(ok, "d.val_loss_after"), nan=np.inf)  # unmeasured never wins
    ok = ok.sort_values([*KEYS, "_val", "run_id"], kind="stable")
    sizes = ok.groupby(KEYS, dropna=False)["run_id"].transform("size")
    ok["selected"] = ~ok.duplicated(KEYS, keep="first")
    candidates = ok[sizes > 1].drop(columns="_val")
    df["selected"] = df["run_id"].isin(ok.loc[ok["selected"], "run_id"])
    # a chosen point only measured on validation (bench.evaluate not yet run) is not ranked
    full = ok["quality.after"].notna() if "quality.after" in ok else False
    chosen = ok[ok["selected"] & full].drop(columns=["_val", "selected"])
    # runs that failed to learn (bench/flags.py) are listed with their curves, never ranked
    flags = chosen["flags"] if "flags" in chosen else pd.Series(None, index=chosen.index)
    bad = flags.map(lambda f: isinstance(f, list) and bool(f)).astype(bool)
    kept, flagged = chosen[~bad], chosen[bad]

    labels = sorted(df["label"].unique(), key=methods.rank)
    size = df.groupby("model")["model_size"].max()
    models = sorted(df["model"].unique(), key=lambda m: (size_key(size.get(m)), m))
    cells = [(m, t) for m in models for t in sorted(df.loc[df["model"] == m, "task"].unique())]
    return Data(df, kept, candidates, labels, F.style(labels), cells, flagged, validity)


def probe_validity(df: pd.DataFrame) -> dict[str, dict[str, ProbeValidity]]:
    """Per model and probe, the base accuracy (the mode of the runs' "before": QLoRA's 4-bit
    base differs from the others') with its Wilson interval and the recorded chance level."""
    out: dict[str, dict[str, ProbeValidity]] = {}
    ok = df[df["status"] == "success"] if "status" in df else df
    for model, g in ok.groupby("model", dropna=False):
        for probe in probe_names(g):
            before = pd.Series(col(g, f"forgetting.probes.{probe}.before")).dropna()
            if before.empty:
                continue
            base = float(before.round(6).mode().min())
            n_vals = pd.Series(col(g, f"forgetting.probes.{probe}.n")).dropna()
            chance = pd.Series(col(g, f"forgetting.probes.{probe}.chance")).dropna()
            n = int(n_vals.max()) if len(n_vals) else None
            low, high = proportion_ci(round(base * n), n) if n else (math.nan, math.nan)
            c = float(chance.median()) if len(chance) else math.nan
            out.setdefault(str(model), {})[probe] = ProbeValidity(n, c, base, low, high)
    return out


def _derived(
    df: pd.DataFrame, validity: dict[str, dict[str, ProbeValidity]] | None = None
) -> pd.DataFrame:
    """A copy with the row label, filled keys and the ``d.*`` columns computed from records."""
    df = df.copy()
    df["label"] = df["label"].fillna(df["method"]).fillna("?")  # older records: no label
    df["model"] = df["model"].fillna("?")
    df["task"] = df["task"].fillna("?")
    df["status"] = df["status"].fillna("unknown")  # NA would break boolean masks below
    df["d.quality_gain"] = col(df, "quality.after") - col(df, "quality.before")
    # validation loss chooses between lr grid points (schema >= 3 `validation`, else quality's)
    val = col(df, "validation.loss_after")
    df["d.val_loss_after"] = np.where(np.isfinite(val), val, col(df, "quality.val_loss_after"))
    nll = col(df, "forgetting.nll_delta")
    df["d.nll_delta"] = np.where(
        np.isfinite(nll), nll, col(df, "forgetting.nll_after") - col(df, "forgetting.nll_before")
    )
    # From counts when both exist: one definition for every method (percent of all parameters).
    ratio = 100 * col(df, "params.trainable") / col(df, "params.total")
    df["d.trainable_pct"] = np.where(np.isfinite(ratio), ratio, col(df, "params.trainable_pct"))
    df["d.merged_tokens_per_s"] = col(df, "inference.merged.tokens_per_s")
    df["d.nll_bpb_delta"] = col(df, "forgetting.nll_bpb_delta")
    kept = np.zeros(len(df))
    total = np.zeros(len(df))
    for probe in probe_names(df):
        before = col(df, f"forgetting.probes.{probe}.before")
        after = col(df, f"forgetting.probes.{probe}.after")
        with np.errstate(divide="ignore", invalid="ignore"):
            drop = np.where(before != 0, (before - after) / before, np.nan)
        df[f"d.probe_drop.{probe}"] = drop
        use = np.array([(validity or {}).get(m, {}).get(probe) is None
                        or validity[m][probe].kept for m in df["model"]])  # fmt: skip
        use &= np.isfinite(drop)
        kept += np.where(use, drop, 0.0)
        total += use
    # the mean relative drop over the probes that can show forgetting (base above chance)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["d.probe_drop"] = np.where(total > 0, kept / total, np.nan)
    return df


def size_key(v: Any) -> float:
    return float(v) if finite(v) else math.inf


def probe_names(df: pd.DataFrame) -> list[str]:
    pat = re.compile(r"^forgetting\.probes\.(.+)\.(before|after)$")
    return sorted({m.group(1) for c in df.columns if (m := pat.match(c)) and df[c].notna().any()})


def keys_under(df: pd.DataFrame, block: str) -> list[str]:
    """Metric names present under ``block.before.*`` / ``block.after.*``."""
    pat = re.compile(rf"^{block}\.(before|after)\.(.+)$")
    names = {
        m.group(2)
        for c in df.columns
        if (m := pat.match(c)) and df[c].dtype == "float64" and df[c].notna().any()
    }

    def order(name: str) -> tuple[int, int, str]:
        for i, prefix in enumerate(("seq_rep_", "rep_", "wrep_", "distinct_")):
            if name.startswith(prefix) and name[len(prefix) :].isdigit():
                return i, int(name[len(prefix) :]), name
        return 9, 0, name

    return sorted(names, key=order)


def cell_of(df: pd.DataFrame, model: str, task: str) -> pd.DataFrame:
    return df[(df["model"] == model) & (df["task"] == task)]


def groups(d: Data) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Each label's counted runs per cell, with the table head: model, task, method, n seeds."""
    out = []
    for model, task in d.cells:
        cell = cell_of(d.ok, model, task)
        for label in d.labels:
            g = cell[cell["label"] == label]
            if len(g):
                head = {"model": model, "task": task, "method": label}
                out.append((head | {"n": int(g["seed"].nunique())}, g))
    return out


def _intervals(df: pd.DataFrame) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    s, e = df.get("started_at"), df.get("finished_at")
    if s is None or e is None:
        return []
    return [(a, b) for a, b in zip(s, e, strict=True) if pd.notna(a) and pd.notna(b) and b > a]


def concurrency(df: pd.DataFrame, others: pd.DataFrame | None = None) -> tuple[int, int]:
    """(runs of `df` that overlapped in time another run of `others` (default: `df`), runs of
    `df` with both times recorded): a run's throughput is only contention-free when nothing else
    ran beside it."""
    spans = _intervals(df)
    pool = _intervals(df if others is None else others)
    busy = sum(any((c, d) != (a, b) and a < d and c < b for c, d in pool) for a, b in spans)
    return busy, len(spans)


def machines(df: pd.DataFrame) -> dict[str, list[str]]:
    """The CPUs the runs of `df` ran on, "model (flags)", each with its runs' labels in `df`'s
    order: tokens/s and step times compare only within one. A run without recorded flags counts
    as its CPU model's machine; a run without a CPU model is left out."""
    seen: list[tuple[str, str | None, str]] = []  # (cpu, flags, label) per run
    none = pd.Series([None] * len(df), index=df.index, dtype=object)
    for cpu, flags, label in zip(df.get("env.cpu", none), df.get("env.cpu_flags", none),
                                 df.get("label", none), strict=True):  # fmt: skip
        if isinstance(cpu, str) and cpu:
            seen.append((cpu, flags if isinstance(flags, str) and flags else None, str(label)))
    flagged = {cpu: flags for cpu, flags, _ in seen if flags}
    where: dict[str, list[str]] = {}
    for cpu, flags, label in seen:
        flags = flags or flagged.get(cpu)
        names = where.setdefault(cpu + (f" ({flags})" if flags else ""), [])
        if label not in names:
            names.append(label)
    return where
