"""Seed statistics and Pareto fronts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


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
