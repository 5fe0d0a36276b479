"""Fine-tuning methods: one module per method, registered under its Hydra option name.

A method is a small builder (see :class:`Method`). Everything that differs between methods lives
in its module: its typed config, how the base is loaded (4-bit for QLoRA), what part of the base
evaluation depends on that, the optimizer, generation caveats, its report label, order and note.
Code outside this package asks the registry and never names a method or a peft type.

Users (and the tests) can register more methods from their own modules: list them in
``BENCH_METHOD_PLUGINS`` (comma-separated module names); isolated run processes inherit it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import pkgutil
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, PositiveFloat, ValidationError

from bench.models import ModelInfo

PLUGINS_ENV = "BENCH_METHOD_PLUGINS"
METHOD_CONF = Path(__file__).resolve().parents[2] / "conf" / "method"


class ConfigError(ValueError):
    """A bad configuration value, raised before any model is loaded."""


def require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _describe(err: Mapping[str, Any]) -> str:
    """One pydantic error as `must be > 0, got 0` / `got 'x'; valid: 'a' or 'b'`."""
    kind, got, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"must be {_BOUNDS[kind]} {bound}, got {got!r}"
    if kind == "literal_error":
        return f"got {got!r}; valid: {ctx.get('expected')}"
    return f"{err['msg']}, got {got!r}"


def parse_config(schema: type[BaseModel], cfg: Mapping[str, Any], where: str) -> Any:
    """``cfg`` checked against ``schema``; ConfigError names every bad key and its valid values."""
    try:
        return schema.model_validate(dict(cfg))
    except ValidationError as e:
        lines = []
        for err in e.errors():
            # union branches appear as tags like "constrained-int": not keys, so dropped
            path = [str(p) for p in err["loc"] if isinstance(p, str) and p.isidentifier()]
            key = ".".join([where, *path] if where else path)
            line = f"{key}: {_describe(err)}"
            if err["type"] == "value_error" and not path:  # a model validator names its keys
                line = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                line += f"; valid keys: {sorted(schema.model_fields)}"
            lines.append(line)
        raise ConfigError("; ".join(lines)) from None


class Strict(BaseModel):
    """Config schema base: unknown keys are errors, and ints are not silently made of strings."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MethodConfig(Strict):
    """Keys every method has. The YAML in conf/method/ holds the values and their comments."""

    name: str
    lr: PositiveFloat
    lr_grid: list[PositiveFloat]


@functools.cache
def _defaults(name: str) -> dict[str, Any]:
    path = METHOD_CONF / f"{name}.yaml"
    if not path.exists():  # a plugin method without a YAML file: no defaults to differ from
        return {}
    import yaml

    own = yaml.safe_load(path.read_text()) or {}
    entries = own.pop("defaults", None) or []
    if "_self_" not in entries:  # Hydra's rule: a file's own keys come after its defaults
        entries = [*entries, "_self_"]
    out: dict[str, Any] = {}
    for entry in entries:
        out.update(own if entry == "_self_" else _defaults(str(entry)))
    return out


def defaults(name: str) -> dict[str, Any]:
    """The method's settings as conf/method/<name>.yaml composes them (its `defaults:` list first,
    as Hydra does: qlora.yaml composes lora.yaml): what a run gets with no override. Reports
    take the setting these give as the method's default row."""
    return json.loads(json.dumps(_defaults(name)))  # a copy: the cache must not be mutated


def _plain(v: Any) -> Any:
    """Tuples as lists, so a setting compares equal however it was built."""
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


