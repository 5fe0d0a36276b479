"""The report's opening and closing: per cell, the best methods on quality, forgetting, memory
and speed with a heatmap of ranks; whether every method learned; generated Limitations.

Every sentence here is computed from the records: change the numbers and the words change."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from bench.report import figures as F
from bench.report.doc import DASH, Note, Section, Table, num, stat
from bench.report.notes import model_notes
from bench.report.prepare import Data, cell_of, concurrency, first, machines, stat_of
from bench.report.sections import significance as sig
from bench.report.sections.leaderboards import PerLabel, cell_view
from bench.report.sections.selection import choices, edge_note
from bench.report.stats import Stat

# Heatmap columns: (stat key of leaderboards.METRICS, column name, higher is better).
RANKED: list[tuple[str, str, bool]] = [
    ("quality_after", "task metric", True),
    ("answer_bpb_after", "answer bits/byte", False),
    ("nll_bpb_delta", "Δ general bits/byte", False),
    ("probe_drop", "probe drop", False),
    ("degeneration_after", "degeneration", False),
    ("hallucination_rate_after", "hallucination", False),
    ("peak_memory_bytes", "peak memory", False),
    ("train_tokens_per_s", "train tok/s", True),
    ("inference_tokens_per_s", "inference tok/s", True),
    ("trainable_params", "trainable params", False),
]


@dataclass(frozen=True)
class Best:
    """The best method on one measure, and the methods whose intervals reach it."""

    best: str | None
    ties: list[str]
    how: str  # how ties were decided, for the sentence

    def text(self, fmt: Mapping[str, str]) -> str:
        if self.best is None:
            return DASH
        out = f"{self.best} ({fmt[self.best]})"
        return out + (f"; ≈ {', '.join(self.ties)}" if self.ties else "")


def _overlap(a: Stat, b: Stat) -> bool:
    return all(math.isfinite(x) for x in (a.half, b.half)) and a.low <= b.high and b.low <= a.high


def best_by_interval(stats: Mapping[str, Stat], higher: bool) -> Best:
    """Best mean; ties = methods whose 95% t-intervals overlap the best's (none when n < 2)."""
    have = {k: s for k, s in stats.items() if math.isfinite(s.mean)}
    if not have:
        return Best(None, [], "")
    best = (max if higher else min)(have, key=lambda k: have[k].mean)
    ties = [k for k, s in have.items() if k != best and _overlap(s, have[best])]
    return Best(best, ties, "95% t-intervals over seeds overlap the best's")


def best_quality(per: PerLabel, tests: sig.CellTests) -> tuple[Best, str]:
    """On the task metric (paired test) when the cell has signal, else on answer bits/byte."""
    if tests.best is not None and tests.signal:
        ties = [k for k, t in tests.vs_best.items() if k != tests.best and t.p >= sig.ALPHA]
        return Best(tests.best, ties, f"paired test p ≥ {sig.ALPHA}"), "quality_after"
    stats = {k: s["answer_bpb_after"] for k, (rows, s, _) in per.items() if len(rows)}
    return best_by_interval(stats, higher=False), "answer_bpb_after"


def _fmt(per: PerLabel, key: str, kind: str = "num") -> dict[str, str]:
    return {k: stat(s[key], kind) for k, (rows, s, _) in per.items() if len(rows)}


def _forget_key(per: PerLabel) -> str:
    ranked = [s for rows, s, _ in per.values() if len(rows)]
    return "nll_bpb_delta" if ranked and all(s["nll_bpb_delta"].n for s in ranked) else "nll_delta"


