"""Test-only methods that fail on purpose, registered through BENCH_METHOD_PLUGINS (the hook a
user's own method module would use). A plugin registered under a built-in's name replaces it
for that process tree only, so a sweep can fail one cell and a rerun without the plugin heals it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.methods import register
from bench.methods.full import Full


class BrokenFull(Full):
    """Full fine-tuning whose `apply` raises: a failure after the base evaluation."""

    def apply(self, model: Any, cfg: Mapping[str, Any], tokenizer_dir: str | None = None) -> Any:
        raise RuntimeError(f"injected failure for method {self.name}")


register(BrokenFull())
