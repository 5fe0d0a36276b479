"""Leaderboards: one table per (model, task) with its Pareto and training figures."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench import methods
from bench.report import figures as F
from bench.report.doc import (
    DASH,
    Block,
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
from bench.report.prepare import (
    BPB_LABEL,
    NLL_LABEL,
    Data,
    cell_of,
    concurrency,
    first,
    machines,
    stat_of,
)
from bench.report.render import anchor
from bench.report.sections import significance as sig
from bench.report.stats import Stat

# Leaderboard metrics: (key in CSV, DataFrame column, display kind).
METRICS: list[tuple[str, str, str]] = [
    ("quality_before", "quality.before", "num"),
    ("quality_after", "quality.after", "num"),
    ("quality_gain", "d.quality_gain", "num"),
    ("val_loss_after", "quality.val_loss_after", "num"),
    ("nll_delta", "d.nll_delta", "num"),
    ("nll_bpb_delta", "d.nll_bpb_delta", "num"),
    ("probe_drop", "d.probe_drop", "num"),
    ("seq_rep_4_after", "repetition.after.seq_rep_4", "num"),
    # the repetition headline: max(seq_rep_4, 1 - distinct_2), so collapse ranks as repetitive
    ("degeneration_after", "repetition.after.degeneration", "num"),
    ("hallucination_rate_after", "hallucination.after.hallucination_rate", "num"),
    ("empty_rate_after", "hallucination.after.empty_rate", "num"),
    ("answer_bpb_after", "quality.answer_bpb_after", "num"),
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
# Display columns after the quality ones (the order of the rows built in _rows).
_COLUMNS = ("ΔNLL {unit}", "Probe drop", "Degeneration", "Halluc. rate", "Peak memory",
            "Train tok/s", "Trainable", "Adapter")  # fmt: skip
# Per label in one cell: its counted runs, their statistics, the number of failed runs.
PerLabel = dict[str, tuple[pd.DataFrame, dict[str, Stat], int]]


def _cell_stats(rows: pd.DataFrame) -> dict[str, Stat]:
    return {key: stat_of(rows, column) for key, column, _ in METRICS}


def leaderboards(d: Data) -> tuple[list[Section], Table]:
    """The intro, one section per cell, and every cell's rows in one CSV (tables/ only)."""
    intro = Section(
        "Leaderboards",
        "leaderboards",
        [
            "One table per model and task: methods sorted by test quality after fine-tuning. "
            "Forgetting is the change in mean per-token NLL on held-out general text (positive = "
            "worse) and the mean relative drop of the general-ability probes (positive = worse). "
            "Repetition is the degeneration of greedy continuations (max of seq-rep-4 within a "
            "continuation and 1 - distinct-2 across all of them), hallucination the rate of "
            "confident wrong answers, both after fine-tuning. Memory is the peak over training "
            "minus the pre-run baseline; trainable is the share of all parameters trained; "
            "adapter is the size of the saved trainable state. All leaderboards in one machine-"
            "readable file: tables/leaderboard.csv.",
        ],
    )
    out = [intro]
    all_rows = []
    for model, task in d.cells:
        section, rows = _cell(d, model, task)
        out.append(section)
        all_rows += rows
    cols = ["model", "task", "method", "n", "n_failed", *sig.CSV_KEYS] + [
        f"{k}_{s}" for k, _, _ in METRICS for s in ("mean", "ci95", "n")
    ]
    csv = Table(
        "leaderboard",
        "All leaderboards, machine-readable (ci95 = half-width of the 95% t-interval).",
        [],
        [],
        pd.DataFrame(all_rows, columns=cols),
        tex=False,
    )
    return out, csv


def _cell(d: Data, model: str, task: str) -> tuple[Section, list[dict[str, Any]]]:
    all_runs = cell_of(d.df, model, task)
    ok = cell_of(d.ok, model, task)
    metric = first(all_runs, "quality.metric") or "quality"
    name = f"{slug(model)}__{slug(task)}"
    sec = Section(f"{model} × {task}", anchor(f"lb {model} {task}"), level=3)
    n_test = all_runs["quality.n_test"].max()
    sec.blocks.append(
        f"Quality metric: {metric} on the test split"
        + (f" ({num(n_test, 0)} examples)." if finite(n_test) else ".")
    )
    per, tests = cell_view(d, model, task)
    if ok.empty:
        sec.blocks.append(Note("No successful runs for this model and task."))
    elif tests.best is not None and not tests.signal:
        sec.blocks.append(Note(
            f"No task-metric signal: no method beats the base model's {metric} beyond its 95% "
            f"interval (upper end {num(tests.base_high)}); methods are ranked by answer bits "
            "per byte on the test split instead (lower is better)."))  # fmt: skip
    if note := machines_note(per):
        sec.blocks.append(note)
    bpb = _use_bpb(per)
    csv_rows, disp = _rows(model, task, per, tests, bpb)
    sec.blocks.append(
        Table(
            f"leaderboard__{name}",
            f"{model} × {task}: mean ± 95% t-interval over n seeds. {sig.METHOD_NOTE}",
            [
                "Method",
                "n",
                f"{metric} before → after",
                f"Δ {metric}",
                "vs best (paired)",
                *(c.format(unit="(bits/byte)" if bpb else "(nats/token)") for c in _COLUMNS),
            ],
            disp,
            pd.DataFrame(csv_rows, columns=list(csv_rows[0]) if csv_rows else None),
        )
    )
    if not ok.empty:
        sec.blocks += _cell_figures(d, model, task, metric, name, per)
    return sec, csv_rows


