"""Remedies as variants of a setting (issue 16): runs whose label adds a training stream
(`lora[replay=0.1]`), a tag (`lora@lr/3`), a decoding (`lora{penalty}`) or a vocabulary
expansion (`full+vocab5000`, issue 17) to a setting's label are compared with the runs of that
bare setting, and the learning-forgetting front draws them.

A remedy *moves a method along its front* when it trades task quality for forgetting (or back)
beyond both intervals, and *moves the front* when it improves one without a measurable loss in
the other. Quality differences are paired over test examples (bench.report.stats.paired);
forgetting differences (general-text bits per byte, after − before) are paired over seeds, with
a Student-t interval. Every sentence is computed from the records."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import matplotlib as mpl
import pandas as pd

from bench.report import figures as F
from bench.report.doc import Section
from bench.report.prepare import Data, cell_of
from bench.report.render import anchor
from bench.report.sections.significance import ALPHA
from bench.report.stats import Stat, mean_ci

_SUFFIX = re.compile(r"[\[@{]|\+vocab")  # not a bare '+': `lora:targets=q+k` is one setting
_DECODING = re.compile(r"\{[^}]*\}$")  # a decoding's suffix, always last (results.run_label)
FORGET = "d.nll_bpb_delta"


def base_label(label: str) -> str:
    """The setting a remedy label varies: 'lora:r=64[replay=0.1]@lr/3' -> 'lora:r=64',
    'full+vocab5000' -> 'full' (a vocabulary expansion, bench/vocab.py)."""
    return _SUFFIX.split(label, 1)[0]


def is_remedy(label: str) -> bool:
    return base_label(label) != label


def run_keys(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a remedy changes besides the method's settings: the stream, rate, steps, decoding."""
    from bench import stream, vocab

    cfg = cfg if isinstance(cfg, Mapping) else {}
    out: dict[str, Any] = {f"data.{k}": v for k, v in stream.active(cfg.get("data")).items()}
    out |= {f"vocab.{k}": v for k, v in vocab.active(cfg.get("vocab")).items() if k != "version"}
    out["lr"] = (cfg.get("train") or {}).get("lr")
    out["steps"] = (cfg.get("budget") or {}).get("steps")
    out["decoding"] = ((cfg.get("eval") or {}).get("decoding") or {}).get("name", "greedy")
    return out


