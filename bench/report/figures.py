"""Figures (matplotlib object API: no pyplot state, no GUI backend), rendered as PNG and PDF.

Output is reproducible: fixed rc parameters (the user's matplotlibrc is ignored), no creation
date in the PDF, a fixed SVG hash salt.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure as MplFigure

from bench.report.doc import Figure
from bench.report.stats import Stat, pareto_front

DPI = 100  # PNG resolution: keeps the embedded HTML small; the PDF is vector anyway
_RC = {
    **{k: v for k, v in mpl.rcParamsDefault.items() if k != "backend"},
    "font.family": "DejaVu Sans",  # ships with matplotlib: same glyphs on every machine
    "font.size": 9,
    "axes.titlesize": 10,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "ft-bench",
    "savefig.dpi": DPI,
}
_PDF_META = {"CreationDate": None, "ModDate": None, "Producer": None}
_PNG_META = {"Software": None}
_MARKERS = "osD^v<>pPhX*"


@dataclass(frozen=True)
class Point:
    """One method in one cell: means with CI half-widths (NaN when missing)."""

    label: str
    x: Stat
    y: Stat


def style(methods: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Colour and marker per method, fixed by position in the canonical order."""
    cmap = mpl.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {
        m: (mpl.colors.to_hex(cmap(i % cmap.N)), _MARKERS[i % len(_MARKERS)])
        for i, m in enumerate(methods)
    }


def _panels(size: tuple[float, float], left_pads: Sequence[float]) -> tuple[MplFigure, list[Axes]]:
    """A row of axes with fixed margins in inches (constrained layout costs ~1 s a figure on a
    small CPU; these figures are regular enough to lay out by hand)."""
    width, height = size
    right, bottom, top = 0.2, 0.55, 0.62  # inches: tick labels, x label; titles + suptitle
    panel = (width - sum(left_pads) - right * len(left_pads)) / len(left_pads)
    fig = MplFigure(figsize=size)
    axes, x = [], 0.0
    for pad in left_pads:
        x += pad
        axes.append(
            fig.add_axes(
                (x / width, bottom / height, panel / width, (height - bottom - top) / height)
            )
        )
        x += panel + right
    return fig, axes


def _legend_right(fig: MplFigure, axes: Sequence[Axes], width: float) -> None:
    """Shrink the panels to keep `width` inches on the right and put one legend of every
    labelled artist there: a legend never overlaps a point or another label, as annotations
    next to the points did."""
    total = fig.get_figwidth()
    scale = (total - width) / total
    for ax in axes:
        box = ax.get_position()
        ax.set_position((box.x0 * scale, box.y0, box.width * scale, box.height))
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=8,
                   frameon=False)  # fmt: skip


def _label_pad(labels: Sequence[str]) -> float:
    """Left margin for horizontal-bar labels: ~0.075 in per character at 9 pt."""
    return 0.25 + 0.075 * max((len(x) for x in labels), default=4)


def figure(name: str, caption: str, fig: MplFigure) -> Figure:
    """The report block of ``fig``: its PNG (embedded in the HTML) and PDF, rendered in memory
    (only ``build_report`` writes files)."""
    png, pdf = io.BytesIO(), io.BytesIO()
    with mpl.rc_context(_RC):  # savefig reads rcParams (dpi, font type, hash salt) at save time
        fig.savefig(png, format="png", metadata=_PNG_META)
        fig.savefig(pdf, format="pdf", metadata=_PDF_META)
    return Figure(name, caption, png.getvalue(), pdf.getvalue())


def _empty(ax: Axes, title: str, why: str = "not measured") -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _err(s: Stat) -> float:
    return s.half if math.isfinite(s.half) else 0.0


