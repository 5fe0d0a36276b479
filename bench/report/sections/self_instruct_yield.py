"""Self-Instruct data (issue 18): the generated dataset's yield (kept / generated at each stage,
from the manifest's counts) and the diversity of its instructions, read from the self_instruct
records' `task_info.dataset` (written by the task at load time from its manifest: reports read
records only). The verdict against human data is in sections/self_instruct.py."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import matplotlib as mpl
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from bench.report import figures as F
from bench.report.doc import DASH, Note, Section, Table, count, num
from bench.report.prepare import Data

SI = "self_instruct"
SETS = (("seeds", "seed instructions (human)"), ("pool", "kept instructions (pool)"),
        ("train", "instructions trained on"))  # fmt: skip


def datasets(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The distinct dataset summaries the self_instruct records carry, in record order."""
    rows = df[df["task"] == SI]
    vals = rows.get("task_info.dataset", [])
    out: dict[str, dict[str, Any]] = {}
    for v in vals:
        if isinstance(v, Mapping):
            out.setdefault(json.dumps(v, sort_keys=True), dict(v))
    return list(out.values())


def counts_problems(summary: Mapping[str, Any]) -> list[str]:
    """Where the manifest's counts do not add up (generated = dropped + kept at each stage,
    every kept instruction gets one instance, the data file holds the kept instances)."""
    c, out = summary["counts"], []
    for stage in ("instructions", "instances"):
        s = c[stage]
        if s["generated"] != sum(s["dropped"].values()) + s["kept"]:
            out.append(f"{stage}: generated {s['generated']} != dropped "
                       f"{sum(s['dropped'].values())} + kept {s['kept']}")  # fmt: skip
    if c["instances"]["generated"] != c["instructions"]["kept"]:
        out.append(f"instances generated {c['instances']['generated']} != instructions kept "
                   f"{c['instructions']['kept']}")  # fmt: skip
    if summary["rows"] != c["instances"]["kept"]:
        out.append(f"data rows {summary['rows']} != instances kept {c['instances']['kept']}")
    return out


def _share(k: float, n: float) -> float:
    return k / n if n else math.nan


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else DASH


def yield_rows(summary: Mapping[str, Any]) -> list[tuple[str, str, int, float]]:
    """(stage, outcome, count, share of that stage's input) from the manifest's counts."""
    c = summary["counts"]
    out = []
    for stage in ("instructions", "instances"):
        s = c[stage]
        g = s["generated"]
        out.append((stage, "generated", g, _share(g, g)))
        out += [(stage, f"dropped: {r}", k, _share(k, g)) for r, k in s["dropped"].items()]
        out.append((stage, "kept", s["kept"], _share(s["kept"], g)))
    rows, usable = summary["rows"], summary["usable"]
    out.append(("task", "within the task's length limits", usable, _share(usable, rows)))
    out.append(("task", "trained on (task.n_train)", summary["trained"],
                _share(summary["trained"], usable)))  # fmt: skip
    return out


def yield_sentence(summary: Mapping[str, Any]) -> str:
    c = summary["counts"]
    ins, inst = c["instructions"], c["instances"]
    drops = sorted(ins["dropped"].items(), key=lambda kv: (-kv[1], kv[0]))
    top = ", ".join(f"{r} {k:,}" for r, k in drops[:3] if k) or "none"
    reached = "reached" if summary["target_reached"] else "not reached"
    return (
        f"Dataset {summary['key']} (generator {summary['generator']}, {summary['rounds']} rounds, "
        f"{c['prompts']:,} prompts; target {summary['n_examples']:,} examples {reached}): "
        f"{ins['kept']:,} of {ins['generated']:,} candidate instructions kept "
        f"({_pct(_share(ins['kept'], ins['generated']))}; most dropped: {top}); "
        f"{inst['kept']:,} of {inst['generated']:,} instances kept "
        f"({_pct(_share(inst['kept'], inst['generated']))}); {summary['usable']:,} fit the "
        f"task's length limits, {summary['trained']:,} trained on."
    )


def _diversity_sentence(summary: Mapping[str, Any]) -> str:
    div = summary["diversity"]
    seeds, pool = div["seeds"], div.get("pool") or div["train"]
    which = "kept" if div.get("pool") else "trained-on"
    lead = ", ".join(f"{w} {k}" for w, k in pool["top_leading"][:3])
    return (
        f"The {pool['n']:,} {which} instructions lead with {pool['leading_words']:,} distinct "
        f"words (most common: {lead}; the {seeds['n']} seeds: {seeds['leading_words']}); "
        f"distinct-2 {num(pool['distinct_2'])} (seeds {num(seeds['distinct_2'])}); ROUGE-L "
        f"against the nearest seed: median {num(pool['rouge_vs_seeds']['median'])} (the seeds "
        f"against each other: {num(seeds['rouge_vs_seeds']['median'])})."
    )


def _at_least(counts: list[int], threshold: float) -> float:
    """Share of the histogram at or above `threshold` when it falls on a bin edge (tenths)."""
    k = round(threshold * 10, 9)
    return _share(sum(counts[int(k):]), sum(counts)) if k == int(k) else math.nan  # fmt: skip


