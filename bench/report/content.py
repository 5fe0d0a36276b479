"""What the report says: results DataFrame -> sections of text, tables and figures.

Aggregation rules (stated in the report too):
- only runs with status "success" enter statistics; the others are listed under Failures;
- when a method has several runs for one (model, task, seed) (a learning-rate grid), the run
  with the lowest *validation* loss after training is kept; test scores never select;
- mean and two-sided 95% Student-t interval over seeds, with n shown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.report import figures as F
from bench.report.doc import (
    DASH,
    Block,
    Figure,
    Note,
    Section,
    Table,
    count,
    finite,
    nbytes,
    num,
    pct,
    stat,
)
from bench.report.frame import slug
from bench.report.notes import method_note, method_rank, model_notes
from bench.report.render import anchor
from bench.report.stats import Stat, mean_ci

# Leaderboard metrics: (key in CSV, DataFrame column, display kind).
METRICS: list[tuple[str, str, str]] = [
    ("quality_before", "quality.before", "num"),
    ("quality_after", "quality.after", "num"),
    ("quality_gain", "d.quality_gain", "num"),
    ("val_loss_after", "quality.val_loss_after", "num"),
    ("nll_delta", "d.nll_delta", "num"),
    ("probe_drop", "forgetting.mean_relative_drop", "num"),
    ("seq_rep_4_after", "repetition.after.seq_rep_4", "num"),
    ("hallucination_rate_after", "hallucination.after.hallucination_rate", "num"),
    ("peak_memory_bytes", "memory.peak_bytes", "bytes"),
    ("mean_memory_bytes", "memory.mean_bytes", "bytes"),
    ("p99_memory_bytes", "memory.p99_bytes", "bytes"),
    ("train_tokens_per_s", "train.tokens_per_s", "sig"),
    ("train_seconds", "train.seconds", "sig"),
    ("inference_tokens_per_s", "inference.tokens_per_s", "sig"),
    ("inference_latency_ms", "inference.latency_ms", "sig"),
    ("merged_tokens_per_s", "d.merged_tokens_per_s", "sig"),
    ("trainable_params", "params.trainable", "count"),
    ("trainable_pct", "d.trainable_pct", "pct"),
    ("adapter_bytes", "params.adapter_bytes", "bytes"),
    ("final_train_loss", "train.final_loss", "num"),
]
REP_SHOWN = ("seq_rep_4", "rep_32", "wrep_32", "distinct_2", "loop_share")
HAL_SHOWN = ("accuracy", "abstention_rate", "hallucination_rate")
NLL_LABEL = "ΔNLL on general text (after − before)"


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


def _first(df: pd.DataFrame, name: str) -> Any:
    if name not in df:
        return None
    vals = sorted({str(v) for v in df[name].dropna()})
    return vals[0] if vals else None


# ------------------------------------------------------------------------------- preparation


@dataclass
class Data:
    df: pd.DataFrame  # all runs, with derived columns
    ok: pd.DataFrame  # successful runs kept for statistics (one per method, cell, seed)
    candidates: pd.DataFrame  # successful runs in groups that needed a validation choice
    labels: list[str]  # methods (with variant), canonical order
    styles: dict[str, tuple[str, str]]
    cells: list[tuple[str, str]]  # (model, task), models by size
    files: list[Table]  # tables written to tables/ but not shown (too wide or too long)


def _lr_of(row: pd.Series) -> str:
    """The learning rate a run used: the record's ``train.lr``, else the resolved config's
    (``train.lr`` overrides the method's default ``method.lr``)."""
    if finite(row.get("train.lr")):
        return f"{float(row['train.lr']):g}"
    config = row.get("config")
    for block in ("train", "optim", "method"):
        sub = config.get(block) if isinstance(config, dict) else None
        value = sub.get("lr") if isinstance(sub, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{value:g}"
    return DASH


def prepare(df: pd.DataFrame) -> Data:
    df = df.copy()
    if "variant" in df:
        variant = df["variant"].fillna("")
        df["label"] = df["method"].fillna("?") + np.where(variant != "", ":" + variant, "")
    else:
        df["label"] = df["method"].fillna("?")
    df["model"] = df["model"].fillna("?")
    df["task"] = df["task"].fillna("?")
    df["status"] = df["status"].fillna("unknown")  # NA would break boolean masks below
    df["d.quality_gain"] = col(df, "quality.after") - col(df, "quality.before")
    nll = col(df, "forgetting.nll_delta")
    df["d.nll_delta"] = np.where(
        np.isfinite(nll), nll, col(df, "forgetting.nll_after") - col(df, "forgetting.nll_before")
    )
    # From counts when both exist: one definition for every method (percent of all parameters).
    ratio = 100 * col(df, "params.trainable") / col(df, "params.total")
    df["d.trainable_pct"] = np.where(np.isfinite(ratio), ratio, col(df, "params.trainable_pct"))
    merged = col(df, "inference.merged.tokens_per_s")  # the pipeline's nested `merged` block
    df["d.merged_tokens_per_s"] = np.where(
        np.isfinite(merged), merged, col(df, "inference.merged_tokens_per_s")
    )
    for probe in probe_names(df):
        before = col(df, f"forgetting.probes.{probe}.before")
        after = col(df, f"forgetting.probes.{probe}.after")
        with np.errstate(divide="ignore", invalid="ignore"):
            df[f"d.probe_drop.{probe}"] = np.where(before != 0, (before - after) / before, np.nan)

    ok = df[df["status"] == "success"].copy()
    ok["_val"] = col(ok, "quality.val_loss_after")
    ok["_val"] = ok["_val"].fillna(np.inf)  # unmeasured validation never wins a choice
    ok = ok.sort_values(["model", "task", "label", "seed", "_val", "run_id"], kind="stable")
    keys = ["model", "task", "label", "seed"]
    sizes = ok.groupby(keys, dropna=False)["run_id"].transform("size")
    ok["selected"] = ~ok.duplicated(keys, keep="first")
    candidates = ok[sizes > 1].drop(columns="_val")
    df["selected"] = df["run_id"].isin(ok.loc[ok["selected"], "run_id"])
    kept = ok[ok["selected"]].drop(columns=["_val", "selected"])

    labels = sorted(df["label"].unique(), key=method_rank)
    size = df.groupby("model")["model_size"].max()
    models = sorted(df["model"].unique(), key=lambda m: (_size_key(size.get(m)), m))
    cells = [(m, t) for m in models for t in sorted(df.loc[df["model"] == m, "task"].unique())]
    return Data(df, kept, candidates, labels, F.style(labels), cells, [])


def _size_key(v: Any) -> float:
    return float(v) if finite(v) else math.inf


def probe_names(df: pd.DataFrame) -> list[str]:
    pat = re.compile(r"^forgetting\.probes\.(.+)\.(before|after)$")
    return sorted({m.group(1) for c in df.columns if (m := pat.match(c)) and df[c].notna().any()})


def _keys_under(df: pd.DataFrame, block: str) -> list[str]:
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


# ---------------------------------------------------------------------------------- sections


def build_sections(
    df: pd.DataFrame, *, sweep: str, source: str, fig_dir: Path
) -> tuple[list[Section], list[Table]]:
    """All report sections, plus tables written only as files (per-run values)."""
    d = prepare(df)
    make_fig = _figure_maker(fig_dir)
    sections = [provenance(d, sweep=sweep, source=source)]
    sections += leaderboards(d, make_fig)
    sections.append(scaling(d, make_fig))
    sections.append(repetition(d))
    sections.append(hallucination(d))
    sections.append(probes(d))
    sections.append(eval_cost(d))
    if len(d.candidates):
        sections.append(selection(d))
    sections.append(failures(d))
    sections.append(method_notes(d))
    return sections, [*d.files, runs_table(d)]


def _figure_maker(fig_dir: Path) -> Callable[[str, str, Any], Figure]:
    def make(name: str, caption: str, fig: Any) -> Figure:
        return Figure(name, caption, F.save(fig, fig_dir / name))

    return make


def _when(df: pd.DataFrame) -> str:
    start = df["started_at"].dropna()
    end = df["finished_at"].dropna()
    if start.empty and end.empty:
        return "at unrecorded times"
    first = (start if not start.empty else end).min().strftime("%Y-%m-%d %H:%M")
    last = (end if not end.empty else start).max().strftime("%Y-%m-%d %H:%M")
    return f"between {first} and {last} UTC"


def _counted(values: pd.Series) -> list[tuple[str, int]]:
    counts = values.fillna(DASH).astype(str).value_counts()
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _hardware(df: pd.DataFrame) -> pd.Series:
    """One line per run from the env block: device, its name, CPU, cores, threads."""

    def describe(r: pd.Series) -> str:
        parts = []
        for key, fmt in (
            ("env.device", "{}"),
            ("env.device_name", "{}"),
            ("env.cpu", "CPU {}"),
            ("env.cpu_count", "{:.0f} cores"),
            ("env.threads", "{:.0f} threads"),
        ):
            v = r.get(key)
            if v is not None and v is not pd.NA and (isinstance(v, str) or finite(v)):
                text = fmt.format(float(v) if "{:" in fmt else v)
                if text not in parts:
                    parts.append(text)
        return ", ".join(parts) or "unrecorded"

    return df.apply(describe, axis=1) if len(df) else pd.Series([], dtype="string")


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def provenance(d: Data, *, sweep: str, source: str) -> Section:
    df = d.df
    n_ok = int((df["status"] == "success").sum())
    blocks: list[Block] = [
        f"Sweep '{sweep}': {len(df)} run records in {source} ({n_ok} succeeded, "
        f"{len(df) - n_ok} did not), written {_when(df)}. Everything in this report is "
        "computed from those records alone; per-run values are in tables/runs.csv.",
    ]
    if df.empty:
        blocks.append(Note("No run records were found."))
        return Section("Provenance", "provenance", blocks)

    hw = [f"Hardware: {text} ({_runs(n)})" for text, n in _counted(_hardware(df))]
    mem = df["memory.device"].astype("string")
    if "memory.kind" in df:
        mem = mem + " (" + df["memory.kind"].astype("string") + ")"
    if mem.notna().any():
        hw.append("Memory measured on: " + ", ".join(sorted(mem.dropna().unique())))
    code = []
    dirty_any = False
    for (sha, dirty), n in (
        df.groupby(["env.git_sha", "env.git_dirty"], dropna=False).size().sort_index().items()
    ):
        state = "uncommitted changes" if dirty is True else "clean" if dirty is False else "?"
        dirty_any |= dirty is True
        sha_txt = sha if isinstance(sha, str) else "unrecorded"
        code.append(f"Code: git {sha_txt} ({state}, {_runs(n)})")
    blocks.append(hw + code)
    if dirty_any:
        blocks.append(
            Note(
                "Some runs were made from a working tree with uncommitted changes: "
                "their git sha alone does not reproduce them."
            )
        )
    if df["env.git_sha"].nunique() > 1:
        blocks.append(Note("Runs come from more than one code version."))

    blocks += _budget_blocks(d)
    blocks.append(_models_table(d))
    blocks.append(_data_table(d))
    blocks.append(_packages_table(df))
    blocks.append(
        "Statistics: each cell shows the mean over seeds ± the half-width of the two-sided 95% "
        "Student-t interval, t(0.975, n−1)·sd/√n, with n the number of successful seeds (no "
        "interval when n = 1). Only successful runs count. When a method has several runs for "
        "one seed (a learning-rate grid), the run with the lowest validation loss is kept; "
        "test scores never select."
    )
    return Section("Provenance", "provenance", blocks)


def _span(values: pd.Series, digits: int = 0) -> str:
    """One value, or min–max when runs differ (e.g. tokens reached per seed)."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return DASH
    lo, hi = v.min(), v.max()
    return num(lo, digits) if lo == hi else f"{num(lo, digits)}–{num(hi, digits)}"


def _budget_blocks(d: Data) -> list[Block]:
    """Per cell, the budget every method ran under; a note where a seed's runs disagree."""
    df = d.df
    rows, data, uneven = [], [], []
    for model, task in d.cells:
        cell = df[(df["model"] == model) & (df["task"] == task)]
        # Identical budgets = same kind, steps and training tokens (same examples in the same
        # order) for every method of one seed; time budgets: same seconds.
        ident = cell[["budget.kind", "budget.steps", "budget.tokens", "budget.seconds"]].copy()
        is_time = (ident["budget.kind"] == "time").fillna(False).astype(bool)
        ident.loc[is_time, ["budget.steps", "budget.tokens"]] = pd.NA
        ident["seed"] = cell["seed"]
        per_seed = ident.astype("string").fillna("?").groupby("seed").nunique()
        if (per_seed > 1).any(axis=None):
            uneven.append(f"{model} × {task}")
        kinds = ", ".join(sorted(cell["budget.kind"].dropna().unique())) or DASH
        rows.append(
            [
                model,
                task,
                kinds,
                _span(cell["budget.steps"]),
                _span(cell["budget.tokens"]),
                _span(cell["budget.seconds"]),
                str(len(cell)),
            ]
        )
        data.append(
            {
                "model": model,
                "task": task,
                "kind": kinds,
                "steps_min": cell["budget.steps"].min(),
                "steps_max": cell["budget.steps"].max(),
                "tokens_min": cell["budget.tokens"].min(),
                "tokens_max": cell["budget.tokens"].max(),
                "seconds_min": cell["budget.seconds"].min(),
                "seconds_max": cell["budget.seconds"].max(),
                "runs": len(cell),
            }
        )
    out: list[Block] = [
        Table(
            "budgets",
            "Training budget per model and task: the same for every method of a seed (tokens "
            "are training tokens and can differ between seeds, which draw different examples).",
            ["Model", "Task", "Budget", "Steps", "Tokens", "Seconds", "Runs"],
            rows,
            pd.DataFrame(data),
        )
    ]
    if uneven:
        out.append(
            Note(
                "Methods ran under different budgets within one seed in: "
                + ", ".join(uneven)
                + ". Their comparison is not budget-matched (see tables/runs.csv)."
            )
        )
    return out


def _models_table(d: Data) -> Table:
    rows, data = [], []
    models = list(dict.fromkeys(m for m, _ in d.cells))
    for model in models:
        g = d.df[d.df["model"] == model]
        notes = model_notes(model, _first(g, "model_info.notes"))
        src = _first(g, "model_info.source") or DASH
        ne, tot = g["model_info.non_embedding_params"].max(), g["model_info.total_params"].max()
        rows.append([model, count(ne), count(tot), src, notes or DASH])
        data.append(
            {
                "model": model,
                "non_embedding_params": ne,
                "total_params": tot,
                "source": src,
                "notes": notes,
            }
        )
    return Table(
        "models",
        "Models.",
        ["Model", "Non-embedding params", "Total params", "Source", "Notes"],
        rows,
        pd.DataFrame(data),
    )


def _data_table(d: Data) -> Table:
    rows, data = [], []
    for task in sorted(d.df["task"].unique()):
        g = d.df[d.df["task"] == task]
        src = _first(g, "task_info.source") or DASH
        lic = _first(g, "task_info.license") or DASH
        val = g["task_info.n_val"].max()
        val = val if finite(val) else g["task_info.n_validation"].max()
        sizes = [g["task_info.n_train"].max(), val, g["task_info.n_test"].max()]
        metric = _first(g, "quality.metric") or _first(g, "task_info.metric") or DASH
        rows.append([task, src, lic, metric, *(num(s, 0) for s in sizes)])
        data.append(
            {
                "task": task,
                "source": src,
                "license": lic,
                "metric": metric,
                "n_train": sizes[0],
                "n_val": sizes[1],
                "n_test": sizes[2],
            }
        )
    return Table(
        "data",
        "Fine-tuning data: source with version, license, split sizes.",
        ["Task", "Source", "License", "Metric", "Train", "Val", "Test"],
        rows,
        pd.DataFrame(data),
    )


def _packages_table(df: pd.DataFrame) -> Table:
    rows = []
    names = [c for c in df.columns if c.startswith("env.packages.")]
    for c in (["env.python"] if "env.python" in df else []) + sorted(names):
        versions = _counted(df[c])
        text = (
            versions[0][0]
            if len(versions) == 1
            else ", ".join(f"{v} ({n} runs)" for v, n in versions)
        )
        rows.append([c.removeprefix("env.packages.").removeprefix("env."), text])
    return Table("packages", "Package versions recorded by the runs.", ["Package", "Version"], rows)


# ------------------------------------------------------------------------------ leaderboards


def _cell_stats(rows: pd.DataFrame) -> dict[str, Stat]:
    return {key: stat_of(rows, column) for key, column, _ in METRICS}


def leaderboards(d: Data, make_fig: Callable[[str, str, Any], Figure]) -> list[Section]:
    intro = Section(
        "Leaderboards",
        "leaderboards",
        [
            "One table per model and task: methods sorted by test quality after fine-tuning. "
            "Forgetting is the change in mean per-token NLL on held-out general text (positive = "
            "worse) and the mean relative drop of the general-ability probes (positive = worse). "
            "Repetition is seq-rep-4 of greedy continuations, hallucination the rate of confident "
            "wrong answers, both after fine-tuning. Memory is the peak over training minus the "
            "pre-run baseline; trainable is the share of all parameters trained; adapter is the "
            "size of the saved trainable state. All leaderboards in one machine-readable file: "
            "tables/leaderboard.csv.",
        ],
    )
    out = [intro]
    all_rows = []
    for model, task in d.cells:
        section, rows = _cell(d, model, task, make_fig)
        out.append(section)
        all_rows += rows
    cols = ["model", "task", "method", "n", "n_failed"] + [
        f"{k}_{s}" for k, _, _ in METRICS for s in ("mean", "ci95", "n")
    ]
    d.files.append(
        Table(
            "leaderboard",
            "All leaderboards, machine-readable (ci95 = half-width of the 95% t-interval).",
            [],
            [],
            pd.DataFrame(all_rows, columns=cols),
            tex=False,
        )
    )
    return out


def _cell(
    d: Data, model: str, task: str, make_fig: Callable[[str, str, Any], Figure]
) -> tuple[Section, list[dict[str, Any]]]:
    all_runs = d.df[(d.df["model"] == model) & (d.df["task"] == task)]
    ok = d.ok[(d.ok["model"] == model) & (d.ok["task"] == task)]
    metric = _first(all_runs, "quality.metric") or "quality"
    name = f"{slug(model)}__{slug(task)}"
    sec = Section(f"{model} × {task}", anchor(f"lb {model} {task}"), level=3)
    n_test = all_runs["quality.n_test"].max()
    sec.blocks.append(
        f"Quality metric: {metric} on the test split"
        + (f" ({num(n_test, 0)} examples)." if finite(n_test) else ".")
    )

    per: dict[str, tuple[pd.DataFrame, dict[str, Stat], int]] = {}
    for label in d.labels:
        rows = ok[ok["label"] == label]
        failed = int(((all_runs["label"] == label) & (all_runs["status"] != "success")).sum())
        if len(rows) or failed:
            per[label] = (rows, _cell_stats(rows), failed)
    if ok.empty:
        sec.blocks.append(Note("No successful runs for this model and task."))

    order = sorted(per, key=lambda k: (-_nan_low(per[k][1]["quality_after"].mean), method_rank(k)))
    csv_rows, disp = [], []
    for label in order:
        rows, s, failed = per[label]
        n = int(rows["seed"].nunique()) if len(rows) else 0
        rec: dict[str, Any] = {
            "model": model,
            "task": task,
            "method": label,
            "n": n,
            "n_failed": failed,
        }
        for key, _, _ in METRICS:
            rec |= {f"{key}_mean": s[key].mean, f"{key}_ci95": s[key].half, f"{key}_n": s[key].n}
        csv_rows.append(rec)
        q_before = num(s["quality_before"].mean)
        disp.append(
            [
                label,
                str(n) + (f" ({failed} failed)" if failed else ""),
                f"{q_before} → {stat(s['quality_after'], 'num', n)}",
                stat(s["quality_gain"], "num", n),
                stat(s["nll_delta"], "num", n),
                stat(s["probe_drop"], "num", n),
                stat(s["seq_rep_4_after"], "num", n),
                stat(s["hallucination_rate_after"], "num", n),
                stat(s["peak_memory_bytes"], "bytes", n),
                stat(s["train_tokens_per_s"], "sig", n),
                f"{count(s['trainable_params'].mean)} ({pct(s['trainable_pct'].mean)})"
                if s["trainable_params"].n
                else DASH,
                nbytes(s["adapter_bytes"].mean),
            ]
        )
    cols = [
        "Method",
        "n",
        f"{metric} before → after",
        f"Δ {metric}",
        "ΔNLL",
        "Probe drop",
        "Seq-rep-4",
        "Halluc. rate",
        "Peak memory",
        "Train tok/s",
        "Trainable",
        "Adapter",
    ]
    sec.blocks.append(
        Table(
            f"leaderboard__{name}",
            f"{model} × {task}: mean ± 95% t-interval over n seeds.",
            cols,
            disp,
            pd.DataFrame(csv_rows, columns=list(csv_rows[0]) if csv_rows else None),
        )
    )
    if not ok.empty:
        sec.blocks += _cell_figures(d, model, task, metric, name, per, make_fig)
    return sec, csv_rows


def _nan_low(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _cell_figures(
    d: Data,
    model: str,
    task: str,
    metric: str,
    name: str,
    per: dict[str, tuple[pd.DataFrame, dict[str, Stat], int]],
    make_fig: Callable[[str, str, Any], Figure],
) -> list[Block]:
    labels = [k for k in d.labels if k in per and len(per[k][0])]
    st = {k: per[k][1] for k in labels}
    use_nll = any(st[k]["nll_delta"].n for k in labels)
    forget_key = "nll_delta" if use_nll else "probe_drop"
    forget_label = NLL_LABEL if use_nll else "mean relative probe drop"
    pareto = F.pareto_figure(
        memory=[F.Point(k, st[k]["peak_memory_bytes"], st[k]["quality_after"]) for k in labels],
        params=[F.Point(k, st[k]["trainable_params"], st[k]["quality_after"]) for k in labels],
        learn_forget=[F.Point(k, st[k][forget_key], st[k]["quality_gain"]) for k in labels],
        styles=d.styles,
        quality=metric,
        forgetting=forget_label,
        title=f"{model} × {task}",
    )
    curves = {
        k: [c for c in per[k][0]["train.loss_curve"] if isinstance(c, list) and c] for k in labels
    }
    training = F.training_figure(
        curves=curves,
        train_tps={k: st[k]["train_tokens_per_s"] for k in labels},
        infer_tps={k: stat_of(per[k][0], "inference.tokens_per_s") for k in labels},
        styles=d.styles,
        title=f"{model} × {task}",
    )
    return [
        make_fig(
            f"pareto__{name}",
            f"{model} × {task}: Pareto fronts of quality vs peak "
            "memory, quality vs trainable parameters, and learning vs forgetting.",
            pareto,
        ),
        make_fig(
            f"training__{name}",
            f"{model} × {task}: training loss curves and training / inference throughput.",
            training,
        ),
    ]


# ---------------------------------------------------------------------------------- scaling


def scaling(d: Data, make_fig: Callable[[str, str, Any], Figure]) -> Section:
    sec = Section("Scaling with model size", "scaling", [])
    sizes = d.df.groupby("model")["model_size"].max()
    known = list(dict.fromkeys(m for m, _ in d.cells if finite(sizes.get(m))))
    if known:  # say which parameter count the x axis uses
        src = d.df.groupby("model")["model_size_source"].first()
        sec.blocks.append([f"{m}: {count(sizes[m])} ({src[m]})" for m in known])
    for task in sorted(d.ok["task"].unique()):
        g = d.ok[d.ok["task"] == task]
        models = [
            m
            for m in sorted(g["model"].unique(), key=lambda m: _size_key(sizes[m]))
            if finite(sizes[m])
        ]
        if len(models) < 2:
            sec.blocks.append(f"{task}: fewer than two models of known size; no curve.")
            continue
        quality, forget = {}, {}
        for label in d.labels:
            pts_q, pts_f = [], []
            for m in models:
                rows = g[(g["model"] == m) & (g["label"] == label)]
                if len(rows):
                    pts_q.append((float(sizes[m]), stat_of(rows, "quality.after")))
                    pts_f.append((float(sizes[m]), stat_of(rows, "d.nll_delta")))
            if pts_q:
                quality[label], forget[label] = pts_q, pts_f
        metric = _first(g, "quality.metric") or "quality"
        fig = F.scaling_figure(
            quality=quality,
            forgetting=forget,
            styles=d.styles,
            quality_label=f"{metric} after",
            forgetting_label=NLL_LABEL,
            title=f"{task}: scaling over model size",
        )
        sec.blocks.append(
            make_fig(
                f"scaling__{slug(task)}",
                f"{task}: quality and forgetting "
                "against model size, per method (95% t-interval bars).",
                fig,
            )
        )
    if not sec.blocks:
        sec.blocks.append("No successful runs.")
    return sec


# ---------------------------------------------------------------- repetition, hallucination


def _before_after_table(
    d: Data, block: str, shown: tuple[str, ...], name: str, caption: str
) -> tuple[Table | None, list[str]]:
    keys = _keys_under(d.ok, block)  # what the counted runs measured
    if not keys:
        return None, keys
    show = [k for k in shown if k in keys] or keys[:5]
    rows, data = [], []
    for head, g in _groups(d):
        rec = dict(head)
        for k in keys:
            b, a = stat_of(g, f"{block}.before.{k}"), stat_of(g, f"{block}.after.{k}")
            rec |= {
                f"{k}_before_mean": b.mean,
                f"{k}_after_mean": a.mean,
                f"{k}_after_ci95": a.half,
            }
        data.append(rec)
        rows.append(
            [str(v) for v in head.values()]
            + [f"{num(rec[f'{k}_before_mean'])} → {num(rec[f'{k}_after_mean'])}" for k in show]
        )
    cols = ["Model", "Task", "Method", "n"] + [k.replace("_", "-") for k in show]
    return Table(name, caption, cols, rows, pd.DataFrame(data)), keys


def _groups(d: Data) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Each method's counted runs per cell, with the table head: model, task, method, n seeds."""
    out = []
    for model, task in d.cells:
        cell = d.ok[(d.ok["model"] == model) & (d.ok["task"] == task)]
        for label in d.labels:
            g = cell[cell["label"] == label]
            if len(g):
                head = {"model": model, "task": task, "method": label}
                out.append((head | {"n": int(g["seed"].nunique())}, g))
    return out


def repetition(d: Data) -> Section:
    table, _ = _before_after_table(
        d,
        "repetition",
        REP_SHOWN,
        "repetition",
        "Repetition of greedy continuations, base model → fine-tuned (means over seeds; "
        "tables/repetition.csv has every metric with its 95% interval).",
    )
    sec = Section(
        "Repetition",
        "repetition",
        [
            "seq-rep-n: 1 − unique n-grams / n-grams per continuation; rep-l: share of "
            "teacher-forced next-token predictions that occur in the previous l tokens, wrep-l "
            "the same counting wrong predictions only; distinct-n: unique n-grams over all "
            "continuations; loop share: continuations stuck in a loop. Lower repetition and "
            "higher distinct-n are better.",
        ],
    )
    sec.blocks.append(table if table else "No run measured repetition.")
    return sec


def hallucination(d: Data) -> Section:
    table, _ = _before_after_table(
        d,
        "hallucination",
        HAL_SHOWN,
        "hallucination",
        "Closed-book factual and unanswerable questions, base model → fine-tuned (means "
        "over seeds; tables/hallucination.csv has 95% intervals).",
    )
    sec = Section(
        "Hallucination",
        "hallucination",
        [
            "Accuracy on closed-book questions, abstention rate, and hallucination rate (a "
            "confident wrong answer, including answers to unanswerable questions).",
        ],
    )
    sec.blocks.append(table if table else "No run measured hallucination.")
    return sec


def probes(d: Data) -> Section:
    names = probe_names(d.ok)
    sec = Section(
        "Forgetting: general-ability probes",
        "probes",
        [
            "Relative drop per probe, (before − after) / before: positive = ability lost.",
        ],
    )
    if not names:
        sec.blocks.append("No run measured probes.")
        return sec
    rows, data = [], []
    for head, g in _groups(d):
        rec = dict(head)
        cells = []
        for p in names:
            s = stat_of(g, f"d.probe_drop.{p}")
            rec |= {
                f"{p}_before_mean": stat_of(g, f"forgetting.probes.{p}.before").mean,
                f"{p}_after_mean": stat_of(g, f"forgetting.probes.{p}.after").mean,
                f"{p}_drop_mean": s.mean,
                f"{p}_drop_ci95": s.half,
            }
            cells.append(stat(s, "num"))
        mean_drop = stat_of(g, "forgetting.mean_relative_drop")
        rec |= {"mean_drop_mean": mean_drop.mean, "mean_drop_ci95": mean_drop.half}
        data.append(rec)
        rows.append([*(str(v) for v in head.values()), *cells, stat(mean_drop, "num")])
    sec.blocks.append(
        Table(
            "probes",
            "Relative probe drop per probe, mean ± 95% t-interval.",
            ["Model", "Task", "Method", "n", *names, "Mean"],
            rows,
            pd.DataFrame(data),
        )
    )
    return sec


# --------------------------------------------------------------- selection, failures, notes


def _eval_seconds(d: Data) -> pd.DataFrame:
    """Per counted run: training seconds and what evaluation cost beside it (wall seconds).

    The base model is evaluated once per cell; the runs that read one cached evaluation carry
    its `timing.before_key` and each is charged an equal share of it. Records older than that
    key are grouped on their identical `timing.before_eval_s` (read from the same cache file)."""
    every = d.df.dropna(subset=["timing.before_eval_s"])
    seconds = "s" + every["timing.before_eval_s"].astype(str)
    if "timing.before_key" in every:
        seconds = every["timing.before_key"].fillna(seconds)
    group = [every["model"], every["task"], seconds.rename("before")]
    share = every.groupby(group)["run_id"].transform("size")
    shared = pd.Series(share.to_numpy(), index=every["run_id"].to_numpy())
    ok = d.ok
    n = ok["run_id"].map(shared).astype(float).to_numpy()

    def part(state: str, name: str) -> np.ndarray:
        return np.nan_to_num(col(ok, f"timing.{state}_parts.{name}"))

    general = (
        col(ok, "timing.after_parts.general_s")
        + np.nan_to_num(col(ok, "timing.inference_s"))
        + part("before", "general_s") / n
    )
    task = (
        part("after", "quality_s")
        + part("after", "val_loss_s")
        + (part("before", "quality_s") + part("before", "val_loss_s")) / n
    )
    train = col(ok, "train.seconds")
    return pd.DataFrame(
        {
            "train_s": train,
            "general_s": general,
            "task_eval_s": task,
            "general_over_train": general / train,
            "all_eval_over_train": (general + task) / train,
        },
        index=ok.index,
    )


def eval_cost(d: Data) -> Section:
    sec = Section(
        "Evaluation cost",
        "eval-cost",
        [
            "Wall seconds each run spent training and evaluating. General metrics: held-out "
            "NLL, probes, repetition and hallucination of the fine-tuned model, its inference "
            "timing, and the run's share of the base model's evaluation (computed once per cell "
            "and shared by the runs that read it). Task evaluation: test-set generation and "
            "validation loss, after training plus the share of before.",
        ],
    )
    if not np.isfinite(col(d.ok, "timing.after_parts.general_s")).any():
        sec.blocks.append("No run recorded how its evaluation time splits.")
        return sec
    secs = _eval_seconds(d)
    rows, data = [], []
    for head, g in _groups(d):
        s = secs.loc[g.index].mean()
        if not finite(s["general_s"]):
            continue
        data.append(head | s.to_dict())
        rows.append(
            [str(v) for v in head.values()]
            + [num(s[k], 0) for k in ("train_s", "general_s", "task_eval_s")]
            + [num(s[k], 2) for k in ("general_over_train", "all_eval_over_train")]
        )
    cols = ["Model", "Task", "Method", "n", "Train s", "General metrics s", "Task eval s"]
    cols += ["General / train", "All eval / train"]
    caption = "Evaluation time beside training time (means over seeds, wall seconds)."
    sec.blocks.append(Table("eval_cost", caption, cols, rows, pd.DataFrame(data)))
    return sec


def selection(d: Data) -> Section:
    c = d.candidates.sort_values(["model", "task", "label", "seed", "run_id"], kind="stable")
    rows = [
        [
            r["model"],
            r["task"],
            r["label"],
            str(r["seed"]),
            r["run_id"],
            _lr_of(r),
            num(r["quality.val_loss_after"]),
            "yes" if r["selected"] else "",
        ]
        for _, r in c.iterrows()
    ]
    data = pd.DataFrame(
        {
            "model": c["model"],
            "task": c["task"],
            "method": c["label"],
            "seed": c["seed"],
            "run_id": c["run_id"],
            "lr": [_lr_of(r) for _, r in c.iterrows()],
            "val_loss_after": c["quality.val_loss_after"],
            "selected": c["selected"],
        }
    )
    return Section(
        "Hyperparameter selection",
        "selection",
        [
            "Runs that competed for one (model, task, method, seed) slot; the lowest validation "
            "loss after training was kept.",
            Table(
                "selection",
                "Validation-based selection.",
                ["Model", "Task", "Method", "Seed", "Run", "LR", "Val loss", "Kept"],
                rows,
                data,
            ),
        ],
    )


def failures(d: Data) -> Section:
    bad = d.df[d.df["status"] != "success"].sort_values(
        ["model", "task", "label", "seed", "run_id"], kind="stable"
    )
    sec = Section("Failures", "failures", [])
    if bad.empty:
        sec.blocks.append("Every run succeeded.")
        return sec
    sec.blocks.append(
        f"{len(bad)} run(s) did not succeed; they are excluded from statistics "
        "(and counted as failed in the leaderboards)."
    )
    rows = []
    for _, r in bad.iterrows():
        err = r["error"] if isinstance(r["error"], str) else ""
        first = err.strip().splitlines()[-1] if err.strip() else DASH  # last line: the message
        rows.append(
            [
                r["model"],
                r["task"],
                r["label"],
                str(r["seed"]),
                str(r["status"]),
                r["run_id"],
                first[:200],
            ]
        )
    data = pd.DataFrame(
        {
            "model": bad["model"],
            "task": bad["task"],
            "method": bad["label"],
            "seed": bad["seed"],
            "status": bad["status"],
            "run_id": bad["run_id"],
            "error": bad["error"],
        }
    )
    sec.blocks.append(
        Table(
            "failures",
            "Runs that failed, ran out of memory, diverged or were cancelled.",
            ["Model", "Task", "Method", "Seed", "Status", "Run", "Error"],
            rows,
            data,
        )
    )
    return sec


def method_notes(d: Data) -> Section:
    items = []
    for label in d.labels:
        note = method_note(label)
        items.append(f"{label}: {note}" if note else f"{label}: (no note for this method)")
    return Section("Method notes", "methods", [items or ["No methods."]])


def runs_table(d: Data) -> Table:
    cols = [
        "run_id",
        "status",
        "model",
        "task",
        "label",
        "seed",
        "selected",
        "budget.kind",
        "budget.steps",
        "budget.tokens",
        "budget.seconds",
        "quality.metric",
        "quality.before",
        "quality.after",
        "quality.val_loss_after",
        "d.nll_delta",
        "forgetting.mean_relative_drop",
        "memory.peak_bytes",
        "train.tokens_per_s",
        "inference.tokens_per_s",
        "params.trainable",
        "d.trainable_pct",
        "params.adapter_bytes",
        "train.final_loss",
    ]
    data = d.df.sort_values(["model", "task", "label", "seed", "run_id"], kind="stable")
    data = data[[c for c in cols if c in data]]
    return Table(
        "runs",
        "Every run record (one row per run).",
        [],
        [],
        data.rename(columns=lambda c: "method" if c == "label" else c.removeprefix("d.")),
        tex=False,
    )
