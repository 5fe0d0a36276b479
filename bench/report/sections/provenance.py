"""Provenance: what was run, where, from which code, under which budget, on which data."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from bench.report.doc import DASH, Block, Note, Section, Table, count, finite, num
from bench.report.notes import model_notes
from bench.report.prepare import Data, cell_of, first


def _when(df: pd.DataFrame) -> str:
    start = df["started_at"].dropna()
    end = df["finished_at"].dropna()
    if start.empty and end.empty:
        return "at unrecorded times"
    lo = (start if not start.empty else end).min().strftime("%Y-%m-%d %H:%M")
    hi = (end if not end.empty else start).max().strftime("%Y-%m-%d %H:%M")
    return f"between {lo} and {hi} UTC"


def _counted(values: pd.Series) -> list[tuple[str, int]]:
    counts = values.fillna(DASH).astype(str).value_counts()
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _hardware(df: pd.DataFrame) -> pd.Series:
    """One line per run from the env block: device, its name, CPU, cores, threads."""

    def describe(r: pd.Series) -> str:
        parts = []
        for key, fmt in (
            ("env.device", "{}"),
            ("env.device_name", "{}"),
            ("env.cpu", "CPU {}"),
            ("env.cpu_count", "{:.0f} cores"),
            ("env.threads", "{:.0f} threads"),
        ):
            v = r.get(key)
            if v is not None and v is not pd.NA and (isinstance(v, str) or finite(v)):
                text = fmt.format(float(v) if "{:" in fmt else v)
                if text not in parts:
                    parts.append(text)
        return ", ".join(parts) or "unrecorded"

    return df.apply(describe, axis=1) if len(df) else pd.Series([], dtype="string")


def _ref_code(d: Data) -> str:
    """Which code wrote the reference files (their env block)."""
    out = []
    for task, ref in sorted(d.references.items()):
        env = ref.get("env") or {}
        sha = str(env.get("git_sha") or "unrecorded")
        out.append(f"{task} at git {sha[:7]}" + (", uncommitted changes" if env.get("git_dirty")
                                                 else ""))  # fmt: skip
    return "; ".join(out)


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def provenance(d: Data, *, sweep: str, source: str) -> Section:
    df = d.df
    n_ok = int((df["status"] == "success").sum())
    blocks: list[Block] = [
        f"Sweep '{sweep}': {len(df)} run records in {source} ({n_ok} succeeded, "
        f"{len(df) - n_ok} did not), written {_when(df)}. Everything in this report is "
        "computed from those records alone"
        + (
            f", and the sweep's reference measurements (reference/<task>.json: {_ref_code(d)})"
            if d.references
            else ""
        )
        + "; per-run values are in tables/runs.csv.",
    ]
    if df.empty:
        blocks.append(Note("No run records were found."))
        return Section("Provenance", "provenance", blocks)

    hw = [f"Hardware: {text} ({_runs(n)})" for text, n in _counted(_hardware(df))]
    mem = df["memory.device"].astype("string")
    if "memory.kind" in df:
        mem = mem + " (" + df["memory.kind"].astype("string") + ")"
    if mem.notna().any():
        hw.append("Memory measured on: " + ", ".join(sorted(mem.dropna().unique())))
    code = []
    dirty_any = False
    for (sha, dirty), n in (
        df.groupby(["env.git_sha", "env.git_dirty"], dropna=False).size().sort_index().items()
    ):
        state = "uncommitted changes" if dirty is True else "clean" if dirty is False else "?"
        dirty_any |= dirty is True
        sha_txt = sha if isinstance(sha, str) else "unrecorded"
        code.append(f"Code: git {sha_txt} ({state}, {_runs(n)})")
    blocks.append(hw + code)
    if dirty_any:
        blocks.append(
            Note(
                "Some runs were made from a working tree with uncommitted changes: "
                "their git sha alone does not reproduce them."
            )
        )
    if df["env.git_sha"].nunique() > 1:
        blocks.append(Note("Runs come from more than one code version."))

    blocks += _budget_blocks(d)
    blocks.append(_models_table(d))
    blocks.append(_data_table(d))
    blocks += _other_sources(d)
    blocks.append(_packages_table(df))
    blocks.append(
        "Statistics: each cell shows the mean over seeds ± the half-width of the two-sided 95% "
        "Student-t interval, t(0.975, n−1)·sd/√n, with n the number of successful seeds (no "
        "interval when n = 1). Only successful runs count. When a method has several runs for "
        "one seed (a learning-rate grid), the run with the lowest validation loss is kept; "
        "test scores never select."
    )
    return Section("Provenance", "provenance", blocks)


def _span(values: pd.Series, digits: int = 0) -> str:
    """One value, or min–max when runs differ (e.g. tokens reached per seed)."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return DASH
    lo, hi = v.min(), v.max()
    return num(lo, digits) if lo == hi else f"{num(lo, digits)}–{num(hi, digits)}"