def summary(d: Data) -> Section:
    rows, data, blocks, heat = [], [], [], {}
    for model, task in d.cells:
        per, tests = cell_view(d, model, task)
        per = {k: v for k, v in per.items() if len(v[0])}  # ranked methods only
        if not per:
            continue
        metric = first(cell_of(d.df, model, task), "quality.metric") or "quality"
        q, q_key = best_quality(per, tests)
        fk = _forget_key(per)
        forget = best_by_interval({k: s[fk] for k, (_, s, _) in per.items()}, higher=False)
        memory = best_by_interval(
            {k: s["peak_memory_bytes"] for k, (_, s, _) in per.items()}, higher=False
        )
        speed = best_by_interval(
            {k: s["train_tokens_per_s"] for k, (_, s, _) in per.items()}, higher=True
        )
        beat = [k for k in per if tests.beats_base(k)]
        n = sorted({len(v[0]) for v in per.values()})
        n_txt = str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"
        rows.append([
            model, task, n_txt,
            q.text(_fmt(per, q_key)) + ("" if q_key == "quality_after" else " (bits/byte)"),
            forget.text(_fmt(per, fk)), memory.text(_fmt(per, "peak_memory_bytes", "bytes")),
            speed.text(_fmt(per, "train_tokens_per_s", "sig")), f"{len(beat)} of {len(per)}",
        ])  # fmt: skip
        data.append({"model": model, "task": task, "n": n_txt, "quality_by": q_key,
                     "quality_best": q.best, "quality_ties": ",".join(q.ties),
                     "forgetting_by": fk, "forgetting_best": forget.best,
                     "forgetting_ties": ",".join(forget.ties), "memory_best": memory.best,
                     "memory_ties": ",".join(memory.ties), "speed_best": speed.best,
                     "speed_ties": ",".join(speed.ties), "beat_base": len(beat),
                     "ranked": len(per)})  # fmt: skip
        blocks.append(_verdict(model, task, metric, per, tests, q, q_key))
        heat[f"{model} × {task}"] = _ranks(per)
    sec = Section("Summary", "summary", [])
    if not rows:
        sec.blocks.append(Note("No fully evaluated, successful runs yet: nothing to summarise."))
        return sec
    sec.blocks.append(
        "Per model and task: the best method on each axis, and after '≈' the methods that "
        "cannot be told apart from it (quality: paired test over test examples and seeds, "
        f"p ≥ {sig.ALPHA}; the other axes: overlapping 95% t-intervals over seeds). Quality is "
        "the task metric, or answer bits per byte where no method beats the base on the task "
        "metric. Forgetting is the change in bits per byte on held-out general text. Runs "
        "flagged as failing to learn are not ranked."
    )
    sec.blocks.append(Table(
        "summary", "Best methods per cell (mean ± 95% t-interval).",
        ["Model", "Task", "n", "Quality", "Forgetting", "Peak memory", "Train tok/s",
         "Beat the base"], rows, pd.DataFrame(data),
    ))  # fmt: skip
    sec.blocks += blocks
    sec.blocks.append(F.figure(
        "summary_ranks",
        "Rank of each method's mean on each measure within its cell (1 = best, shown in the "
        "square; colour: rank scaled to 0 = best … 1 = worst; ties share the mean rank). Ranks "
        "of means only: for what the intervals can tell apart, see the table above and the "
        "leaderboards. Blank: not measured.",
        F.rank_heatmap(heat, [name for _, name, _ in RANKED]),
    ))  # fmt: skip
    return sec


def _verdict(
    model: str, task: str, metric: str, per: PerLabel, tests: sig.CellTests, q: Best, q_key: str
) -> str:
    cell = f"On {model} × {task}"
    base = f"the base model's {metric} upper 95% bound {num(tests.base_high)}"
    beat = [k for k in per if tests.beats_base(k)]
    miss = [k for k in per if k not in beat]
    if q_key == "quality_after":
        s = per[q.best][1]["quality_after"] if q.best else None
        head = f"{cell}, {q.best} has the best {metric} ({stat(s) if s else DASH})"
        head += (f"; {', '.join(q.ties)} cannot be told apart from it." if q.ties
                 else "; every other method is worse by the paired test.")  # fmt: skip
    else:
        head = (f"{cell}, no method beats the base beyond its interval on {metric}; by answer "
                f"bits per byte {q.best} is best")  # fmt: skip
        head += f" (≈ {', '.join(q.ties)})." if q.ties else "."
    tail = (f" {len(beat)} of {len(per)} ranked methods beat {base}"
            + (f"; not: {', '.join(miss)}." if miss else "."))  # fmt: skip
    return head + tail


