"""Seed statistics, paired tests over test examples (scipy.stats), and Pareto fronts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stat:
    """Mean over seeds with a two-sided 95% Student-t interval (``half`` = half-width)."""

    n: int
    mean: float
    sd: float  # sample standard deviation (ddof=1)
    half: float  # t_{0.975, n-1} * sd / sqrt(n); NaN when n < 2

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


def mean_ci(values: Iterable[float], level: float = 0.95) -> Stat:
    """Mean and t-interval of the finite values (NaN = not measured, ignored)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Stat(0, math.nan, math.nan, math.nan)
    mean = math.fsum(xs) / n
    if n == 1:
        return Stat(1, mean, math.nan, math.nan)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    from scipy import stats  # lazily: importing scipy.stats costs a second or two

    t = float(stats.t.ppf(0.5 + level / 2, n - 1))
    return Stat(n, mean, sd, t * sd / math.sqrt(n))


def pareto_front(
    points: Sequence[tuple[float, float]], *, minimize_x: bool = True, maximize_y: bool = True
) -> list[int]:
    """Indices of the non-dominated points (cost x, quality y), sorted by x.

    A point is dominated when another is at least as good on both axes and better on one.
    Points with a NaN coordinate are never on the front.
    """
    sx = 1.0 if minimize_x else -1.0
    sy = -1.0 if maximize_y else 1.0  # turn both into "smaller is better"
    ok = [i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    keyed = {i: (sx * points[i][0], sy * points[i][1]) for i in ok}
    front = []
    for i in ok:
        xi, yi = keyed[i]
        dominated = any(
            xj <= xi and yj <= yi and (xj < xi or yj < yi)
            for j, (xj, yj) in keyed.items()
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], points[i][1], i))


# ----------------------------------------------------------------------------- paired tests

RESAMPLES = 9999  # bootstrap and permutation resamples: stated in the report
SEED = 0  # fixed: a report is a pure function of its results folder


@dataclass(frozen=True)
class Paired:
    """A - B over test examples shared by both, each example averaged over the seeds first."""

    n_examples: int
    n_seeds: int  # seeds both have (per-example means use these)
    diff: float  # mean of A - B
    low: float  # 95% percentile-bootstrap interval of the mean difference
    high: float
    p: float  # two-sided paired permutation (sign-flip) test of mean difference 0


def example_means(per_seed: Sequence[Sequence[float]]) -> list[float]:
    """Per-example mean over seeds ([seed][example] -> [example])."""
    n = len(per_seed[0])
    if any(len(s) != n for s in per_seed):
        raise ValueError("seeds disagree on the number of test examples")
    return [math.fsum(s[i] for s in per_seed) / len(per_seed) for i in range(n)]


def paired(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Paired:
    """Paired comparison of two methods' per-example scores ([seed][example], same examples in
    the same order): scipy's paired bootstrap for the interval, and its paired permutation test
    (random sign flips of the per-example differences) for the p-value."""
    import numpy as np
    from scipy import stats

    x, y = np.asarray(example_means(a)), np.asarray(example_means(b))
    if x.shape != y.shape:
        raise ValueError(f"{x.size} vs {y.size} examples: a paired test needs the same ones")
    d = x - y
    n_seeds = min(len(a), len(b))
    if not d.any():  # identical: no resample can differ (scipy would warn on a zero spread)
        return Paired(d.size, n_seeds, 0.0, 0.0, 0.0, 1.0)

    def mean_diff(u: Any, v: Any, axis: int = -1) -> Any:
        return np.mean(u - v, axis=axis)

    rng = np.random.default_rng(SEED)
    common = {"vectorized": True, "n_resamples": RESAMPLES, "random_state": rng}
    boot = stats.bootstrap((x, y), mean_diff, paired=True, method="percentile", **common)
    test = stats.permutation_test((x, y), mean_diff, permutation_type="samples", **common)
    ci = boot.confidence_interval
    return Paired(d.size, n_seeds, float(d.mean()), float(ci.low), float(ci.high),
                  float(test.pvalue))  # fmt: skip


def proportion_ci(k: int, n: int) -> tuple[float, float]:
    """Wilson 95% interval of a share k/n (scipy's binomial test)."""
    from scipy import stats

    if n == 0:
        return math.nan, math.nan
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)
