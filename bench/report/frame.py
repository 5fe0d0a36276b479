"""Results folder -> one pandas DataFrame (one row per run, flattened ``a.b.c`` columns).

Dtypes are explicit for every schema column (``KNOWN``), so a column never changes type with
the data it happens to hold: text is ``string``, counts ``Int64`` (nullable), measurements
``float64`` (NaN = not measured), ``env.git_dirty`` ``boolean``, timestamps UTC. ``config`` (the
resolved run config) stays a dict and the curves (``train.loss_curve``, ``train.lr_curve``)
lists of ``[step, value]``. Open-ended blocks (probes, repetition, hallucination, memory
breakdown, packages) are numbers -> ``float64`` (also when absent everywhere), text ->
``string``, anything else (e.g. example generations) -> ``object``.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from bench import record

S, N, F = "string", "Int64", "float64"  # text, count (nullable int), measurement
KNOWN: dict[str, str] = {
    "schema_version": S, "run_id": S, "status": S, "error": S, "method": S, "label": S,
    "model": S, "task": S, "seed": N, "sweep": S,
    "budget.kind": S, "budget.steps": N, "budget.tokens": N, "budget.seconds": F,
    "config": "object",
    "params.total": N, "params.trainable": N, "params.trainable_pct": F,
    "params.inference_extra": N, "params.adapter_bytes": N,
    "train.steps": N, "train.tokens": N, "train.seconds": F, "train.tokens_per_s": F,
    "train.loss_curve": "object", "train.lr_curve": "object", "train.final_loss": F,
    "train.lr": F,
    "memory.device": S, "memory.peak_bytes": N, "memory.mean_bytes": N, "memory.p99_bytes": N,
    "quality.metric": S, "quality.before": F, "quality.after": F,
    "quality.val_loss_before": F, "quality.val_loss_after": F, "quality.n_test": N,
    "forgetting.nll_before": F, "forgetting.nll_after": F, "forgetting.nll_delta": F,
    "forgetting.mean_relative_drop": F, "forgetting.nll_bpb_before": F,
    "forgetting.nll_bpb_after": F, "forgetting.nll_bpb_delta": F,
    "inference.tokens_per_s": F, "inference.latency_ms": F,
    "inference.merged.tokens_per_s": F, "inference.merged.latency_ms": F,
    "env.git_sha": S, "env.git_dirty": "boolean", "env.device": S, "env.threads": N,
    "env.hostname_hash": S,
    "started_at": "datetime64[ns, UTC]", "finished_at": "datetime64[ns, UTC]",
    "model_info.name": S, "model_info.non_embedding_params": N, "model_info.total_params": N,
    "model_info.source": S, "model_info.notes": S,
    "task_info.name": S, "task_info.source": S, "task_info.license": S,
    "task_info.metric": S, "task_info.n_train": N, "task_info.n_validation": N,
    "task_info.n_test": N, "task_info.test_sha256": S, "task_info.dataset": "object",
    "model_info.kind": S,
    "timing.before_key": S,  # text even where no record has one (records from Record.dump)
}  # fmt: skip
OBJECT = [k for k, v in KNOWN.items() if v == "object"]  # kept whole, not flattened


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in OBJECT:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _dtype_of(column: str, values: list[Any]) -> str:
    """Known columns by schema; open-ended ones (probes, repetition, hallucination, memory
    breakdown, packages, ...) by what they hold: numbers (or nothing) -> float64."""
    if column in KNOWN:
        return KNOWN[column]
    present = [v for v in values if v is not None]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "float64"
    if all(isinstance(v, bool) for v in present):
        return "boolean"
    if all(isinstance(v, str) for v in present):
        return "string"
    return "object"  # lists (examples, curves) and mixed values, kept as they are


def _float(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan if v is None else float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan  # e.g. a probe that returned text: treated as not measured


def _column(column: str, values: list[Any], dtype: str) -> pd.Series:
    if dtype == "float64":
        return pd.Series([_float(v) for v in values], dtype="float64", name=column)
    if dtype == "Int64":
        floats = [_float(v) for v in values]
        if all(math.isnan(f) or f.is_integer() for f in floats):
            ints = [None if math.isnan(f) else int(f) for f in floats]
            return pd.Series(ints, dtype="Int64", name=column)
        warnings.warn(f"{column}: non-integral values, kept as float64", stacklevel=3)
        return pd.Series(floats, dtype="float64", name=column)
    if dtype == "string":
        return pd.Series(
            [None if v is None else str(v) for v in values], dtype="string", name=column
        )
    if dtype == "boolean":
        return pd.Series(
            [None if v is None else bool(v) for v in values], dtype="boolean", name=column
        )
    if dtype.startswith("datetime"):
        return pd.to_datetime(
            pd.Series(values, dtype="object", name=column),
            utc=True,
            errors="coerce",
            format="ISO8601",
        )
    return pd.Series(values, dtype="object", name=column)


def is_record(obj: Any) -> bool:
    """Whether decoded JSON is a run record: what ``bench.record.parse`` accepts."""
    return record.parse(obj) is not None


def _first_problem(obj: Any) -> str:
    """The first reason ``obj`` is not a valid ``Record``, as ``loc: message``."""
    try:
        record.Record.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"]) or "record"
        return f"{loc}: {first['msg']}"
    return "rejected by bench.record.parse"


def load_records(folder: Path, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """The run records in ``folder`` (``*.json``, not recursive), in file-name order, as the
    dicts read from disk. A file is a record iff ``bench.record.parse`` accepts it; one with a
    ``run_id`` that fails validation is skipped with a warning naming its first problem. Each
    skipped file's warning is also appended to ``skipped`` (the report lists them)."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            why = f"skipping unreadable {path.name}: {exc}"
        else:
            if is_record(obj):
                records.append(obj)
                continue
            if isinstance(obj, Mapping) and "run_id" in obj:
                why = f"skipping {path.name}: invalid run record ({_first_problem(obj)})"
            else:
                why = f"skipping {path.name}: not a run record"
        warnings.warn(why, stacklevel=2)
        if skipped is not None:
            skipped.append(why)
    return records


