"""How fine-tuning changed general behaviour: repetition, hallucination, ability probes."""

from __future__ import annotations

import pandas as pd

from bench.report.doc import DASH, Note, Section, Table, num, stat
from bench.report.prepare import Data, groups, keys_under, probe_names, stat_of

REP_SHOWN = ("degeneration", "seq_rep_4", "distinct_2", "same_share", "loop_share", "rep_32")
HAL_SHOWN = ("accuracy", "abstention_rate", "hallucination_rate", "empty_rate")


def _before_after_table(
    d: Data, block: str, shown: tuple[str, ...], name: str, caption: str
) -> tuple[Table | None, list[str]]:
    keys = keys_under(d.ok, block)  # what the counted runs measured
    if not keys:
        return None, keys
    show = [k for k in shown if k in keys] or keys[:5]
    rows, data = [], []
    for head, g in groups(d):
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
            "Relative drop per probe, (before − after) / before: positive = ability lost. A "
            "probe shows forgetting only if the base model knows something on it, so a probe "
            "counts only where the base model's accuracy is above chance beyond its 95% Wilson "
            "interval; the others are shown but left out of the mean drop (and of the "
            "leaderboards' probe drop).",
        ],
    )
    if not names:
        sec.blocks.append("No run measured probes.")
        return sec
    vrows, vdata = [], []
    for model, per in d.probes.items():
        for p, v in per.items():
            ci = f"[{num(v.low)}, {num(v.high)}]" if v.n else DASH
            vrows.append([model, p, str(v.n) if v.n else DASH, num(v.chance), f"{num(v.base)} {ci}",
                          "yes" if v.kept else "no (at chance)"])  # fmt: skip
            vdata.append({"model": model, "probe": p, "n": v.n, "chance": v.chance,
                          "base_acc": v.base, "base_low": v.low, "base_high": v.high,
                          "kept": v.kept})  # fmt: skip
    sec.blocks.append(Table(
        "probe_validity",
        "Base model on each probe: items scored, chance (mean of 1/choices), accuracy with its "
        "95% Wilson interval; kept when the interval lies above chance.",
        ["Model", "Probe", "n", "Chance", "Base accuracy [95% CI]", "Counts"],
        vrows,
        pd.DataFrame(vdata),
    ))  # fmt: skip
    if dropped := sorted({p for per in d.probes.values() for p, v in per.items() if not v.kept}):
        why = "(base model not above chance)"
        sec.blocks.append(Note(f"Left out of the mean drop: {', '.join(dropped)} {why}."))
    rows, data = [], []
    for head, g in groups(d):
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
            valid = d.probes.get(head["model"], {}).get(p)
            cells.append(stat(s, "num") + ("" if valid is None or valid.kept else " (at chance)"))
        mean_drop = stat_of(g, "d.probe_drop")
        rec |= {"mean_drop_mean": mean_drop.mean, "mean_drop_ci95": mean_drop.half}
        data.append(rec)
        rows.append([*(str(v) for v in head.values()), *cells, stat(mean_drop, "num")])
    sec.blocks.append(
        Table(
            "probes",
            "Relative probe drop per probe, mean ± 95% t-interval over seeds; Mean: over the "
            "probes that count.",
            ["Model", "Task", "Method", "n", *names, "Mean"],
            rows,
            pd.DataFrame(data),
        )
    )
    return sec
