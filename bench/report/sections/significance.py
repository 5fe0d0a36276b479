"""Which methods of a cell can be told apart: paired tests over the test examples (each
example's score averaged over a method's seeds first; bench.report.stats.paired), and whether
the cell has any task-metric signal at all."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench import methods
from bench.report.stats import RESAMPLES, Paired, paired, proportion_ci

ALPHA = 0.05  # "cannot be told apart from the best": the paired test's p >= ALPHA


@dataclass(frozen=True)
class CellTests:
    best: str | None  # highest mean quality after fine-tuning
    vs_best: dict[str, Paired]
    vs_baseline: dict[str, Paired]  # vs full fine-tuning (methods.baseline())
    vs_base: dict[str, Paired]  # after vs before fine-tuning, on the same test examples
    signal: bool  # some method beats the base beyond the base's 95% interval
    base_high: float  # upper end of the base model's Wilson interval
    means: dict[str, float]  # mean task score after fine-tuning, over examples and seeds

    def beats_base(self, label: str) -> bool:
        """The issue's bar: mean after fine-tuning above the upper end of the base's interval."""
        return label in self.means and self.means[label] > self.base_high


def per_seed(rows: pd.DataFrame, side: str = "after") -> list[list[float]]:
    """Per-example scores of each of the runs (seeds) in `rows`."""
    col = f"quality.per_example.{side}.score"
    if col not in rows:
        return []
    return [list(map(float, v)) for v in rows[col] if isinstance(v, list) and v]


def _test(a: list[list[float]], b: list[list[float]]) -> Paired | None:
    if not a or not b or len(a[0]) != len(b[0]):
        return None  # not measured per example (older records), or other test examples
    return paired(a, b)


def cell_tests(per: dict[str, tuple[pd.DataFrame, Any, int]]) -> CellTests:
    scores = {k: per_seed(rows) for k, (rows, _, _) in per.items()}
    means = {k: sum(map(sum, v)) / sum(map(len, v)) for k, v in scores.items() if v}
    best = max(means, key=lambda k: (means[k], k)) if means else None
    vs_best = {k: t for k in means if best and (t := _test(scores[k], scores[best])) is not None}
    ref = methods.baseline()
    vs_baseline = {k: t for k in means if ref in means and k != ref
                   and (t := _test(scores[k], scores[ref])) is not None}  # fmt: skip
    vs_base = {k: t for k, (rows, _, _) in per.items() if k in means
                and (t := _test(scores[k], per_seed(rows, "before"))) is not None}  # fmt: skip
    base = next((per_seed(r, "before")[:1] for r, _, _ in per.values() if per_seed(r, "before")),
                [])  # fmt: skip
    if base and all(x in (0.0, 1.0) for x in base[0]):
        high = proportion_ci(int(sum(base[0])), len(base[0]))[1]
    else:
        high = math.nan
    signal = bool(means) and math.isfinite(high) and max(means.values()) > high
    return CellTests(best, vs_best, vs_baseline, vs_base, signal, high, means)


def mark(t: CellTests, label: str) -> str:
    """Display cell: "best", "≈ best (p=…)" when the paired test cannot tell it apart, else the
    difference with its interval and p."""
    if label == t.best:
        return "best"
    p = t.vs_best.get(label)
    if p is None:
        return "–"
    if p.p >= ALPHA:
        return f"≈ best (p={p.p:.2f})"
    return f"{p.diff:+.3f} [{p.low:+.3f}, {p.high:+.3f}] p={p.p:.3g}"


def csv_fields(t: CellTests, label: str) -> dict[str, Any]:
    out: dict[str, Any] = {"best": label == t.best, "signal": t.signal,
                           "beats_base": t.beats_base(label)}  # fmt: skip
    for name, tests in (("best", t.vs_best), ("baseline", t.vs_baseline), ("base", t.vs_base)):
        p = tests.get(label)
        out |= {f"diff_vs_{name}": p.diff if p else math.nan,
                f"diff_vs_{name}_low": p.low if p else math.nan,
                f"diff_vs_{name}_high": p.high if p else math.nan,
                f"p_vs_{name}": p.p if p else math.nan}  # fmt: skip
    out["indistinguishable_from_best"] = label == t.best or (
        label in t.vs_best and t.vs_best[label].p >= ALPHA
    )
    return out


CSV_KEYS = ["best", "signal", "beats_base", "indistinguishable_from_best"] + [
    f"{k}_vs_{n}{s}" for n in ("best", "baseline", "base") for k, s in
    (("diff", ""), ("diff", "_low"), ("diff", "_high"), ("p", ""))
]  # fmt: skip

METHOD_NOTE = (
    f"Paired tests: each test example's score is averaged over a method's seeds, then the "
    f"methods' per-example differences get a percentile-bootstrap 95% interval and a two-sided "
    f"sign-flip permutation p-value (scipy.stats, {RESAMPLES} resamples each, fixed seed). "
    f"'≈ best' marks methods the test cannot tell apart from the cell's best (p ≥ {ALPHA})."
)