def cell_view(d: Data, model: str, task: str) -> tuple[PerLabel, sig.CellTests]:
    """A cell's ranked methods with their statistics, and its paired tests (computed once per
    report: the leaderboards, summary, learn check, limitations and studies all read them)."""
    if (model, task) not in d.views:
        per = _per_label(d.labels, cell_of(d.df, model, task), cell_of(d.ok, model, task))
        d.views[model, task] = per, sig.cell_tests(per)
    return d.views[model, task]


def _per_label(labels: list[str], all_runs: pd.DataFrame, ok: pd.DataFrame) -> PerLabel:
    """Labels with a counted or a failed run in this cell (a failed-only label still shows)."""
    per: PerLabel = {}
    for label in labels:
        rows = ok[ok["label"] == label]
        failed = int(((all_runs["label"] == label) & (all_runs["status"] != "success")).sum())
        if len(rows) or failed:
            per[label] = (rows, _cell_stats(rows), failed)
    return per


def machines_note(per: PerLabel, labels: list[str] | None = None) -> Note | None:
    """A note when the runs of these labels ran on more than one CPU (prepare.machines): their
    tokens/s and step times do not compare across machines, while quality does."""
    rows = [per[k][0] for k in (per if labels is None else labels)]
    where = machines(pd.concat(rows)) if rows else {}
    if len(where) < 2:
        return None
    return Note("These runs ran on different CPUs: " + "; ".join(
        f"{name}: {', '.join(names)}" for name, names in sorted(where.items())
    ) + ". Train tok/s compares only between settings run on one CPU.")  # fmt: skip


def _use_bpb(per: PerLabel) -> bool:
    """General-text forgetting in bits per byte where every ranked method measured it."""
    stats = [s for rows, s, _ in per.values() if len(rows)]
    return bool(stats) and all(s["nll_bpb_delta"].n for s in stats)


def _rows(
    model: str, task: str, per: PerLabel, tests: sig.CellTests, bpb: bool
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """CSV records and display rows, best quality after first (unmeasured last); in a cell with
    no task-metric signal, lowest answer bits per byte first."""

    def key(k: str) -> tuple[float, tuple[int, str]]:
        if tests.best is not None and not tests.signal:
            return (-_nan_low(-per[k][1]["answer_bpb_after"].mean), methods.rank(k))
        return (-_nan_low(per[k][1]["quality_after"].mean), methods.rank(k))

    order = sorted(per, key=key)
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
            **sig.csv_fields(tests, label),
        }
        for m, _, _ in METRICS:
            rec |= {f"{m}_mean": s[m].mean, f"{m}_ci95": s[m].half, f"{m}_n": s[m].n}
        csv_rows.append(rec)
        q_before = num(s["quality_before"].mean)
        disp.append(
            [
                label,
                str(n) + (f" ({failed} failed)" if failed else ""),
                f"{q_before} → {stat(s['quality_after'], 'num', n)}",
                stat(s["quality_gain"], "num", n),
                sig.mark(tests, label),
                stat(s["nll_bpb_delta" if bpb else "nll_delta"], "num", n),
                stat(s["probe_drop"], "num", n),
                stat(s["degeneration_after"], "num", n),
                stat(s["hallucination_rate_after"], "num", n),
                stat(s["peak_memory_bytes"], "bytes", n),
                stat(s["train_tokens_per_s"], "sig", n),
                f"{count(s['trainable_params'].mean)} ({pct(s['trainable_pct'].mean)})"
                if s["trainable_params"].n
                else DASH,
                nbytes(s["adapter_bytes"].mean),
            ]
        )
    return csv_rows, disp


def _nan_low(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _cell_figures(
    d: Data, model: str, task: str, metric: str, name: str, per: PerLabel
) -> list[Block]:
    labels = [k for k in d.labels if k in per and len(per[k][0])]
    st = {k: per[k][1] for k in labels}
    bpb = _use_bpb({k: per[k] for k in labels})
    use_nll = any(st[k]["nll_delta"].n for k in labels)
    forget_key = "nll_bpb_delta" if bpb else "nll_delta" if use_nll else "probe_drop"
    forget_label = BPB_LABEL if bpb else NLL_LABEL if use_nll else "mean relative probe drop"
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
    busy, timed = concurrency(pd.concat([per[k][0] for k in labels]), d.df)
    return [
        F.figure(
            f"pareto__{name}",
            f"{model} × {task}: Pareto fronts (dashed) of quality vs peak memory, quality vs "
            f"trainable parameters (log scale), and learning vs forgetting ({forget_label}). "
            "Points: means over seeds; bars: 95% t-intervals, drawn only where n > 1.",
            pareto,
        ),
        F.figure(
            f"training__{name}",
            f"{model} × {task}: training loss per optimizer step (mean over seeds; band: min–max "
            "over seeds, only where n > 1), training tokens/s and generated tokens/s (means; "
            "bars: 95% t-intervals, only where n > 1)."
            + (
                f" {busy} of {timed} of these runs ran beside another job: their throughput "
                "includes that contention."
                if busy
                else ""
            ),
            training,
        ),
    ]
