"""Per-run listings: the failures, the runs that failed to learn, every run record, method notes."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench import methods
from bench.report import figures as F
from bench.report.doc import DASH, Section, Table, num
from bench.report.prepare import Data
from bench.report.sections.selection import ORDER


def failures(d: Data) -> Section:
    bad = d.df[d.df["status"] != "success"].sort_values(ORDER, kind="stable")
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
        message = err.strip().splitlines()[-1] if err.strip() else DASH  # the last line
        rows.append(
            [
                r["model"],
                r["task"],
                r["label"],
                str(r["seed"]),
                str(r["status"]),
                r["run_id"],
                message[:200],
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
    """One note per method, which describes its default setting; the method's other settings
    are listed with it (what their labels name differs from that default), so that a note never
    describes a setting it does not match."""
    groups: dict[str, list[str]] = {}
    for label in d.labels:
        m = methods.of_label(label)
        groups.setdefault(m.name if m else label, []).append(label)
    items = []
    for name, labels in groups.items():
        note = methods.note(labels[0])
        head = name + (
            f" (runs labelled {', '.join(x for x in labels if x != name)}: the method's "
            "default below with what each label names changed)"
            if labels != [name]
            else ""
        )
        items.append(f"{head}: {note or '(no note for this method)'}")
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
    data = d.df.sort_values(ORDER, kind="stable")
    data = data[[c for c in cols if c in data]]
    return Table(
        "runs",
        "Every run record (one row per run).",
        [],
        [],
        data.rename(columns=lambda c: "method" if c == "label" else c.removeprefix("d.")),
        tex=False,
    )


def not_learned(d: Data) -> Section:
    """Chosen, fully evaluated runs flagged as failing to learn (bench/flags.py), with their
    training curves: they are left out of every leaderboard."""
    f = d.flagged.sort_values(ORDER, kind="stable")
    rows, curves = [], {}
    for _, r in f.iterrows():
        curve = r.get("train.loss_curve")
        first_loss = curve[0][1] if isinstance(curve, list) and curve else float("nan")
        rows.append([r["model"], r["task"], r["label"], str(r["seed"]), ", ".join(r["flags"]),
                     f"{num(r.get('validation.loss_before'))} → {num(r['d.val_loss_after'])}",
                     f"{num(first_loss)} → {num(r.get('train.final_loss'))}"])  # fmt: skip
        if isinstance(curve, list):
            curves[f"{r['label']} · {r['task']} · s{r['seed']}"] = curve
    data = pd.DataFrame({"model": f["model"], "task": f["task"], "method": f["label"],
                         "seed": f["seed"], "run_id": f["run_id"],
                         "flags": f["flags"].map(",".join)})  # fmt: skip
    cols = ["Model", "Task", "Method", "Seed", "Flags", "Val loss", "Train loss"]
    blocks: list[Any] = [
        f"{len(f)} chosen run(s) failed to learn: validation loss after training above the base "
        "model's, or a training loss that stayed above its start for a sustained stretch "
        "(bench/flags.py). They are not ranked in the leaderboards.",
        Table("not_learned", "Runs that failed to learn.", cols, rows, data),
    ]
    if curves:
        caption = "Training loss of each run above, per optimizer step (one line per run)."
        fig = F.curves_figure(curves, "Runs that failed to learn")
        blocks.append(F.figure("not_learned_curves", caption, fig))
    return Section("Runs that failed to learn", "not-learned", blocks)
