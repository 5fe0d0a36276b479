"""Schema of the `eval` config group (conf/eval/*.yaml): typed, checked before any work.

The YAML holds the values; these dataclasses hold the schema and the same defaults, so a partial
mapping (e.g. a test override) still parses, and `conf/eval/default.yaml` is tested to equal them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.methods import ConfigError

PROBE_DIR = Path(__file__).resolve().parent.parent / "probes"


def available_probes() -> list[str]:
    """Probe names = YAML file stems in bench/probes (files starting with '_' are templates)."""
    return sorted(p.stem for p in PROBE_DIR.glob("*.yaml") if not p.name.startswith("_"))


@dataclass(frozen=True)
class NLLSettings:
    enabled: bool = True
    n_passages: int = 200  # held-out Brown paragraphs, spread over all genres
    max_tokens: int = 32  # scored tokens per passage (its first ones)


@dataclass(frozen=True)
class ProbeSettings:
    enabled: bool = True
    tasks: tuple[str, ...] = ("general_knowledge", "strategyqa", "qa_wikidata", "country_capitals")
    limit: int | None = 200  # examples per probe (first N of a fixed shuffle); None = all


@dataclass(frozen=True)
class RepetitionSettings:
    enabled: bool = True
    n_prefixes: int = 50
    prefix_tokens: int = 16
    max_new_tokens: int = 64
    suppress_eos: bool = True  # continuations of exactly max_new_tokens tokens
    windows: tuple[int, ...] = (16, 32, 128)
    tf_documents: int = 12  # rep_l text: held-out documents, teacher-forced
    tf_tokens: int = 160  # scored tokens per document (> the largest window)
    loop_tail: int = 32
    loop_max_period: int = 8


@dataclass(frozen=True)
class HallucinationSettings:
    enabled: bool = True
    n_capitals: int = 60
    n_elements: int = 60
    n_known_unknowns: int = 23
    n_invented: int = 57
    max_new_tokens: int = 8


@dataclass(frozen=True)
class InferenceSettings:
    enabled: bool = True
    batch_size: int = 4
    prompt_tokens: int = 64
    new_tokens: int = 16
    warmup: int = 1
    repeats: int = 2
    merged: bool = True


@dataclass(frozen=True)
class DecodingSettings:
    """How test answers and repetition continuations are decoded: transformers' own options."""

    name: str = "greedy"  # the setting's name in labels (`lora{penalty}`) and reports
    repetition_penalty: float = 1.0  # RepetitionPenaltyLogitsProcessor; 1.0 is off
    no_repeat_ngram_size: int = 0  # NoRepeatNGramLogitsProcessor; 0 is off
    do_sample: bool = False
    temperature: float = 1.0  # sampling only
    top_p: float = 1.0  # sampling only
    num_samples: int = 1  # continuations per prompt (sampling only); scores averaged per prompt


@dataclass(frozen=True)
class EvalSettings:
    enabled: bool = True
    batch_size: int = 50
    seed: int = 0
    nll: NLLSettings = field(default_factory=NLLSettings)
    probes: ProbeSettings = field(default_factory=ProbeSettings)
    repetition: RepetitionSettings = field(default_factory=RepetitionSettings)
    hallucination: HallucinationSettings = field(default_factory=HallucinationSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    decoding: DecodingSettings = field(default_factory=DecodingSettings)


_SECTIONS: dict[str, type] = {
    "nll": NLLSettings,
    "probes": ProbeSettings,
    "repetition": RepetitionSettings,
    "hallucination": HallucinationSettings,
    "inference": InferenceSettings,
    "decoding": DecodingSettings,
}
# Keys that may be 0 (everything else that is an int must be >= 1); seed may be anything.
_MAY_BE_ZERO = {"n_capitals", "n_elements", "n_known_unknowns", "n_invented", "warmup",
                "no_repeat_ngram_size"}  # fmt: skip


def _plain(cfg: Any) -> Any:
    try:  # a Hydra DictConfig -> plain containers
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, DictConfig | ListConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    return cfg


def _check(where: str, name: str, value: Any, default: Any) -> Any:
    key = f"{where}.{name}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or not value:
            raise ConfigError(f"{key}={value!r} must be a non-empty list")
        return tuple(value)
    if isinstance(default, int) or name == "limit":
        if value is None and name == "limit":
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} must be an integer")
        if name != "seed" and value < (0 if name in _MAY_BE_ZERO else 1):
            raise ConfigError(f"{key}={value!r} must be >= {0 if name in _MAY_BE_ZERO else 1}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}={value!r} must be a number")
        return float(value)
    return value


def _build(cls: type, cfg: Mapping[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in cfg.items():
        if name in _SECTIONS and cls is EvalSettings:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{name} must be a mapping, got {value!r}")
            kwargs[name] = _build(_SECTIONS[name], value, f"{where}.{name}")
            continue
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kwargs[name] = _check(where, name, value, default)
    return cls(**kwargs)


def parse(cfg: Mapping[str, Any] | EvalSettings | None) -> EvalSettings:
    """The `eval` config as typed settings; raises ConfigError naming the bad key."""
    if isinstance(cfg, EvalSettings):
        return cfg
    s: EvalSettings = _build(EvalSettings, _plain(cfg) or {}, "eval")
    valid = available_probes()
    bad = [t for t in s.probes.tasks if t not in valid]
    if bad:
        raise ConfigError(f"eval.probes.tasks: unknown probe(s) {bad}; valid: {valid}")
    for w in s.repetition.windows:
        if not isinstance(w, int) or w < 1:
            raise ConfigError(f"eval.repetition.windows: {w!r} must be a positive integer")
    if max(s.repetition.windows) >= s.repetition.tf_tokens:
        raise ConfigError(
            f"eval.repetition.tf_tokens={s.repetition.tf_tokens} must exceed the largest window "
            f"{max(s.repetition.windows)} (else rep_l of the larger windows are all the same)"
        )
    if s.repetition.loop_max_period * 2 > s.repetition.loop_tail:
        raise ConfigError(
            "eval.repetition.loop_max_period must be at most half of loop_tail "
            f"(a loop needs two copies of its span): {s.repetition.loop_max_period} vs "
            f"{s.repetition.loop_tail}"
        )
    _check_decoding(s.decoding)
    return s


def _check_decoding(d: DecodingSettings) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.=-]+", d.name):
        raise ConfigError(f"eval.decoding.name={d.name!r}: letters, digits and _.=- only")
    for key, v, ok in (
        ("repetition_penalty", d.repetition_penalty, d.repetition_penalty > 0),
        ("temperature", d.temperature, d.temperature > 0),
        ("top_p", d.top_p, 0 < d.top_p <= 1),
    ):
        if not ok:
            rng = "in (0, 1]" if key == "top_p" else "> 0"
            raise ConfigError(f"eval.decoding.{key}={v!r} must be {rng}")
    if d.num_samples > 1 and not d.do_sample:
        raise ConfigError(
            f"eval.decoding.num_samples={d.num_samples} needs do_sample=true "
            "(greedy decoding gives one continuation)"
        )


def as_dict(s: EvalSettings) -> dict[str, Any]:
    """Plain dict (lists for tuples), the shape of conf/eval/default.yaml."""

    def conv(x: Any) -> Any:
        if isinstance(x, tuple):
            return list(x)
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x

    return conv(dataclasses.asdict(s))