def _ranks(per: PerLabel) -> dict[str, list[float]]:
    """Per method, its rank on each RANKED measure (NaN where unmeasured)."""
    from scipy.stats import rankdata

    labels = list(per)
    out = {k: [math.nan] * len(RANKED) for k in labels}
    for j, (key, _, higher) in enumerate(RANKED):
        vals = {k: per[k][1][key].mean for k in labels if math.isfinite(per[k][1][key].mean)}
        if not vals:
            continue
        r = rankdata([-v if higher else v for v in vals.values()], method="average")
        for k, rank in zip(vals, r, strict=True):
            out[k][j] = float(rank)
    return out


# ---------------------------------------------------------------------- does every method learn


def learned(d: Data) -> Section:
    """Item 7's evidence: per cell and method, after vs before on the same test examples."""
    sec = Section("Does every method learn?", "learned", [
        "Each method against the base model on the same test examples: the paired difference "
        "after − before of the task metric (percentile bootstrap 95% interval, sign-flip "
        "permutation p), and the issue's bar, a mean after fine-tuning above the upper end of "
        "the base model's 95% Wilson interval. Answer bits per byte moves before the task "
        "metric does. A method that does not clear the bar has its whole learning-rate grid "
        "in 'Hyperparameter selection'.",
    ])  # fmt: skip
    rows, data, misses = [], [], []
    for model, task in d.cells:
        per, tests = cell_view(d, model, task)
        for k, (g, s, _) in per.items():
            if not len(g):
                continue
            t = tests.vs_base.get(k)
            beats = tests.beats_base(k)
            if not beats:
                misses.append(f"{k} on {model} × {task}")
            rows.append([
                model, task, k, str(len(g)),
                f"{num(s['quality_before'].mean)} → {stat(s['quality_after'])}",
                f"{t.diff:+.3f} [{t.low:+.3f}, {t.high:+.3f}] p={t.p:.3g}" if t else DASH,
                "yes" if beats else "no",
                f"{num(stat_of(g, 'quality.answer_bpb_before').mean)} → "
                f"{stat(s['answer_bpb_after'])}",
                f"{num(stat_of(g, 'validation.loss_before').mean)} → "
                f"{stat(stat_of(g, 'd.val_loss_after'))}",
            ])  # fmt: skip
            data.append({"model": model, "task": task, "method": k, "n": len(g),
                         "beats_base": beats, "base_high": tests.base_high,
                         **{f: getattr(t, f) if t else math.nan
                            for f in ("diff", "low", "high", "p")}})  # fmt: skip
    if not rows:
        sec.blocks.append(Note("No fully evaluated runs yet."))
        return sec
    flagged = [f"{r['label']} on {r['model']} × {r['task']} (seed {r['seed']})"
               for _, r in d.flagged.iterrows()]  # fmt: skip
    verdict = ("Every ranked method beats the base beyond its interval in every cell."
               if not misses else
               f"{len(misses)} (method, cell) pair(s) do not beat the base beyond its interval "
               f"at this budget: {'; '.join(misses)}.")  # fmt: skip
    if flagged:
        verdict += f" Not ranked, failed to learn: {'; '.join(flagged)}."
    sec.blocks.append(verdict)
    sec.blocks.append(Table(
        "learned", "Each method against the base model (n = seeds).",
        ["Model", "Task", "Method", "n", "Metric before → after", "Paired Δ vs base",
         "Beats base", "Answer bits/byte", "Val loss"], rows, pd.DataFrame(data),
    ))  # fmt: skip
    return sec


# -------------------------------------------------------------------------------- limitations


