"""The report's content model (sections of paragraphs, tables, figures) and number formatting.

Content is built once and rendered three ways (HTML, Markdown, LaTeX tables), so the formats
cannot disagree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from bench.report.stats import Stat

DASH = "–"  # shown for "not measured"
_NUMERIC = re.compile(r"^[-+−]?[0-9.,]")  # a cell that starts like a number


@dataclass
class Table:
    name: str  # file stem under tables/
    caption: str
    columns: list[str]
    rows: list[list[str]]  # display strings
    data: pd.DataFrame | None = None  # numbers for the CSV (default: the display strings)
    tex: bool = True  # also write tables/<name>.tex

    def aligns(self) -> list[str]:
        """'r' for columns of numbers (first column always 'l'), 'l' for text."""
        out = ["l"]
        for j in range(1, len(self.columns)):
            cells = [row[j] for row in self.rows if row[j] not in (DASH, "")]
            numeric = all(_NUMERIC.match(c) for c in cells)
            out.append("r" if numeric else "l")
        return out

    def frame(self) -> pd.DataFrame:
        if self.data is not None:
            return self.data
        return pd.DataFrame(self.rows, columns=self.columns, dtype="string")


@dataclass
class Figure:
    name: str  # file stem under figures/
    caption: str
    png: bytes = b""  # embedded in the HTML and written as figures/<name>.png
    pdf: bytes = b""  # written as figures/<name>.pdf (vector, for papers)


@dataclass
class Note:
    text: str  # a caveat the reader must not miss (rendered as a call-out)


Block = str | Table | Figure | Note | list[str]  # list = bullet list


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2


# ------------------------------------------------------------------------------ formatting


def finite(x: object) -> bool:
    try:
        return x is not None and x is not pd.NA and math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def num(x: object, digits: int = 3) -> str:
    """Fixed decimals, or 3 significant digits for large numbers; DASH when missing."""
    if not finite(x):
        return DASH
    v = float(x)  # type: ignore[arg-type]
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def sig(x: object, n: int = 3) -> str:
    if not finite(x):
        return DASH
    v = float(x)  # type: ignore[arg-type]
    if v == 0:
        return "0"
    if abs(v) >= 10 ** (n - 1):
        return f"{v:,.0f}"
    return f"{v:.{max(0, n - 1 - math.floor(math.log10(abs(v))))}f}"


def nbytes(x: object) -> str:
    if not finite(x):
        return DASH
    v = float(x)  # type: ignore[arg-type]
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(v) >= scale:
            return f"{sig(v / scale)} {unit}"
    return f"{v:.0f} B"


def count(x: object) -> str:
    """Parameter counts: 1.23M, 45.6k."""
    if not finite(x):
        return DASH
    v = float(x)  # type: ignore[arg-type]
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{sig(v / scale)}{unit}"
    return f"{v:.0f}"


def pct(x: object) -> str:
    return DASH if not finite(x) else f"{sig(x)}%"


def stat(s: Stat, kind: str = "num", n_expected: int | None = None) -> str:
    """``mean ± half`` in the unit of ``kind``; ``(n=k)`` when fewer seeds measured it."""
    if s.n == 0:
        return DASH
    if kind == "bytes":
        unit, scale = _byte_unit(s.mean)
        text = f"{sig(s.mean / scale)}"
        if finite(s.half):
            text += f" ± {sig(s.half / scale, 2)}"
        text += f" {unit}"
    else:
        fmt = {"num": num, "sig": sig, "count": count, "pct": pct}[kind]
        text = fmt(s.mean)
        if finite(s.half):
            text += f" ± {fmt(s.half)}"
    if n_expected is not None and s.n != n_expected:
        text += f" (n={s.n})"
    return text


def _byte_unit(v: float) -> tuple[str, float]:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(v) >= scale:
            return unit, float(scale)
    return "B", 1.0
