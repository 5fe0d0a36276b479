"""Typed schema of a run's config (conf/config.yaml and its groups), checked before any work.

The YAML files hold the values and their comments; the schemas here hold types and ranges only
(no defaults that could drift from the YAML). Method schemas live with their methods
(`bench/methods/<name>.py`), the eval schema in `bench/metrics/settings.py`. Every error names
the key and the valid choices or range, and is raised before a model loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from bench.methods import ConfigError, Strict, parse_config
from bench.metrics.settings import EvalSettings
from bench.metrics.settings import parse as parse_eval
from bench.precision import resolve_precision

CONF = Path(__file__).resolve().parent.parent / "conf"
OPTIMIZERS = ("auto", "adamw", "paged_adamw_32bit", "paged_adamw_8bit")


class BudgetConfig(Strict):
    kind: Literal["steps", "time"]
    steps: PositiveInt  # optimizer steps (a cap, and the schedule's length, for kind=time)
    batch_size: PositiveInt
    grad_accum: PositiveInt
    seq_len: PositiveInt
    tokens_per_step: PositiveInt | None = None  # only budgets that derive batch_size from it
    seconds: PositiveFloat | None = None  # only kind=time
    # budget=chars: no training example may be cut, so every tokenizer trains on the same text
    whole_examples: bool = False

    @model_validator(mode="after")
    def _time_needs_seconds(self) -> BudgetConfig:
        if self.kind == "time" and self.seconds is None:
            raise ValueError("budget.seconds: required when budget.kind=time (seconds > 0)")
        return self


class TrainConfig(Strict):
    lr: PositiveFloat | None  # None: the method's own default (method.lr)
    warmup_ratio: float = Field(ge=0.0, lt=1.0)
    weight_decay: NonNegativeFloat
    clip: NonNegativeFloat  # 0 disables clipping
    optimizer: Literal["auto", "adamw", "paged_adamw_32bit", "paged_adamw_8bit"]
    eval_batch_size: PositiveInt


class LoggerConfig(Strict):
    mode: Literal["none", "offline", "online"]
    project: str
    entity: str | None


class ModelConfig(Strict):
    """Keys of conf/model/*.yaml; which ones a model needs depends on its kind (bench/models)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str  # checked against models.MODEL_KINDS, with the valid list, in _check_groups
    source: str | None = None
    notes: str | None = None
    arch: dict[str, Any] | None = None  # declared shapes: config checks need no download
    trust_remote_code: bool = False  # run a hub repo's own Python code: only if one opts in
    allow_pickle_weights: bool = False  # accept .bin (pickle) weights, not only safetensors
    hub_id: str | None = None  # kind=hub
    rung: str | None = None  # kind=ladder
    asset: str | None = None  # kind=gguf
    gguf_dir: str | None = None
    gguf_file: str | None = None
    revision: NonNegativeInt | None = None
    tokenizer_fix: dict[str, Any] | None = None
    hidden_size: PositiveInt | None = None  # kind=tiny: the random model's shape
    intermediate_size: PositiveInt | None = None
    num_layers: PositiveInt | None = None
    num_heads: PositiveInt | None = None
    num_kv_heads: PositiveInt | None = None
    init_seed: NonNegativeInt | None = None


# What each model kind cannot do without (the others are optional or belong to other kinds).
MODEL_NEEDS = {
    "tiny": ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads"),
    "gguf": ("asset", "gguf_dir", "gguf_file"),
    "ladder": ("rung",),
    "hub": ("hub_id",),
}


class TaskConfig(Strict, extra="allow"):
    """Keys every task has; a task's own keys (e.g. its subsets) are those of its YAML file."""

    name: str
    template: str = Field(min_length=1)
    n_train: PositiveInt
    n_val: PositiveInt
    n_test: PositiveInt
    split_seed: NonNegativeInt
    max_new_tokens: PositiveInt
    seq_len: PositiveInt


class DataConfig(Strict):
    """The training stream (bench/stream.py); neutral values leave it as the task's own."""

    replay_share: float = Field(ge=0.0, lt=1.0)
    replay_source: Literal["brown"]
    duplicate_share: float = Field(ge=0.0, lt=1.0)
    duplicate_pool: PositiveInt
    epochs: PositiveFloat | None


class VocabConfig(Strict):
    """Vocabulary expansion (bench/vocab.py); k = 0 leaves the model as it is."""

    k: NonNegativeInt
    source: Literal["chars", "words", "chars+words"]
    corpus: Literal["zh"]
    init: Literal["mean", "noise_init", "random"]
    seed: NonNegativeInt


class StateConfig(Strict):
    keep: bool
    max_mb: PositiveFloat | None


class RunConfig(Strict):
    """The top level. Groups with their own registries (method, model, task, eval) are checked
    by those registries; here they only need to be mappings."""

    method: dict[str, Any]
    model: dict[str, Any]
    task: dict[str, Any]
    budget: dict[str, Any]
    eval: dict[str, Any]
    logger: dict[str, Any]
    train: dict[str, Any]
    seed: NonNegativeInt
    sweep_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    results_dir: str = Field(min_length=1)
    precision: Literal["auto", "bf16-autocast", "fp32", "bf16"]
    device: str = Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    threads: PositiveInt | None
    progress: bool
    force: bool
    isolate: bool
    # sweeps with an lr grid: the point this run uses; "chosen": the point seed 0 chose on
    # validation loss (bench.reevaluate.chosen_point)
    lr_index: NonNegativeInt | Literal["chosen"] | None
    phases: list[Any] | None  # a named sweep's steps (bench.sweep.run_phases)
    eval_scope: Literal["all", "val"]
    state: StateConfig
    data: DataConfig | None = None  # absent in records from before the option existed
    vocab: VocabConfig | None = None  # the same
    train_version: PositiveInt | None = None  # None: a record from before version 2
    tag: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.,=/+x-]+$")


@dataclass(frozen=True)
class Checked:
    """A validated config: the plain dict every stage reads, plus its typed groups."""

    raw: dict[str, Any]
    budget: BudgetConfig
    train: TrainConfig
    eval: EvalSettings
    device: str  # resolved: cpu | cuda | cuda:N

    @property
    def lr(self) -> float:
        return float(self.train.lr or self.raw["method"]["lr"])

    @property
    def model(self) -> dict[str, Any]:
        """The model config the run loads: `model`, plus the vocabulary expansion if any."""
        from bench.vocab import effective_model

        return effective_model(self.raw["model"], self.raw.get("vocab"))


def plain(cfg: Any) -> dict[str, Any]:
    """A Hydra DictConfig (or mapping) as a plain dict without the `hydra` node."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        c = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(c, dict)
        c.pop("hydra", None)
        return c  # type: ignore[return-value]
    return dict(cfg)


def _device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        n = torch.cuda.device_count()
        idx = int(requested.split(":", 1)[1]) if ":" in requested else 0
        if idx >= n:
            valid = ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(n)] if n else [])
            raise ConfigError(
                f"device: {requested!r} but this machine has {n} CUDA device(s); valid: {valid}"
            )
    return requested


def _check_model(model: Mapping[str, Any]) -> None:
    from bench import models

    kind = model.get("kind")
    if kind not in models.MODEL_KINDS:
        raise ConfigError(f"model.kind: got {kind!r}; valid: {list(models.MODEL_KINDS)}")
    m = parse_config(ModelConfig, model, "model")
    missing = [k for k in MODEL_NEEDS[kind] if getattr(m, k) is None]
    if missing:
        raise ConfigError(f"model: kind={kind} needs {missing}")
    if kind == "tiny" and m.hidden_size % m.num_heads:  # type: ignore[operator]
        raise ConfigError(f"model.num_heads: {m.num_heads} must divide hidden_size={m.hidden_size}")


def _check_task(task: Mapping[str, Any]) -> None:
    from bench import data

    if task.get("name") not in data.names():
        raise ConfigError(f"task.name: {task.get('name')!r}; valid: {data.names()}")
    parse_config(TaskConfig, task, "task")
    own = CONF / "task" / f"{task['name']}.yaml"
    if own.exists():  # a task's own keys are the ones its YAML file documents
        import yaml

        valid = sorted(yaml.safe_load(own.read_text()))
        unknown = sorted(set(task) - set(valid))
        if unknown:
            raise ConfigError(f"task.{unknown[0]}: unknown key; valid keys: {valid}")


def _check_groups(cfg: Mapping[str, Any]) -> None:
    from bench import methods as registry
    from bench import models
    from bench.vocab import effective_model

    method = registry.get(cfg["method"].get("name", "?"))
    _check_model(cfg["model"])
    _check_task(cfg["task"])
    if (cfg.get("vocab") or {}).get("k") and method.quantized:
        plain_ones = sorted(set(registry.swept()) - set(registry.quantized()))
        raise ConfigError(
            f"vocab.k={cfg['vocab']['k']}: method {method.name} loads a quantized base, whose "
            f"layers cannot be resized; valid with an expansion: {plain_ones}"
        )
    method.validate(
        cfg["method"], models.model_info(effective_model(cfg["model"], cfg.get("vocab")))
    )


def check(cfg_in: Any) -> Checked:
    """Validate everything that needs no weights and resolve `device` and `precision=auto`
    (from hardware capability, so the run id never depends on a timing)."""
    cfg = plain(cfg_in)
    parse_config(RunConfig, cfg, "")
    budget = parse_config(BudgetConfig, cfg["budget"], "budget")
    train = parse_config(TrainConfig, cfg["train"], "train")
    parse_config(LoggerConfig, cfg["logger"], "logger")
    try:
        ev = parse_eval(cfg["eval"])
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"eval: {e}") from e
    _check_groups(cfg)
    device = _device(cfg["device"])
    cfg["precision"] = resolve_precision(cfg["precision"], device)
    if cfg.get("lr_index") == "chosen":  # after precision: grid records store it resolved
        _resolve_chosen(cfg)
        train = parse_config(TrainConfig, cfg["train"], "train")
    _check_writable(Path(cfg["results_dir"]) / cfg["sweep_name"])
    return Checked(cfg, budget, train, ev, device)


def _check_writable(folder: Path) -> None:
    """A results folder that cannot take a record fails now, not after training."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"results_dir: cannot write records to {folder}: {e}") from None


def _resolve_chosen(cfg: dict[str, Any]) -> None:
    """lr_index=chosen -> the grid point seed 0 chose, so this run's id is a plain grid point's."""
    from bench.reevaluate import chosen_point

    idx = chosen_point(cfg)
    cfg["lr_index"] = idx
    cfg["train"] = {**cfg["train"], "lr": cfg["method"]["lr_grid"][idx]}
