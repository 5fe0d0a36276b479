"""The validation choice of the learning rate: every grid point, the evidence figure, and the
choices that sit on an edge of their grid (a wider grid might have found a better rate)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.report import figures as F
from bench.report.doc import DASH, Note, Section, Table, finite, num
from bench.report.prepare import KEYS, Data

ORDER = ["model", "task", "label", "seed", "run_id"]  # row order of every per-run table


def lr_value(row: pd.Series) -> float:
    """The learning rate a run used: the record's ``train.lr``, else the resolved config's
    (``train.lr`` overrides the method's default ``method.lr``); NaN when unrecorded."""
    if finite(row.get("train.lr")):
        return float(row["train.lr"])
    config = row.get("config")
    for block in ("train", "method"):
        sub = config.get(block) if isinstance(config, dict) else None
        value = sub.get("lr") if isinstance(sub, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return math.nan


def lr_of(row: pd.Series) -> str:
    v = lr_value(row)
    return f"{v:g}" if math.isfinite(v) else DASH


@dataclass(frozen=True)
class Choice:
    """One (model, task, method, seed) slot that chose among several learning rates."""

    model: str
    task: str
    label: str
    seed: Any
    lrs: tuple[float, ...]  # the rates tried, ascending
    val: tuple[float, ...]  # validation loss after training, per rate
    chosen: float
    val_before: float  # the base model's validation loss (the same for every point)

    @property
    def edge(self) -> str:
        """ "lowest" / "highest" when the chosen rate is an end of the grid, else ""."""
        if len(self.lrs) < 2:
            return ""
        return "lowest" if self.chosen == self.lrs[0] else "highest" if (
            self.chosen == self.lrs[-1]) else ""  # fmt: skip

    @property
    def name(self) -> str:
        return f"{self.label} on {self.model} × {self.task} (seed {self.seed})"


def choices(d: Data) -> list[Choice]:
    out = []
    c = d.candidates.copy()
    if c.empty:
        return out
    c["_lr"] = [lr_value(r) for _, r in c.iterrows()]
    for key, g in c.groupby(KEYS, sort=False, dropna=False):
        g = g[g["_lr"].notna()].sort_values("_lr", kind="stable")
        chosen = g[g["selected"]]
        if len(g) < 2 or chosen.empty:
            continue
        base = pd.to_numeric(g.get("validation.loss_before", pd.Series(dtype=float))).dropna()
        out.append(Choice(*key, lrs=tuple(g["_lr"]), val=tuple(g["d.val_loss_after"]),
                          chosen=float(chosen["_lr"].iloc[0]),
                          val_before=float(base.iloc[0]) if len(base) else math.nan))  # fmt: skip
    return out


def edge_note(edges: list[Choice]) -> str:
    names = "; ".join(f"{c.name}: the {c.edge} rate, {c.chosen:g}" for c in edges)
    return (f"{len(edges)} choice(s) lie on an edge of their grid, so a rate beyond the grid "
            f"might have done better: {names}.")  # fmt: skip


def selection(d: Data) -> Section:
    c = d.candidates.sort_values(ORDER, kind="stable")
    picks = choices(d)
    edge = {(p.model, p.task, p.label, p.seed): p.edge for p in picks}
    slot = [edge.get((r["model"], r["task"], r["label"], r["seed"]), "") for _, r in c.iterrows()]
    kept = [bool(r["selected"]) for _, r in c.iterrows()]
    rows = [[r["model"], r["task"], r["label"], str(r["seed"]), r["run_id"], lr_of(r),
             num(r["d.val_loss_after"]), ("yes" + (f" ({e} rate)" if e else "")) if k else ""]
            for (_, r), e, k in zip(c.iterrows(), slot, kept, strict=True)]  # fmt: skip
    data = pd.DataFrame(
        {
            "model": c["model"],
            "task": c["task"],
            "method": c["label"],
            "seed": c["seed"],
            "run_id": c["run_id"],
            "lr": [lr_of(r) for _, r in c.iterrows()],
            "val_loss_after": c["d.val_loss_after"],
            "selected": c["selected"],
            "edge_of_grid": [e if k else "" for e, k in zip(slot, kept, strict=True)],
        }
    )
    blocks: list[Any] = [
        "Every method had a learning-rate grid of the same size (the tuning budget). Each point "
        "trained at full budget on seed 0 and measured validation loss only; the point with the "
        "lowest validation loss after training was kept, fully evaluated, and trained again for "
        "the other seeds. Test scores never take part in the choice.",
        Table(
            "selection",
            "Validation-based selection: every grid point (Kept: the chosen one; an edge of the "
            "grid is named).",
            ["Model", "Task", "Method", "Seed", "Run", "LR", "Val loss", "Kept"],
            rows,
            data,
        ),
    ]
    if edges := [p for p in picks if p.edge]:
        blocks.append(Note(edge_note(edges)))
    cells = [(m, t) for m, t in d.cells if any(p.model == m and p.task == t for p in picks)]
    if cells:
        fig = F.grid_figure(
            {f"{m} × {t}": [p for p in picks if (p.model, p.task) == (m, t)] for m, t in cells},
            d.styles,
        )
        blocks.append(F.figure(
            "selection_grid",
            "Validation loss after training against learning rate (log scale), one line per "
            "method and seed that searched a grid; the filled marker is the chosen point; the "
            "dashed line is the base model's validation loss (a point above it made the model "
            "worse). One run per point: no bars.",
            fig,
        ))  # fmt: skip
    return Section("Hyperparameter selection", "selection", blocks)