def limitations(d: Data) -> Section:
    items: list[str] = []
    ok = d.ok
    if not ok.empty:
        n = ok.groupby(["model", "task", "label"])["seed"].nunique()
        from scipy import stats  # lazily, as in bench.report.stats

        seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
        items.append(f"Seeds: {seeds} per (method, cell); " + (
            "with one seed there is no interval over seeds." if n.min() < 2 else
            f"with n = {n.min()} a 95% t-interval is wide (t = "
            f"{stats.t.ppf(0.975, n.min() - 1):.2f}), so only large differences between seed "
            "means are resolved."))  # fmt: skip
        for model, task in d.cells:
            nt = cell_of(d.df, model, task)["quality.n_test"].max()
            _, tests = cell_view(d, model, task)
            if pd.notna(nt):
                items.append(f"{model} × {task}: {int(nt)} test examples; the base model's "
                             f"95% interval reaches {num(tests.base_high)}.")  # fmt: skip
            if tests.best is not None and not tests.signal:
                items.append(f"{model} × {task} has no task-metric signal: it is ranked by "
                             "answer bits per byte.")  # fmt: skip
    if edges := [c for c in choices(d) if c.edge]:
        items.append(edge_note(edges) + " These grids were not widened in this sweep: every "
                     "method keeps the same 3-point budget, and the choices are flagged "
                     "instead.")  # fmt: skip
    if len(d.flagged):
        items.append(f"{len(d.flagged)} chosen run(s) failed to learn and are not ranked.")
    for model, per in d.probes.items():
        if dropped := [p for p, v in per.items() if not v.kept]:
            items.append(f"{model}: probes at chance, left out of forgetting: "
                         f"{', '.join(dropped)}.")  # fmt: skip
    busy, timed = concurrency(d.df)
    threads = sorted({int(t) for t in d.df.get("env.threads", pd.Series()).dropna()})
    cores = sorted({int(c) for c in d.df.get("env.cpu_count", pd.Series()).dropna()})
    if timed:
        spread = _spread(ok)
        items.append(
            f"Timing: {busy} of {timed} runs overlapped another run in time (training or "
            f"evaluation beside a second job), with {', '.join(map(str, threads)) or '?'} "
            f"torch thread(s) of {', '.join(map(str, cores)) or '?'} cores. Throughput and "
            "step times include that contention"
            + (f"; training tokens/s varies up to {spread:.0%} (max/min − 1) across the seeds "
               "of one method and cell." if math.isfinite(spread) else ".")
        )  # fmt: skip
    flags = sorted({str(f) for f in d.df.get("env.cpu_flags", pd.Series()).dropna()})
    if flags:
        several = (" The runs span more than one machine: tokens/s compares only between runs "
                   "of one; where one table mixes machines, its note says which."
                   if len(machines(d.df)) > 1
                   else "")  # fmt: skip
        items.append(f"CPU flags of the runs: {'; '.join(flags)} (bf16 speed depends on them)."
                     + several)  # fmt: skip
    for model in dict.fromkeys(m for m, _ in d.cells):
        note = model_notes(model, first(d.df[d.df["model"] == model], "model_info.notes"))
        if "dequantized" in note.lower():
            items.append(f"{model}: {note.rstrip('.')}. Every method starts from these weights.")
    if len({m for m, _ in d.cells}) == 1:
        items.append("One model size: nothing here says how the methods scale.")
    steps = d.df["budget.steps"].dropna() if "budget.steps" in d.df else pd.Series()
    if len(steps):
        span = f"{int(steps.min())}" + (
            "" if steps.min() == steps.max() else f"–{int(steps.max())}"
        )
        items.append(f"One small training budget ({span} steps): rankings at a larger budget "
                     "may differ.")  # fmt: skip
    from bench.results import TRAIN_VERSION

    old = [c for c in d.ok.get("config", pd.Series(dtype=object))
           if isinstance(c, dict) and (c.get("train_version") or 1) < TRAIN_VERSION]  # fmt: skip
    if old:
        items.insert(0, f"{len(old)} of {len(d.ok)} runs were trained by training code version "
                     f"1, which cut every prompt that fit in seq_len to its last seq_len − "
                     "len(answer) − len(prompt) tokens for training and validation (test "
                     "generation saw whole prompts): their numbers are not comparable with "
                     f"version {TRAIN_VERSION} runs, and are superseded by them.")  # fmt: skip
    dirty = int((d.df.get("env.git_dirty") == True).sum())  # noqa: E712 (nullable boolean)
    if dirty:
        items.append(f"{dirty} run(s) came from a working tree with uncommitted changes.")
    return Section("Limitations", "limitations", [items or ["None found in the records."]])


def _spread(ok: pd.DataFrame) -> float:
    if ok.empty or "train.tokens_per_s" not in ok:
        return math.nan
    g = ok.groupby(["model", "task", "label"])["train.tokens_per_s"]
    r = (g.max() / g.min() - 1)[g.count() > 1]
    return float(r.max()) if len(r) else math.nan
