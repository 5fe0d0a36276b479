"""Fine-tuning tasks: a registry of builders, each returning deterministic seeded splits.

A task module registers a builder with ``@register("name")``; the name equals
``conf/task/<name>.yaml``. Builders receive the task config (a mapping) and return a
:class:`TaskData`. A task may also register ``@reference("name")``: what a report of its runs
needs that no run measures (sources beside the task's own, reference points); `make sweep`
writes it once per sweep into ``<results>/<sweep>/reference/<name>.json``.

Splits are drawn with the task's own ``split_seed`` (not the run seed), so every run of a
sweep is scored on the same test examples, and test is never used for selection.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    prompt: str  # the templated prompt; the model continues it with the answer
    answer: str  # the target continuation (no EOS; loss is taken on answer tokens + EOS)


@dataclass
class TaskData:
    name: str
    metric: str  # name of the quality metric reported, e.g. "exact_match"
    splits: dict[str, list[Example]]  # "train", "validation", "test"
    score: Callable[[str, str], float]  # (prediction, reference) -> score in [0, 1]
    max_new_tokens: int
    source: str = "built-in"
    license: str = "n/a"
    info: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[Mapping[str, Any]], TaskData]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        return fn

    return deco


Reference = Callable[[Mapping[str, Any]], dict[str, Any]]
_REFERENCES: dict[str, Reference] = {}


def reference(name: str) -> Callable[[Reference], Reference]:
    def deco(fn: Reference) -> Reference:
        _REFERENCES[name] = fn
        return fn

    return deco


def reference_of(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task's reference measurements (None for a task that registers none)."""
    _import_all()
    fn = _REFERENCES.get(cfg["name"])
    return fn(cfg) if fn else None


def names() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def build(cfg: Mapping[str, Any]) -> TaskData:
    _import_all()
    name = cfg["name"]
    if name not in _REGISTRY:
        raise KeyError(f"task.name={name!r} is not a registered task; valid: {sorted(_REGISTRY)}")
    return _REGISTRY[name](cfg)


def _import_all() -> None:
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


# ----------------------------------------------------------------------------- shared helpers


def split(
    items: Sequence[Example], *, n_train: int, n_val: int, n_test: int, seed: int
) -> dict[str, list[Example]]:
    """Shuffle once with `seed`, then cut test, validation, train (test first, so that growing
    the training set never changes the test set)."""
    need = n_train + n_val + n_test
    if len(items) < need:
        raise ValueError(f"task has {len(items)} examples, config asks for {need}")
    order = list(items)
    random.Random(seed).shuffle(order)
    return {
        "test": order[:n_test],
        "validation": order[n_test : n_test + n_val],
        "train": order[n_test + n_val : need],
    }


def split_unique(
    examples: Iterable[Example], cfg: Mapping[str, Any]
) -> tuple[list[Example], dict[str, list[Example]]]:
    """A repeated prompt counts once (the first is kept), then canonical order (sorted by
    prompt) and `split` with the task config's n_train / n_val / n_test / split_seed."""
    by_prompt: dict[str, Example] = {}
    for ex in examples:
        by_prompt.setdefault(ex.prompt, ex)
    items = [by_prompt[k] for k in sorted(by_prompt)]
    splits = split(
        items,
        n_train=int(cfg["n_train"]),
        n_val=int(cfg["n_val"]),
        n_test=int(cfg["n_test"]),
        seed=int(cfg["split_seed"]),
    )
    return items, splits


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation and articles, squeeze whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def first_line(prediction: str) -> str:
    """Generated answers stop at the first newline: the template puts one answer per line."""
    return prediction.strip().split("\n", 1)[0].strip()


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(first_line(prediction)) == normalize_answer(reference))
