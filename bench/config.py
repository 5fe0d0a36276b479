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

OPTIMIZERS = ("auto", "adamw", "paged_adamw_32bit", "paged_adamw_8bit")


class BudgetConfig(Strict):
    kind: Literal["steps", "time"]
    steps: PositiveInt  # optimizer steps (a cap, and the schedule's length, for kind=time)
    batch_size: PositiveInt
    grad_accum: PositiveInt
    seq_len: PositiveInt
    tokens_per_step: PositiveInt | None = None  # only budgets that derive batch_size from it
    seconds: PositiveFloat | None = None  # only kind=time

    @model_validator(mode="after")
    def _time_needs_seconds(self) -> BudgetConfig:
        if self.kind == "time" and self.seconds is None:
            raise ValueError("budget.seconds is required when budget.kind=time")
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


def _check_groups(cfg: Mapping[str, Any]) -> None:
    from bench import data, models
    from bench import methods as registry

    method = registry.get(cfg["method"].get("name", "?"))
    kind = cfg["model"].get("kind")
    if kind not in models.MODEL_KINDS:
        raise ConfigError(f"model.kind: got {kind!r}; valid: {list(models.MODEL_KINDS)}")
    if cfg["task"].get("name") not in data.names():
        raise ConfigError(f"task.name: {cfg['task'].get('name')!r}; valid: {data.names()}")
    method.validate(cfg["method"], models.model_info(cfg["model"]))


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