def remedy_comparisons(ok: pd.DataFrame) -> list[Any]:
    """Each remedy label of a cell against its bare setting, where that setting ran here."""
    from bench.report.sections.studies import Comparison

    labels = sorted({str(x) for x in ok["label"]})
    cfgs = {k: ok[ok["label"] == k]["config"].iloc[0] for k in labels if "config" in ok}
    out = []
    for v in (x for x in labels if is_remedy(x)):
        # a decoding is compared with greedy decoding of the same trained model where it ran
        # here (`lora[dup=0.5]{penalty}` with `lora[dup=0.5]`), so the stream is not confounded
        greedy = _DECODING.sub("", v)
        ref = greedy if greedy != v and greedy in labels else base_label(v)
        if ref not in labels:
            continue
        a, b = run_keys(cfgs.get(ref)), run_keys(cfgs.get(v))
        changed = tuple((k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
                        if a.get(k) != b.get(k))  # fmt: skip
        knob = f"{ref}: " + (", ".join(k for k, _, _ in changed) or "(no recorded difference)")
        out.append(Comparison(knob, ref, v, changed))
    return out


def by_seed(ok: pd.DataFrame, label: str, column: str) -> pd.Series:
    """A label's mean of `column` per seed (seeds where it is measured)."""
    rows = ok[ok["label"] == label]
    return rows.groupby("seed")[column].mean().dropna() if column in rows else pd.Series()


def seed_pairs(r: pd.Series, v: pd.Series) -> Stat:
    """v − r, paired by seed (the index), with its t-interval over the seeds both have."""
    return mean_ci([v[s] - r[s] for s in sorted(set(r.index) & set(v.index))])


def seed_diff(ok: pd.DataFrame, ref: str, var: str, column: str) -> Stat:
    """var − ref in `column`, paired by seed (same seed, same held-out text), with its
    t-interval over the seeds both have."""
    return seed_pairs(by_seed(ok, ref, column), by_seed(ok, var, column))


def sign95(lo: float, hi: float) -> int:
    """+1 / -1 when a 95% interval excludes 0 on that side, 0 when it does not (or is unknown)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


_MOVES = {  # (quality sign, forgetting sign): +1 / -1 beyond the 95% interval, 0 within it
    (0, 0): "no measurable move",
    (1, 0): "moves the front: higher quality, no measurable change in forgetting",
    (0, -1): "moves the front: less forgetting, no measurable change in quality",
    (1, -1): "moves the front: higher quality and less forgetting",
    (-1, -1): "moves along the front: less forgetting for lower quality",
    (1, 1): "moves along the front: higher quality for more forgetting",
    (-1, 0): "lower quality, no measurable change in forgetting",
    (0, 1): "more forgetting, no measurable change in quality",
    (-1, 1): "worse on both",
}


def front_move(dq: tuple[float, float] | None, df: Stat) -> str:
    """How a remedy moves on the learning-forgetting plane, from the two 95% intervals:
    quality (higher is better) and forgetting (lower is better)."""
    return _MOVES[(sign95(*dq) if dq else 0, sign95(df.low, df.high))]


def quality_word(q: Any) -> str:
    """A paired task-metric difference (stats.Paired, or None) in a word, by its test."""
    if q is None or q.p >= ALPHA:
        return "not distinguishable"
    return "better" if q.diff > 0 else "worse"


def _paired(q: Any, metric: str) -> str:
    return f"Δ {metric} {q.diff:+.3f} [{q.low:+.3f}, {q.high:+.3f}]"


def quality_text(q: Any, metric: str) -> str:
    if q is None:
        return f"no paired {metric}"
    return f"{_paired(q, metric)}, {quality_word(q)} (p={q.p:.2g})"


def ival(s: Stat) -> str:
    return f"{s.mean:+.3f} [{s.low:+.3f}, {s.high:+.3f}]" if s.n > 1 else f"{s.mean:+.3f}"


def remedy_sentence(e: Any, ok: pd.DataFrame) -> str:
    c = e.comparison
    df = seed_diff(ok, c.reference, c.variant, FORGET)
    q = e.quality if e.by_quality else None
    dq = (q.low, q.high) if q else None
    qtext = _paired(q, e.metric) if q else f"no {e.metric} signal beyond the base"
    return (f"{c.variant} vs {c.reference}: {qtext}; Δ general bits/byte {ival(df)} "
            f"(n={df.n} seeds): {front_move(dq, df)}.")  # fmt: skip


def _point(rows: pd.DataFrame) -> tuple[Stat, Stat]:
    return mean_ci(rows["d.quality_gain"]), mean_ci(rows[FORGET])


def equal_gain(ok: pd.DataFrame, a: str, b: str) -> str | None:
    """Method `a` against method `b` at equal quality gain: of every pair of their settings
    whose gain intervals overlap, the closest pair in mean gain, and their forgetting."""
    pts = {str(k): _point(g) for k, g in ok.groupby("label")}
    best = None
    for la, (ga, fa) in pts.items():
        for lb, (gb, fb) in pts.items():
            if ok[ok["label"] == la]["method"].iloc[0] != a:
                continue
            if ok[ok["label"] == lb]["method"].iloc[0] != b or ga.n < 2 or gb.n < 2:
                continue
            if ga.low <= gb.high and gb.low <= ga.high:  # gains cannot be told apart
                gap = abs(ga.mean - gb.mean)
                if best is None or gap < best[0]:
                    best = (gap, la, lb, ga, gb, fa, fb)
    if best is None:
        return None
    _, la, lb, ga, gb, fa, fb = best
    if fa.low <= fb.high and fb.low <= fa.high:
        word = f"{a} and {b} cannot be told apart in forgetting (overlapping 95% intervals)"
    else:
        word = f"{a} forgets {'less' if fa.mean < fb.mean else 'more'} than {b}"
    gains = f"{la} {ga.mean:+.3f} ± {ga.half:.3f} vs {lb} {gb.mean:+.3f} ± {gb.half:.3f}"
    forget = f"{fa.mean:+.3f} ± {fa.half:.3f} vs {fb.mean:+.3f} ± {fb.half:.3f}"
    return (f"At equal quality gain ({gains}), {word}: general bits/byte {forget} "
            f"(n={ga.n}, {gb.n} seeds).")  # fmt: skip


def fronts(d: Data, effects: Mapping[tuple[str, str], list[Any]]) -> list[Section]:
    """The learning-forgetting plane per cell with a remedy, and its generated sentences."""
    out = []
    for model, task in d.cells:
        ok = cell_of(d.ok, model, task)
        found = [e for e in effects.get((model, task), []) if is_remedy(e.comparison.variant)]
        if ok.empty or not found:
            continue
        sec = Section(f"Learning and forgetting: {model} × {task}",
                      anchor(f"fronts {model} {task}"), level=3)  # fmt: skip
        sec.blocks.append(
            "Each setting's task-quality gain (after − before) against its forgetting "
            "(general-text bits per byte, after − before; lower is better), mean and 95% "
            "t-interval over seeds. Each remedy against its bare setting: quality paired over "
            "test examples, forgetting paired over seeds."
        )
        sec.blocks.append([remedy_sentence(e, ok) for e in found])
        names = sorted({str(m) for m in ok["method"]})
        pairs = [s for a in names for b in names if a < b and (s := equal_gain(ok, a, b))]
        sec.blocks.append(pairs or ["No two methods here reach gains that cannot be told apart."])
        labels = sorted({str(x) for x in ok["label"]})
        pts = {k: _point(ok[ok["label"] == k]) for k in labels}
        sec.blocks.append(F.figure(
            f"front-{model}-{task}",
            f"Learning against forgetting on {model} × {task}: mean and 95% t-interval.",
            _front_figure(pts, d.styles, f"{model} × {task}"),
        ))  # fmt: skip
        out.append(sec)
    return out


def _front_figure(
    pts: Mapping[str, tuple[Stat, Stat]], styles: Mapping[str, tuple[str, str]], title: str
) -> Any:
    with mpl.rc_context(F._RC):
        fig, (ax,) = F._panels((8.4, 4.2), [0.7])
        for label, (g, f) in pts.items():
            color, marker = styles.get(label, styles.get(base_label(label), ("0.3", "o")))
            ax.errorbar(f.mean, g.mean, xerr=f.half if f.n > 1 else None,
                        yerr=g.half if g.n > 1 else None, fmt=marker, color=color,
                        capsize=2, label=label)  # fmt: skip
        ax.set_xlabel("Δ general bits/byte (forgetting)")
        ax.set_ylabel("quality gain")
        ax.axvline(0, color="0.6", lw=0.8)
        F._legend_right(fig, [ax], 2.4)
        fig.suptitle(f"Learning and forgetting: {title}")
        return fig