def _pareto_panel(
    ax: Axes,
    points: Sequence[Point],
    styles: Mapping[str, tuple[str, str]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    xscale: float = 1.0,
) -> None:
    pts = [p for p in points if math.isfinite(p.x.mean) and math.isfinite(p.y.mean)]
    if logx:
        pts = [p for p in pts if p.x.mean > 0]
    if not pts:
        _empty(ax, title)
        return
    for p in pts:
        color, marker = styles[p.label]
        ax.errorbar(
            p.x.mean / xscale,
            p.y.mean,
            xerr=_err(p.x) / xscale,
            yerr=_err(p.y),
            fmt=marker,
            color=color,
            ms=6,
            capsize=2,
            lw=1,
            label=p.label,
        )
    front = pareto_front([(p.x.mean, p.y.mean) for p in pts])
    if len(front) > 1:
        xs = [pts[i].x.mean / xscale for i in front]
        ys = [pts[i].y.mean for i in front]
        ax.plot(xs, ys, "--", color="0.35", lw=1, drawstyle="steps-post", zorder=0)
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def pareto_figure(
    *,
    memory: Sequence[Point],
    params: Sequence[Point],
    learn_forget: Sequence[Point],
    styles: Mapping[str, tuple[str, str]],
    quality: str,
    forgetting: str,
    title: str,
) -> MplFigure:
    with mpl.rc_context(_RC):
        fig, axes = _panels((14.6, 4.0), (0.75, 0.75, 0.75))
        _pareto_panel(
            axes[0],
            memory,
            styles,
            title="Quality vs peak memory",
            xlabel="peak memory (MiB)",
            ylabel=f"{quality} after",
            xscale=2**20,
        )
        _pareto_panel(
            axes[1],
            params,
            styles,
            title="Quality vs trainable parameters",
            xlabel="trainable parameters",
            ylabel=f"{quality} after",
            logx=True,
        )
        _pareto_panel(
            axes[2],
            learn_forget,
            styles,
            title="Learning vs forgetting",
            xlabel=forgetting,
            ylabel=f"Δ {quality} (after − before)",
        )
        _legend_right(fig, axes, 1.6)
        fig.suptitle(title + "  (dashed: Pareto front; bars: 95% t-interval over seeds)")
        return fig


def training_figure(
    *,
    curves: Mapping[str, Sequence[Sequence[tuple[float, float]]]],
    train_tps: Mapping[str, Stat],
    infer_tps: Mapping[str, Stat],
    styles: Mapping[str, tuple[str, str]],
    title: str,
) -> MplFigure:
    """Loss curves (mean over seeds, min-max band) and training / inference throughput."""
    with mpl.rc_context(_RC):
        pad = _label_pad(list(train_tps) + list(infer_tps))
        fig, (ax_loss, ax_tr, ax_inf) = _panels((13, 3.8), (0.75, pad, pad))
        drawn = False
        for label, runs in curves.items():
            mean, lo, hi, steps = _mean_curve(runs)
            if not len(steps):
                continue
            color = styles[label][0]
            ax_loss.plot(steps, mean, color=color, lw=1.2, label=label)
            if len(runs) > 1:
                ax_loss.fill_between(steps, lo, hi, color=color, alpha=0.15, lw=0)
            drawn = True
        if drawn:
            ax_loss.set_title("Training loss (mean over seeds, band: min–max)")
            ax_loss.set_xlabel("optimizer step")
            ax_loss.set_ylabel("loss")
            ax_loss.legend(loc="upper right")
        else:
            _empty(ax_loss, "Training loss")
        _bars(ax_tr, train_tps, styles, "Training throughput", "tokens/s")
        _bars(ax_inf, infer_tps, styles, "Inference throughput", "generated tokens/s")
        fig.suptitle(title)
        return fig


def _mean_curve(
    runs: Sequence[Sequence[tuple[float, float]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over runs at the steps every run logged."""
    maps = [{float(s): float(v) for s, v in run if math.isfinite(float(v))} for run in runs]
    maps = [m for m in maps if m]
    if not maps:
        e = np.array([])
        return e, e, e, e
    steps = sorted(set.intersection(*(set(m) for m in maps)))
    vals = np.array([[m[s] for s in steps] for m in maps])
    return vals.mean(0), vals.min(0), vals.max(0), np.array(steps)


def _bars(
    ax: Axes,
    values: Mapping[str, Stat],
    styles: Mapping[str, tuple[str, str]],
    title: str,
    xlabel: str,
) -> None:
    items = [(k, s) for k, s in values.items() if math.isfinite(s.mean)]
    if not items:
        _empty(ax, title)
        return
    ys = np.arange(len(items))
    ax.barh(
        ys,
        [s.mean for _, s in items],
        xerr=[_err(s) for _, s in items],
        color=[styles[k][0] for k, _ in items],
        capsize=2,
    )
    ax.set_yticks(ys, [k for k, _ in items])
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)


def scaling_figure(
    *,
    quality: Mapping[str, Sequence[tuple[float, Stat]]],
    forgetting: Mapping[str, Sequence[tuple[float, Stat]]],
    styles: Mapping[str, tuple[str, str]],
    quality_label: str,
    forgetting_label: str,
    title: str,
) -> MplFigure:
    """Per method, a metric against model size (one point per model, 95% t-interval bars)."""
    with mpl.rc_context(_RC):
        fig, axes = _panels((11, 3.8), (0.8, 0.8))
        for ax, series, ylabel, name in (
            (axes[0], quality, quality_label, "Quality"),
            (axes[1], forgetting, forgetting_label, "Forgetting"),
        ):
            drawn = False
            for label, pts in series.items():
                pts = [(x, s) for x, s in pts if x > 0 and math.isfinite(s.mean)]
                if not pts:
                    continue
                color, marker = styles[label]
                ax.errorbar(
                    [x for x, _ in pts],
                    [s.mean for _, s in pts],
                    yerr=[_err(s) for _, s in pts],
                    fmt=f"-{marker}",
                    color=color,
                    ms=5,
                    lw=1.2,
                    capsize=2,
                    label=label,
                )
                drawn = True
            if not drawn:
                _empty(ax, f"{name} vs model size")
                continue
            ax.set_xscale("log")
            ax.set_title(f"{name} vs model size")
            ax.set_xlabel("model size (parameters, see report)")
            ax.set_ylabel(ylabel)
            ax.legend(loc="best")
        fig.suptitle(title)
        return fig


def curves_figure(curves: Mapping[str, Sequence[Sequence[float]]], title: str) -> MplFigure:
    """One training-loss line per run (step, loss), log-scaled when losses span a decade."""
    with mpl.rc_context(_RC):
        fig, (ax,) = _panels((8, 4), (0.8,))
        lows, highs = [], []
        for name, run in curves.items():
            steps = [float(s) for s, _ in run]
            vals = [float(v) for _, v in run]
            ax.plot(steps, vals, lw=1.1, label=name)
            lows.append(min(vals))
            highs.append(max(vals))
        if lows and min(lows) > 0 and max(highs) / min(lows) > 10:
            ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.legend(loc="upper right", fontsize=7)
        fig.suptitle(title)
        return fig


def grid_figure(
    cells: Mapping[str, Sequence[Any]], styles: Mapping[str, tuple[str, str]]
) -> MplFigure:
    """Per cell, validation loss after training vs learning rate for each grid search
    (``bench.report.sections.selection.Choice``); filled marker: the chosen rate; dashed: base."""
    with mpl.rc_context(_RC):
        n = len(cells)
        fig, axes = _panels((5.2 * n + 1.7, 4.0), (0.75,) * n)
        drawn: set[str] = set()
        for ax, (title, picks) in zip(axes, cells.items(), strict=True):
            lows, highs = [], []
            for p in picks:
                color, marker = styles[p.label]
                pts = [(x, y) for x, y in zip(p.lrs, p.val, strict=True) if math.isfinite(y)]
                if not pts:
                    continue
                ax.plot(*zip(*pts, strict=True), "-", marker=marker, color=color, mfc="white",
                        ms=5, lw=1.1, label=None if p.label in drawn else p.label)  # fmt: skip
                drawn.add(p.label)
                chosen = [(x, y) for x, y in pts if x == p.chosen]
                ax.plot(*zip(*chosen, strict=True), marker=marker, color=color, ms=7, ls="")
                lows.append(min(y for _, y in pts))
                highs.append(max(y for _, y in pts))
            bases = [p.val_before for p in picks if math.isfinite(p.val_before)]
            if bases:
                ax.axhline(bases[0], color="0.3", ls="--", lw=1)
                lows.append(bases[0])
                highs.append(bases[0])
            ax.set_xscale("log")
            if lows and min(lows) > 0 and max(highs) / min(lows) > 10:
                ax.set_yscale("log")
            ax.set_title(title)
            ax.set_xlabel("learning rate")
            ax.set_ylabel("validation loss after training")
        _legend_right(fig, axes, 1.7)
        fig.suptitle("Learning-rate grids: validation loss (filled: chosen; dashed: base model)")
        return fig


def rank_heatmap(
    cells: Mapping[str, Mapping[str, Sequence[float]]], columns: Sequence[str]
) -> MplFigure:
    """One panel per cell: methods x measures, coloured by rank scaled to [0, 1] (0 = best)."""
    with mpl.rc_context(_RC):
        n_rows = max((len(v) for v in cells.values()), default=1)
        pad = _label_pad([k for v in cells.values() for k in v])
        width = pad + 0.55 * len(columns) + 0.3
        height = 0.3 * n_rows + 1.9  # rotated column names below
        fig = MplFigure(figsize=(width * len(cells) + 0.9, height))
        cmap = mpl.colormaps["RdYlGn_r"]
        x = 0.0
        for title, ranks in cells.items():
            labels = list(ranks)
            grid = np.array([ranks[k] for k in labels], dtype=float)
            k = np.sum(np.isfinite(grid), axis=0)  # methods ranked per column
            with np.errstate(invalid="ignore", divide="ignore"):
                scaled = np.where(k > 1, (grid - 1) / (k - 1), 0.0)
            left = (x + pad) / fig.get_figwidth()
            ax = fig.add_axes((left, 1.3 / height, 0.55 * len(columns) / fig.get_figwidth(),
                               (height - 1.9) / height))  # fmt: skip
            ax.imshow(np.ma.masked_invalid(np.where(np.isfinite(grid), scaled, np.nan)),
                      cmap=cmap, vmin=0, vmax=1, aspect="auto")  # fmt: skip
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    if np.isfinite(grid[i, j]):
                        ax.text(j, i, f"{grid[i, j]:g}", ha="center", va="center", fontsize=7)
            ax.set_xticks(range(len(columns)), columns, rotation=50, ha="right")
            ax.set_yticks(range(len(labels)), labels)
            ax.grid(False)
            ax.set_title(title)
            x += width
        fig.suptitle("Rank of each method per measure (1 = best)")
        return fig
