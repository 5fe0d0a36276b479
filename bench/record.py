"""The run record: one typed definition, used by the writer (bench/run.py), the report's reader
(bench/report/frame.py) and the test fixtures.

Blocks the harness computes itself are typed field by field; blocks produced by the metric
modules (forgetting, repetition, hallucination, inference, memory) are mappings whose keys those
modules define and test. Older records (schema 1 without `label`) still parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

# 2: `label` (the method's setting label) and `env.cpu_flags`; 3: `validation`, `evaluated`,
# `eval_version`, `state` (re-evaluation without retraining)
SCHEMA_VERSION = 3
Status = Literal["success", "failed", "oom", "diverged", "cancelled"]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(Block):
    kind: str
    steps: int | None
    batch_size: int
    grad_accum: int
    seq_len: int
    seconds: float | None
    tokens: int | None = None  # filled once training ran


class Params(Block):
    total: int
    trainable: int
    trainable_pct: float
    inference_extra: int
    adapter_bytes: int | None = None  # filled when the trained state is saved


class Train(Block):
    steps: int
    tokens: int
    padded_tokens: int
    seconds: float
    tokens_per_s: float
    chars: int | None = None  # characters of the text trained on (absent in older records)
    chars_per_s: float | None = None
    samples_per_s: float
    step_time_p50: float
    step_time_p90: float
    flops_per_token: float
    achieved_flops: float
    loss_curve: list[list[float]]
    lr_curve: list[list[float]]
    final_loss: float | None
    lr: float
    optimizer: str
    # only when `data` changed the stream (bench/stream.py): replay's realised token and loss
    # shares, the distinct training examples
    stream: dict[str, Any] | None = None


class Quality(Block):
    metric: str
    before: float
    after: float
    val_loss_before: float
    val_loss_after: float
    n_test: int
    extra: dict[str, dict[str, float | None]]
    examples_after: list[str]
    answer_bpb_before: float | None = None  # reference answers' bits per byte (schema >= 3)
    answer_bpb_after: float | None = None
    # per test example, before and after: score, extra scores (f1), bits, bytes, pred
    per_example: dict[str, dict[str, list[Any]] | None] | None = None


class Validation(Block):
    """Validation loss before and after training: what learning rates are chosen on."""

    loss_before: float
    loss_after: float
    n: int


class State(Block):
    kept: bool
    bytes: int
    path: str | None
    reason: str | None = None  # why it was not kept


class Timing(Block):
    before_eval_s: float
    before_cached: bool
    before_key: str | None = None  # absent in records written before the key existed
    before_parts: dict[str, Any] | None = None
    after_eval_s: float | None = None
    after_parts: dict[str, Any] | None = None
    inference_s: float | None = None
    reevaluated_at: str | None = None  # set by `python -m bench.evaluate`


class TaskInfo(Block):
    name: str
    metric: str
    source: str
    license: str
    n_train: int
    n_validation: int
    n_test: int
    # sha256 of the test split's prompts and references: runs of two tasks pair over test
    # examples only when theirs agree (self_instruct vs natural_instructions)
    test_sha256: str | None = None
    # a generated training set (self_instruct): its manifest's key, hash, counts and the
    # diversity statistics, so that a report reads them from the records alone
    dataset: dict[str, Any] | None = None


class ModelInfo(Block):
    name: str
    kind: str
    source: str | None
    notes: str | None
    total_params: int | None = None  # of the base model, before the method is applied
    non_embedding_params: int | None = None


class Record(Block):
    schema_version: int
    run_id: str
    status: Status
    error: str | None
    traceback: str | None = None
    method: str
    label: str | None = None  # absent in schema 1; readers fall back to `method`
    model: str
    task: str
    seed: int
    sweep: str
    config: dict[str, Any]
    budget: Budget | None = None
    params: Params | None = None
    train: Train | None = None
    memory: dict[str, Any] | None = None
    validation: Validation | None = None
    evaluated: Literal["all", "val"] | None = None  # val: only `validation` (an lr grid point)
    eval_version: str | None = None  # hash of eval settings + eval code (bench.evaluate)
    state: State | None = None
    flags: list[str] | None = None  # failed to learn (bench/flags.py); [] = learned
    quality: Quality | None = None
    forgetting: dict[str, Any] | None = None
    repetition: dict[str, Any] | None = None
    hallucination: dict[str, Any] | None = None
    inference: dict[str, Any] | None = None
    # tasks with held-out text of their own (poem_next_line): per-character figures before and
    # after (bench/metrics/per_char.py)
    text: dict[str, Any] | None = None
    model_info: ModelInfo | None = None
    task_info: TaskInfo | None = None
    timing: Timing | None = None
    env: dict[str, Any] | None = None
    started_at: str
    finished_at: str | None = None

    def dump(self) -> dict[str, Any]:
        """The JSON-ready dict, in field order (absent optional blocks written as null)."""
        return self.model_dump(mode="json", exclude_none=False)


def new_record(cfg: Mapping[str, Any], rid: str, label: str, started_at: str) -> Record:
    return Record(
        schema_version=SCHEMA_VERSION,
        run_id=rid,
        status="failed",  # until the run says otherwise: a crash leaves an honest record
        error=None,
        method=cfg["method"]["name"],
        label=label,
        model=cfg["model"]["name"],
        task=cfg["task"]["name"],
        seed=cfg["seed"],
        sweep=cfg["sweep_name"],
        config=dict(cfg),
        started_at=started_at,
    )


def parse(obj: Any) -> Record | None:
    """A record from decoded JSON, or None for anything else (foreign or truncated files)."""
    if not isinstance(obj, Mapping) or "run_id" not in obj:
        return None
    try:
        return Record.model_validate(obj)
    except ValidationError:
        return None


def read(path: Path) -> Record | None:
    import json

    try:
        return parse(json.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return None
