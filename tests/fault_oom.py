"""Test-only: prompt tuning whose run process gets a memory limit and then needs more than it
allows, as a run under a cgroup or ulimit would (registered through BENCH_METHOD_PLUGINS)."""

from __future__ import annotations

import resource
from collections.abc import Mapping
from typing import Any

import torch

from bench import measure
from bench.methods import register
from bench.methods.prompt_tuning import PromptTuning


class MemoryHungry(PromptTuning):
    def apply(self, model: Any, cfg: Mapping[str, Any], tokenizer_dir: str | None = None) -> Any:
        limit = measure.rss_bytes() + (1 << 30)  # address space: now + 1 GiB
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit * 4, hard))  # virtual > resident
        hog = [torch.ones(1 << 28, dtype=torch.uint8) for _ in range(64)]  # 16 GiB
        return hog  # never reached


register(MemoryHungry())