def label_value(v: Any) -> str:
    """A setting's value as it appears in a label: `2`, `0.05`, `q_proj+k_proj`, and a short hash
    for long texts and mappings (a label must stay readable, and distinct)."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return "+".join(label_value(x) for x in v)
    if isinstance(v, Mapping) or (isinstance(v, str) and len(v) > 16):
        return "#" + hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:6]
    return str(v)


class Method:
    """Defaults shared by all methods; a method module overrides what differs."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # The keys whose values make a distinct setting (a distinct report row), each with its short
    # name in labels. The learning rate is not one: settings that differ only in it are an lr grid.
    label_keys: ClassVar[Mapping[str, str]] = {}
    # A method that is another one with a single mechanism changed (QLoRA: LoRA on a 4-bit base),
    # and that change in words: reports compare the two at equal shared settings.
    variant_of: ClassVar[str | None] = None
    variant_change: ClassVar[str] = ""
    order: ClassVar[int] = 100  # position in report tables and figures
    note: ClassVar[str] = ""  # the report's method note
    wants_tokenizer: ClassVar[bool] = False  # apply() needs the model's tokenizer folder
    swept: ClassVar[bool] = True  # in every method sweep (False: needs settings of its own)
    quantized: ClassVar[bool] = False  # loads a quantized base (the GPU check's kernel section)
    baseline: ClassVar[bool] = False  # the method every other is compared with in reports

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        """Raise ConfigError naming the key and the valid choices."""
        self.parse(cfg)

    def parse(self, cfg: Mapping[str, Any]) -> Any:
        return parse_config(self.Config, cfg, "method")

    def settings(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The values of this config's `label_keys`: what tells its setting apart."""
        return {k: _plain(cfg.get(k)) for k in self.label_keys}

    def changed(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The settings of `cfg` that differ from conf/method/<name>.yaml's."""
        base = defaults(self.name)
        return {k: v for k, v in self.settings(cfg).items() if v != _plain(base.get(k))}

    def label(self, cfg: Mapping[str, Any]) -> str:
        """Short name of this setting in reports; settings that are distinct rows differ here.
        The YAML's default setting is the bare method name (so records of the default sweep keep
        theirs); any other is `<name>:` + what differs, e.g. `lora:targets=q_proj+k_proj,r=2`."""
        parts = []
        for key, value in self.changed(cfg).items():
            short = self.label_keys[key]
            if isinstance(value, bool):
                parts.append(short if value else f"no-{short}")
            else:
                parts.append(f"{short}={self.label_value(key, value)}")
        return f"{self.name}:{','.join(parts)}" if parts else self.name

    def label_value(self, key: str, value: Any) -> str:
        """How one setting's value reads in a label (a method may shorten its own)."""
        return label_value(value)

    def load_kwargs(self, cfg: Mapping[str, Any], device: str) -> dict[str, Any]:
        """Extra `from_pretrained` kwargs (e.g. a 4-bit quantization config)."""
        return {}

    def base_key(self, cfg: Mapping[str, Any]) -> dict[str, Any] | None:
        """The method settings the *base* model's measurements depend on (how it is loaded)."""
        return None

    def apply(self, model: Any, cfg: Mapping[str, Any], tokenizer_dir: str | None = None) -> Any:
        """Return the model to train, with exactly the method's parameters trainable."""
        raise NotImplementedError

    def optimizer(self, device: str) -> str:
        """The optimizer `train.optimizer=auto` resolves to."""
        return "adamw"

    def pads_unsafely(self, model: Any) -> bool:
        """True if batched generation with left padding would shift this model's positions."""
        return False

    def inference_extra_params(self, model: Any) -> int:
        """Parameters needed at inference on top of the base model (encoders dropped)."""
        return 0

    def base_storage(self, model: Any) -> dict[str, Any] | None:
        """How the frozen base is stored, measured on the loaded model (e.g. bits per parameter
        of a quantized base); None when it is stored as plain tensors."""
        return None

    def save(self, model: Any, out: Path) -> int:
        """Save what a user would ship (adapter or weights); return its size in bytes."""
        raise NotImplementedError


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    _REGISTRY[method.name] = method
    return method


def _import_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    for name in filter(None, os.environ.get(PLUGINS_ENV, "").split(",")):
        importlib.import_module(name.strip())


def names() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def swept() -> list[str]:
    """The methods every method sweep runs, in report order (conf/sweep/*.yaml list these)."""
    _import_all()
    return sorted((n for n, m in _REGISTRY.items() if m.swept), key=lambda n: rank(n))


def baseline() -> str | None:
    """The reports' reference method (full fine-tuning), if one is registered."""
    return next((n for n in swept() if _REGISTRY[n].baseline), None)


def quantized() -> list[str]:
    """Methods that load a quantized base, in report order."""
    return [n for n in swept() if _REGISTRY[n].quantized]


def get(name: str) -> Method:
    _import_all()
    if name not in _REGISTRY:
        raise ConfigError(f"method.name: {name!r} is not a registered method; valid: {names()}")
    return _REGISTRY[name]


def of_label(label: str) -> Method | None:
    """The method of a label: its name runs up to the first ':' (settings), '[' (stream),
    '@' (tag), '{' (decoding) or '+vocab' (vocabulary)."""
    _import_all()
    return _REGISTRY.get(re.split(r"[:\[@{]|\+vocab", label, maxsplit=1)[0])


def rank(label: str) -> tuple[int, str]:
    """Report sort key of a method label: the methods' own order, then alphabetical."""
    m = of_label(label)
    return (m.order if m else 1000), label


def note(label: str) -> str | None:
    m = of_label(label)
    return m.note if m and m.note else None


def pads_unsafely(model: Any) -> bool:
    """Whether any registered method says left-padded generation is wrong for this model."""
    _import_all()
    return any(m.pads_unsafely(model) for m in _REGISTRY.values())


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def load_base(
    model_cfg: Mapping[str, Any],
    method_cfg: Mapping[str, Any],
    *,
    device: str,
    precision: str,
    dtype: Any = None,
    frozen: bool = False,
) -> tuple[Any, Any]:
    """(model, tokenizer) of the base as the method loads it (e.g. 4-bit for QLoRA), in the load
    dtype of `precision` unless `dtype` says otherwise. `frozen`: for evaluation only, so every
    weight is held in the compute dtype (bench.precision.hold_frozen)."""
    from bench import models
    from bench.precision import hold_frozen, load_dtype

    kw = get(method_cfg["name"]).load_kwargs(method_cfg, device)
    dtype = dtype or load_dtype(precision)
    model, tok = models.load(model_cfg, dtype=dtype, device=device, extra_kwargs=kw)
    if frozen:
        model.requires_grad_(False)
        hold_frozen(model, precision)
    return model, tok


def load_and_apply(
    model_cfg: Mapping[str, Any],
    method_cfg: Mapping[str, Any],
    *,
    device: str,
    precision: str,
    dtype: Any = None,
    before_apply: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any, Method]:
    """The one way to get a trainable model: load the base as the method wants, apply it, and
    hold what stays frozen in the compute dtype. `before_apply` sees the loaded base (e.g. to
    count its parameters)."""
    from bench import models
    from bench.precision import hold_frozen

    method = get(method_cfg["name"])
    model, tok = load_base(model_cfg, method_cfg, device=device, precision=precision, dtype=dtype)
    if before_apply:
        before_apply(model)
    # an expansion's folder tells a method which token rows are new (bench.vocab.added_ids)
    wants = method.wants_tokenizer or bool(model_cfg.get("vocab"))
    tok_dir = str(models.model_dir(model_cfg)) if wants else None
    model = method.apply(model, method_cfg, tok_dir)
    hold_frozen(model, precision)
    return model, tok, method
