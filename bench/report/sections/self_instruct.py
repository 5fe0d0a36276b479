"""Self-Instruct data against human data (issue 18), for folders with `self_instruct` or
`natural_instructions` runs: per method, a generated verdict on self-instruct data against the
same number of human-written examples on the same held-out test, and what each does to
forgetting and repetition against the base; after the dataset's yield and diversity
(sections/self_instruct_yield.py).

ROUGE-L is paired over the same test examples and seeds (bench.report.stats.paired), and only
when every run's `task_info.test_sha256` (the test split's fingerprint) and evaluation settings
agree; forgetting and repetition are paired over seeds (Student-t). A word ("better", "above
the base") is given only where the 95% interval excludes 0 (and, for paired ROUGE-L, p < 0.05);
otherwise "not distinguishable". Runs that failed to learn are left out, not ranked."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from bench import methods
from bench.report.doc import DASH, Note, Section, Table, stat
from bench.report.prepare import Data, cell_of, col
from bench.report.sections.remedies import by_seed, ival, seed_pairs, sign95
from bench.report.sections.self_instruct_yield import SI, yield_section
from bench.report.sections.significance import ALPHA
from bench.report.sections.studies import SCORE, example_scores, interval, paired_over
from bench.report.stats import Paired, Stat, mean_ci

HUMAN = "natural_instructions"
BEFORE = "quality.per_example.before.score"
FORGET = "d.nll_bpb_delta"
REP = "d.seq_rep_4_delta"  # seq-rep-4 of greedy continuations, after − before


def has_instruct(d: Data) -> bool:
    return bool(d.df["task"].isin([SI, HUMAN]).any())


# ------------------------------------------------------------------------------ the verdict


def same_test(rows: pd.DataFrame) -> str | None:
    """None when every run scored the same test examples under the same evaluation settings,
    else why the ROUGE-L scores must not be paired."""
    shas = rows["task_info.test_sha256"] if "task_info.test_sha256" in rows else pd.Series()
    if len(shas) < len(rows) or shas.isna().any():
        return "a record does not state its test split's fingerprint (task_info.test_sha256)"
    if shas.nunique() > 1:
        return f"the test examples differ ({', '.join(sorted(s[:12] for s in set(shas)))})"
    evals = {json.dumps((c or {}).get("eval"), sort_keys=True) for c in rows["config"]}
    return "the evaluation settings differ" if len(evals) > 1 else None


_WORD = {  # sign95 of an interval -> words, per comparison
    "data": {1: "self-instruct data is better", -1: "human data is better"},
    "forget": {1: "self-instruct data forgets more", -1: "self-instruct data forgets less"},
    "rep": {1: "self-instruct data repeats more", -1: "self-instruct data repeats less"},
    "base": {1: "above the base", -1: "below the base"},
}


def word(kind: str, low: float, high: float, p: float | None = None) -> str:
    """The verdict from a 95% interval: a direction only when it excludes 0 and, for a paired
    test, p < ALPHA as in the other sections (with a handful of examples a degenerate bootstrap
    interval can exclude 0 while p is large)."""
    sign = sign95(low, high) if p is None or p < ALPHA else 0
    if sign == 0:
        return "not distinguishable" if kind != "base" else "not distinguishable from the base"
    return _WORD[kind][sign]


def _vs_base(rows: pd.DataFrame) -> Paired | None:
    after, before = example_scores(rows, SCORE), example_scores(rows, BEFORE)
    return paired_over(after, before, sorted(set(after) & set(before)))


def _side(p: Paired | Stat | None) -> str:
    if p is None or (isinstance(p, Stat) and p.n == 0):
        return "not measured"
    if isinstance(p, Paired):
        return f"{interval(p)} ({word('base', p.low, p.high, p.p)})"
    return f"{ival(p)} ({word('base', p.low, p.high)})"


def _failed(bad: pd.DataFrame, task: str) -> str:
    seeds = ", ".join(str(s) for s in sorted(bad["seed"]))
    flags = ", ".join(sorted({f for fs in bad["flags"] for f in fs}))
    return f"{task} seed{'s' if len(bad) > 1 else ''} {seeds} ({flags})"


def method_verdict(d: Data, model: str, label: str, unpaired: str | None) -> tuple[str, str]:
    """(the answer in a few words, the method's sentences): self-instruct vs human data on
    ROUGE-L (paired over examples and seeds), each against the base, and forgetting and
    repetition (paired over seeds)."""
    arms = {t: cell_of(d.ok, model, t) for t in (SI, HUMAN)}
    si, hu = (a[a["label"] == label] for a in arms.values())
    bad = {t: cell_of(d.flagged, model, t) for t in (SI, HUMAN)}
    bad = {t: b[b["label"] == label] for t, b in bad.items()}
    failed = [_failed(b, t) for t, b in bad.items() if len(b)]
    if si.empty or hu.empty:
        which = SI if si.empty else HUMAN
        why = (f"{'; '.join(failed)} failed to learn, listed under 'Runs that failed to learn' "
               "and not ranked" if failed else f"no fully evaluated {which} run")  # fmt: skip
        return "not compared (failed to learn)" if failed else "not compared", (
            f"{label}: not compared: {why}."
        )
    head, answer = f"{label}: ", "not compared"
    if failed:
        head += f"left out, failed to learn: {'; '.join(failed)}. "
    if unpaired:
        quality = f"ROUGE-L not paired: {unpaired}"
    else:
        qs, qh = example_scores(si, SCORE), example_scores(hu, SCORE)
        seeds = sorted(set(qs) & set(qh))
        p = paired_over(qs, qh, seeds)
        answer = word("data", p.low, p.high, p.p) if p else answer
        quality = (
            f"self-instruct − human data Δ ROUGE-L {interval(p)}, {answer} "
            f"(p={p.p:.2g}, n={len(seeds)} seeds × {p.n_examples} examples)"
            if p
            else "no per-example ROUGE-L on shared seeds, so no paired test"
        )
    quality += (
        f"; against the base, self-instruct {_side(_vs_base(si))}, human {_side(_vs_base(hu))}."
    )
    out = [head + quality[0].upper() + quality[1:]]
    for kind, column, what in (("forget", FORGET, "Forgetting, Δ general bits/byte"),
                               ("rep", REP, "Repetition, Δ seq-rep-4")):  # fmt: skip
        diff = seed_pairs(by_seed(hu, label, column), by_seed(si, label, column))
        verdict = word(kind, diff.low, diff.high) if diff.n else "not measured"
        out.append(f"{what} (after − before): self-instruct {_side(mean_ci(si[column]))}, human "
                   f"{_side(mean_ci(hu[column]))}; self-instruct − human {ival(diff)}, {verdict} "
                   f"(n={diff.n} seeds).")  # fmt: skip
    return answer, " ".join(out)


def _table_rows(
    d: Data, model: str, labels: list[str], unpaired: str | None
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    rows, data = [], []
    both = pd.concat([cell_of(d.ok, model, t) for t in (SI, HUMAN)])
    tasks = [SI, HUMAN] if unpaired else [SI]  # one base row when both score the same test
    for t in tasks:
        g = both if not unpaired else both[both["task"] == t]
        s = mean_ci(g["quality.before"])
        name = "none (base model)" + (f", {t} test" if unpaired else "")
        rows.append(["base", name, str(g["seed"].nunique()), stat(s), DASH, DASH, DASH, DASH])
        data.append({"method": "base", "data": "none", "task": t, "n": g["seed"].nunique(),
                     "rougeL": s.mean, "rougeL_ci95": s.half})  # fmt: skip
    for label in labels:
        for t, name in ((SI, "self-instruct"), (HUMAN, "human (natural_instructions)")):
            g = both[(both["task"] == t) & (both["label"] == label)]
            bad = cell_of(d.flagged, model, t)
            n_bad = int((bad["label"] == label).sum())
            n = int(g["seed"].nunique())
            q, vb = mean_ci(g["quality.after"]), _vs_base(g) if len(g) else None
            f, r = mean_ci(g[FORGET]), mean_ci(g[REP])
            rows.append([label, name, str(n), stat(q, "num", n), interval(vb) if vb else DASH,
                         stat(f, "num", n), stat(r, "num", n), str(n_bad)])  # fmt: skip
            data.append({"method": label, "data": t, "task": t, "n": n, "rougeL": q.mean,
                         "rougeL_ci95": q.half, "vs_base": vb.diff if vb else math.nan,
                         "vs_base_low": vb.low if vb else math.nan,
                         "vs_base_high": vb.high if vb else math.nan,
                         "nll_bpb_delta": f.mean, "nll_bpb_delta_ci95": f.half,
                         "seq_rep_4_delta": r.mean, "seq_rep_4_delta_ci95": r.half,
                         "failed_to_learn": n_bad})  # fmt: skip
    return rows, data


def verdict_section(d: Data) -> Section:
    sec = Section("Self-Instruct data against human data", "self-instruct-verdict")
    sec.blocks.append(
        "Per method, training on the self-instruct pool against training on as many human-"
        "written natural_instructions examples, both evaluated on the same held-out subtasks; "
        "the base model (no fine-tuning) is every run's before-evaluation. ROUGE-L: "
        "self-instruct − human per test example, each averaged over the seeds both have, "
        "percentile-bootstrap 95% interval and sign-flip permutation p (scipy.stats). "
        "Forgetting (general-text bits per byte) and repetition (seq-rep-4 of greedy "
        "continuations), after − before: mean and 95% t-interval over seeds, and "
        "self-instruct − human paired by seed. A direction is named only where the 95% "
        f"interval excludes 0 (for paired ROUGE-L also p < {ALPHA}); otherwise 'not "
        "distinguishable'. Runs that failed to learn are left out, not ranked."
    )
    models = [m for m in dict.fromkeys(m for m, _ in d.cells)
              if {SI, HUMAN} <= set(d.df.loc[d.df["model"] == m, "task"])]  # fmt: skip
    if not models:
        sec.blocks.append(Note("No model has runs of both self_instruct and "
                               "natural_instructions here: nothing to compare."))  # fmt: skip
        return sec
    for model in models:
        done = d.df[(d.df["model"] == model) & d.df["task"].isin([SI, HUMAN])
                    & (d.df["status"] == "success")]  # fmt: skip
        unpaired = same_test(done) if len(done) else "no successful run"
        per_task = [set(done.loc[done["task"] == t, "label"]) for t in (SI, HUMAN)]
        labels = sorted(per_task[0] & per_task[1], key=methods.rank)
        if unpaired:
            sec.blocks.append(Note(f"{model}: ROUGE-L is not paired across the two tasks: "
                                   f"{unpaired}."))  # fmt: skip
        else:
            n, sha = int(done["task_info.n_test"].max()), done["task_info.test_sha256"].iloc[0]
            sec.blocks.append(f"{model}: every run of both tasks scored the same {n} test "
                              f"examples (test split sha256 {sha[:12]}) under the same "
                              "evaluation settings: paired.")  # fmt: skip
        if not labels:
            sec.blocks.append(Note(f"{model}: no method has successful runs on both tasks."))
            continue
        found = [method_verdict(d, model, k, unpaired) for k in labels]
        answers = "; ".join(f"{k}: {a}" for k, (a, _) in zip(labels, found, strict=True))
        sec.blocks.append(f"{model}: is self-generated data worth human data of equal size on "
                          f"the held-out tasks (ROUGE-L, 95% interval)? {answers}.")  # fmt: skip
        sec.blocks.append([s for _, s in found])
        rows, data = _table_rows(d, model, labels, unpaired)
        sec.blocks.append(Table(
            f"self-instruct-vs-human-{model}",
            f"{model}: each method trained on self-instruct and on human data. ROUGE-L and the "
            "Δ columns: mean ± 95% t-interval over seeds; 'vs base': paired over test examples "
            "(bootstrap 95%); failed: runs that failed to learn, left out.",
            ["Method", "Training data", "n", "ROUGE-L", "Δ vs base [95%]",
             "Δ general bits/byte", "Δ seq-rep-4", "Failed"],
            rows, pd.DataFrame(data),
        ))  # fmt: skip
    return sec


def _with_rep(d: Data) -> Data:
    """`d` with the repetition change each run made (after − before) as a column."""
    import dataclasses

    def add(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df[REP] = col(df, "repetition.after.seq_rep_4") - col(df, "repetition.before.seq_rep_4")
        return df

    return dataclasses.replace(d, ok=add(d.ok), flagged=add(d.flagged))


def self_instruct_sections(d: Data) -> list[Section]:
    d = _with_rep(d)
    return [yield_section(d), verdict_section(d)]