def _budget_blocks(d: Data) -> list[Block]:
    """Per cell, the budget every method ran under; a note where a seed's runs disagree."""
    df = d.df
    rows, data, uneven = [], [], []
    for model, task in d.cells:
        cell = cell_of(df, model, task)
        # Identical budgets = same kind, steps and training tokens (same examples in the same
        # order) for every method of one seed; time budgets: same seconds.
        ident = cell[["budget.kind", "budget.steps", "budget.tokens", "budget.seconds"]].copy()
        is_time = (ident["budget.kind"] == "time").fillna(False).astype(bool)
        ident.loc[is_time, ["budget.steps", "budget.tokens"]] = pd.NA
        ident["seed"] = cell["seed"]
        per_seed = ident.astype("string").fillna("?").groupby("seed").nunique()
        if (per_seed > 1).any(axis=None):
            uneven.append(f"{model} × {task}")
        kinds = ", ".join(sorted(cell["budget.kind"].dropna().unique())) or DASH
        rows.append(
            [
                model,
                task,
                kinds,
                _span(cell["budget.steps"]),
                _span(cell["budget.tokens"]),
                _span(cell["budget.seconds"]),
                str(len(cell)),
            ]
        )
        data.append(
            {
                "model": model,
                "task": task,
                "kind": kinds,
                "steps_min": cell["budget.steps"].min(),
                "steps_max": cell["budget.steps"].max(),
                "tokens_min": cell["budget.tokens"].min(),
                "tokens_max": cell["budget.tokens"].max(),
                "seconds_min": cell["budget.seconds"].min(),
                "seconds_max": cell["budget.seconds"].max(),
                "runs": len(cell),
            }
        )
    out: list[Block] = [
        Table(
            "budgets",
            "Training budget per model and task: the same for every method of a seed (tokens "
            "are training tokens and can differ between seeds, which draw different examples).",
            ["Model", "Task", "Budget", "Steps", "Tokens", "Seconds", "Runs"],
            rows,
            pd.DataFrame(data),
        )
    ]
    if uneven:
        out.append(
            Note(
                "Methods ran under different budgets within one seed in: "
                + ", ".join(uneven)
                + ". Their comparison is not budget-matched (see tables/runs.csv)."
            )
        )
    return out


def _models_table(d: Data) -> Table:
    rows, data = [], []
    models = list(dict.fromkeys(m for m, _ in d.cells))
    for model in models:
        g = d.df[d.df["model"] == model]
        notes = model_notes(model, first(g, "model_info.notes"))
        src = first(g, "model_info.source") or DASH
        ne, tot = g["model_info.non_embedding_params"].max(), g["model_info.total_params"].max()
        rows.append([model, count(ne), count(tot), src, notes or DASH])
        data.append(
            {
                "model": model,
                "non_embedding_params": ne,
                "total_params": tot,
                "source": src,
                "notes": notes,
            }
        )
    return Table(
        "models",
        "Models.",
        ["Model", "Non-embedding params", "Total params", "Source", "Notes"],
        rows,
        pd.DataFrame(data),
    )


def _data_table(d: Data) -> Table:
    rows, data = [], []
    for task in sorted(d.df["task"].unique()):
        g = d.df[d.df["task"] == task]
        src = first(g, "task_info.source") or DASH
        lic = first(g, "task_info.license") or DASH
        sizes = [g[f"task_info.n_{split}"].max() for split in ("train", "validation", "test")]
        metric = first(g, "quality.metric") or first(g, "task_info.metric") or DASH
        rows.append([task, src, lic, metric, *(num(s, 0) for s in sizes)])
        data.append(
            {
                "task": task,
                "source": src,
                "license": lic,
                "metric": metric,
                "n_train": sizes[0],
                "n_val": sizes[1],
                "n_test": sizes[2],
            }
        )
    return Table(
        "data",
        "Fine-tuning data: source with version, license, split sizes.",
        ["Task", "Source", "License", "Metric", "Train", "Val", "Test"],
        rows,
        pd.DataFrame(data),
    )


def _other_sources(d: Data) -> list[Block]:
    """Registry data beside the tasks' own (held-out text, reference tokenizers, dictionaries),
    from the sweep's reference files; and what the runs' vocabulary expansions drew on."""
    from bench.report.sections.per_char import expansion

    exp = [e for e in d.df.loc[d.df["status"] == "success", "config"].map(expansion) if e]
    words = any("words" in str(e.get("source")) for e in exp)
    rows, data = [], []
    tasks = set(d.df["task"].astype(str))
    for task, ref in sorted(d.references.items()):
        if task not in tasks:  # a stale file of a task no record has
            continue
        for src in ref.get("sources") or []:
            if not isinstance(src, Mapping) or not {"source", "use"} <= set(src):
                continue
            if src.get("asset") == "jieba" and not words:  # segmentation only for word tokens
                continue
            sha = str(src.get("sha256") or DASH)[:12]
            rows.append([task, src["source"], src.get("license", DASH), sha, src["use"]])
            data.append({"task": task, **src})
    out: list[Block] = [Table(
        "other-sources", "Other registry data these runs use (sha256-checked, cached; from the "
        "sweep's reference/<task>.json).",
        ["Task", "Source", "License", "sha256", "Used for"], rows, pd.DataFrame(data),
    )] if rows else []  # fmt: skip
    if exp:
        ks = " and ".join(f"{k:,}" for k in sorted({int(e["k"]) for e in exp}))
        srcs = ", ".join(sorted({str(e.get("source")) for e in exp}))
        corp = ", ".join(sorted({str(e.get("corpus")) for e in exp}))
        out.append(f"Vocabulary expansions in these runs: {ks} new tokens, candidates from "
                   f"vocab.source = {srcs}, counted on the {corp} corpus's training split "
                   "only.")  # fmt: skip
    return out


def _packages_table(df: pd.DataFrame) -> Table:
    rows = []
    names = [c for c in df.columns if c.startswith("env.packages.")]
    for c in (["env.python"] if "env.python" in df else []) + sorted(names):
        versions = _counted(df[c])
        text = (
            versions[0][0]
            if len(versions) == 1
            else ", ".join(f"{v} ({n} runs)" for v, n in versions)
        )
        rows.append([c.removeprefix("env.packages.").removeprefix("env."), text])
    return Table("packages", "Package versions recorded by the runs.", ["Package", "Version"], rows)
