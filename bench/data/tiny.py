"""A tiny built-in task for tests: reverse a short string of letters. No download."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from bench.data import Example, TaskData, exact_match, register, split


@register("tiny")
def build(cfg: Mapping[str, Any]) -> TaskData:
    rng = random.Random(1234)  # the pool is fixed; split_seed only shuffles it
    pool: set[str] = set()
    while len(pool) < 600:
        pool.add("".join(rng.choice("abcdef") for _ in range(rng.randint(2, 4))))
    items = [Example(prompt=cfg["template"].format(text=w), answer=w[::-1]) for w in sorted(pool)]
    splits = split(
        items,
        n_train=cfg["n_train"],
        n_val=cfg["n_val"],
        n_test=cfg["n_test"],
        seed=cfg["split_seed"],
    )
    return TaskData(
        name="tiny",
        metric="exact_match",
        splits=splits,
        score=exact_match,
        max_new_tokens=cfg["max_new_tokens"],
        source="built-in (reverse 2-4 letters from a-f)",
        license="n/a",
    )
