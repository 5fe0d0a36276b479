"""Evaluation cost: wall seconds spent evaluating beside the seconds spent training."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report.doc import Section, Table, finite, num
from bench.report.prepare import Data, col, groups


def _eval_seconds(d: Data) -> pd.DataFrame:
    """Per counted run: training seconds and what evaluation cost beside it (wall seconds).

    The base model is evaluated once per cell; the runs that read one cached evaluation carry
    its `timing.before_key` and each is charged an equal share of it. Records older than that
    key are grouped on their identical `timing.before_eval_s` (read from the same cache file)."""
    every = d.df.dropna(subset=["timing.before_eval_s"])
    seconds = "s" + every["timing.before_eval_s"].astype(str)
    if "timing.before_key" in every:
        seconds = every["timing.before_key"].fillna(seconds)
    group = [every["model"], every["task"], seconds.rename("before")]
    share = every.groupby(group)["run_id"].transform("size")
    shared = pd.Series(share.to_numpy(), index=every["run_id"].to_numpy())
    ok = d.ok
    n = ok["run_id"].map(shared).astype(float).to_numpy()

    def part(state: str, name: str) -> np.ndarray:
        return np.nan_to_num(col(ok, f"timing.{state}_parts.{name}"))

    general = (
        col(ok, "timing.after_parts.general_s")
        + np.nan_to_num(col(ok, "timing.inference_s"))
        + part("before", "general_s") / n
    )
    task = (
        part("after", "quality_s")
        + part("after", "val_loss_s")
        + (part("before", "quality_s") + part("before", "val_loss_s")) / n
    )
    train = col(ok, "train.seconds")
    return pd.DataFrame(
        {
            "train_s": train,
            "general_s": general,
            "task_eval_s": task,
            "general_over_train": general / train,
            "all_eval_over_train": (general + task) / train,
        },
        index=ok.index,
    )


def eval_cost(d: Data) -> Section:
    sec = Section(
        "Evaluation cost",
        "eval-cost",
        [
            "Wall seconds each run spent training and evaluating. General metrics: held-out "
            "NLL, probes, repetition and hallucination of the fine-tuned model, its inference "
            "timing, and the run's share of the base model's evaluation (computed once per cell "
            "and shared by the runs that read it). Task evaluation: test-set generation and "
            "validation loss, after training plus the share of before.",
        ],
    )
    if not np.isfinite(col(d.ok, "timing.after_parts.general_s")).any():
        sec.blocks.append("No run recorded how its evaluation time splits.")
        return sec
    secs = _eval_seconds(d)
    rows, data = [], []
    for head, g in groups(d):
        s = secs.loc[g.index].mean()
        if not finite(s["general_s"]):
            continue
        data.append(head | s.to_dict())
        rows.append(
            [str(v) for v in head.values()]
            + [num(s[k], 0) for k in ("train_s", "general_s", "task_eval_s")]
            + [num(s[k], 2) for k in ("general_over_train", "all_eval_over_train")]
        )
    cols = ["Model", "Task", "Method", "n", "Train s", "General metrics s", "Task eval s"]
    cols += ["General / train", "All eval / train"]
    caption = "Evaluation time beside training time (means over seeds, wall seconds)."
    sec.blocks.append(Table("eval_cost", caption, cols, rows, pd.DataFrame(data)))
    return sec