def hist_figure(div: Mapping[str, Any], threshold: float, title: str) -> MplFigure:
    """Each set's share of instructions per tenth of ROUGE-L against the nearest seed."""
    with mpl.rc_context(F._RC):
        fig, (ax,) = F._panels((7.6, 3.4), [0.8])
        shown = [(name, div[k]) for k, name in SETS if div.get(k)]
        width = 0.1 / (len(shown) + 1)
        for i, (name, s) in enumerate(shown):
            counts = s["rouge_vs_seeds"]["counts"]
            total = sum(counts) or 1
            xs = [b / 10 + width * (i + 0.5) for b in range(10)]
            ax.bar(xs, [k / total for k in counts], width=width, align="edge", label=name)
        ax.axvline(threshold, color="0.3", ls="--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("ROUGE-L against the nearest seed instruction (dashed: the filter)")
        ax.set_ylabel("share of instructions")
        F._legend_right(fig, [ax], 2.2)
        fig.suptitle(title)
        return fig


def yield_section(d: Data) -> Section:
    sec = Section("Self-Instruct data: yield and diversity", "self-instruct-yield")
    found = datasets(d.df)
    if not found:
        why = ("records written before task_info.dataset existed" if (d.df["task"] == SI).any()
               else "no self_instruct runs here")  # fmt: skip
        sec.blocks.append(Note(f"No generated dataset's summary in these records: {why}."))
        return sec
    sec.blocks.append(
        "The pipeline's yield, from the manifest's counts: each candidate is dropped for the "
        "first check it fails (bench/self_instruct.py); shares are of the stage's input. "
        "Diversity: distinct leading words (an imperative leads with its verb), distinct-n "
        "(unique n-grams / n-grams over the set; it falls as a set grows, so compare sets of "
        "similar size), and each instruction's highest ROUGE-L against a seed instruction "
        "other than itself (the filter's scorer, no stemming)."
    )
    keys = [s["key"] for s in found]
    for s in found:  # one dataset at two n_train (several summaries of one key) gets two names
        key = s["key"] if keys.count(s["key"]) == 1 else f"{s['key']}-n{s['trained']}"
        sec.blocks.append(yield_sentence(s))
        sec.blocks += [Note(f"{key}: the manifest's counts do not add up: {p}.")
                       for p in counts_problems(s)]  # fmt: skip
        rows = yield_rows(s)
        sec.blocks.append(Table(
            f"self-instruct-yield-{key}",
            f"Yield of dataset {key}: count per outcome and its share of the stage's input.",
            ["Stage", "Outcome", "Count", "Share"],
            [[a, b, f"{k:,}", _pct(x)] for a, b, k, x in rows],
            pd.DataFrame(rows, columns=["stage", "outcome", "count", "share"]),
        ))  # fmt: skip
        div, thr = s["diversity"], float(s["rouge_threshold"])
        sec.blocks.append(_diversity_sentence(s))
        if not div.get("pool"):
            sec.blocks.append(
                Note(
                    f"{key}: its manifest predates the pool's diversity "
                    "statistics; shown: the seeds and the trained-on set."
                )
            )
        drows, data = [], []
        for k, name in SETS:
            v = div.get(k)
            if not v:
                continue
            r = v["rouge_vs_seeds"]
            at = _at_least(r["counts"], thr)
            lead = ", ".join(f"{w} {n}" for w, n in v["top_leading"])
            drows.append([name, count(v["n"]), count(v["distinct"]), count(v["leading_words"]),
                          lead, num(v["distinct_1"]), num(v["distinct_2"]), num(r["mean"]),
                          num(r["median"]), _pct(at)])  # fmt: skip
            data.append({"set": k, "n": v["n"], "distinct": v["distinct"],
                         "leading_words": v["leading_words"], "distinct_1": v["distinct_1"],
                         "distinct_2": v["distinct_2"], "rouge_mean": r["mean"],
                         "rouge_median": r["median"], "rouge_at_least_threshold": at,
                         **{f"rouge_bin_{b}": n for b, n in enumerate(r["counts"])}})  # fmt: skip
        sec.blocks.append(Table(
            f"self-instruct-diversity-{key}",
            f"Diversity of dataset {key}'s instructions against the seeds. ROUGE-L: the highest "
            f"against a seed instruction other than itself; '≥ {thr:g}': share at or above the "
            "filter's threshold.",
            ["Instructions", "n", "Distinct", "Leading words", "Most common", "distinct-1",
             "distinct-2", "ROUGE-L mean", "median", f"≥ {thr:g}"],
            drows, pd.DataFrame(data),
        ))  # fmt: skip
        sec.blocks.append(F.figure(
            f"self-instruct-rouge-{key}",
            f"ROUGE-L of dataset {key}'s instructions against the nearest seed instruction, "
            "share per tenth; dashed: the filter's threshold.",
            hist_figure(div, thr, f"Self-Instruct {key}: similarity to the seeds"),
        ))  # fmt: skip
    return sec
