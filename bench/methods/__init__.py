"""Fine-tuning methods: one module per method, registered under its Hydra option name.

A method is a small builder (see :class:`Method`). Its quirks (layer selection, quantized
loading, prefix caches) stay in its module; the shared training loop never branches on names.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from bench.models import ModelInfo


class ConfigError(ValueError):
    """A bad configuration value, raised before any model is loaded."""


class Method(Protocol):
    name: str

    def validate(self, cfg: Mapping[str, Any], info: ModelInfo) -> None:
        """Raise ConfigError naming the key and the valid choices."""

    def load_kwargs(self, cfg: Mapping[str, Any], device: str) -> dict[str, Any]:
        """Extra `from_pretrained` kwargs (e.g. a 4-bit quantization config)."""

    def apply(self, model: Any, cfg: Mapping[str, Any]) -> Any:
        """Return the model to train, with exactly the method's parameters trainable."""

    def inference_extra_params(self, model: Any) -> int:
        """Parameters needed at inference on top of the base model (encoders dropped)."""

    def save(self, model: Any, out: Path) -> int:
        """Save what a user would ship (adapter or weights); return its size in bytes."""


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    _REGISTRY[method.name] = method
    return method


def _import_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def names() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def get(name: str) -> Method:
    _import_all()
    if name not in _REGISTRY:
        raise ConfigError(f"method.name={name!r} is not a registered method; valid: {names()}")
    return _REGISTRY[name]


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")
