"""How fine-tuning changed general behaviour: repetition, hallucination, ability probes."""

from __future__ import annotations

import pandas as pd

from bench.report.doc import Section, Table, num, stat
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
            "Relative drop per probe, (before − after) / before: positive = ability lost.",
        ],
    )
    if not names:
        sec.blocks.append("No run measured probes.")
        return sec
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