def load_references(folder: Path) -> dict[str, dict[str, Any]]:
    """A sweep's reference measurements (``reference/<task>.json``, bench.sweep.write_references),
    by task; a file that cannot be read is left out with a warning."""
    out = {}
    for path in sorted((Path(folder) / "reference").glob("*.json")):
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            obj = exc
        if isinstance(obj, dict):
            out[path.stem] = obj
        else:
            warnings.warn(f"skipping reference/{path.name}: not a readable object", stacklevel=2)
    return out


def frame_of(records: list[Mapping[str, Any]]) -> pd.DataFrame:
    flat = [_flatten(r) for r in records]
    dynamic = sorted({k for f in flat for k in f} - set(KNOWN))
    columns = list(KNOWN) + dynamic
    data = {}
    for column in columns:
        values = [f.get(column) for f in flat]
        data[column] = _column(column, values, _dtype_of(column, values))
    df = pd.DataFrame(data, index=pd.RangeIndex(len(flat)))
    _model_size(df)
    return df


def _model_size(df: pd.DataFrame) -> None:
    """``model_size`` for scaling plots, and which count it is (``model_size_source``):
    non-embedding parameters (Kaplan et al.) where recorded, else the base model's total
    parameters (``model_info.total_params``, counted before the method is applied)."""
    non_emb = df["model_info.non_embedding_params"].astype("float64")
    total = df["model_info.total_params"].astype("float64")
    df["model_size"] = non_emb.fillna(total)
    source = pd.Series(pd.NA, index=df.index, dtype="string")
    source = source.mask(total.notna(), "total parameters")
    df["model_size_source"] = source.mask(non_emb.notna(), "non-embedding parameters")


def load_results(folder: Path) -> pd.DataFrame:
    """One row per run record in ``folder``; columns as described in the module docstring."""
    return frame_of(load_records(folder))


def slug(text: str) -> str:
    """A file-name-safe form of a model or task name (hub ids contain slashes)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"
