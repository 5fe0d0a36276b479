"""Integer arithmetic from BIG-bench ``arithmetic`` ("What is 80 plus 29?" -> "109").

Each subtask (``<n>_digit_<op>``) is a JSON file of questions with a numeric target. The question
is parsed into operands and operator so templates can restate it, and every target is checked
against the recomputed result. Scoring follows BIG-bench's own ``output_regex``: the first
integer in the first generated line must equal the target (sign included; SQuAD normalisation
would drop the minus sign).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import assets
from bench.data import Example, TaskData, first_line, register, split_unique

SOURCE = "BIG-bench 1.0.0 (PyPI sdist) arithmetic"
LICENSE = "Apache-2.0 (BIG-bench)"

OPS: dict[str, str] = {"plus": "+", "minus": "-", "times": "*", "divided by": "/"}
_QUESTION = re.compile(r"^What is (-?\d+) (plus|minus|times|divided by) (-?\d+)\?$")
_NUMBER = re.compile(r"[-+]?\d+")  # BIG-bench arithmetic's output_regex
_SUBTASK = re.compile(r"^[1-5]_digit_(addition|subtraction|multiplication|division)$")


@dataclass(frozen=True)
class Problem:
    a: int
    op: str  # word as written in the question: plus, minus, times, divided by
    b: int
    question: str  # the original BIG-bench input
    target: str  # the original BIG-bench target

    def value(self) -> int:
        if self.op == "plus":
            return self.a + self.b
        if self.op == "minus":
            return self.a - self.b
        if self.op == "times":
            return self.a * self.b
        quotient, rest = divmod(self.a, self.b)
        if rest:
            raise ValueError(f"{self.question!r}: BIG-bench division is exact, got a remainder")
        return quotient


def parse(question: str, target: str) -> Problem:
    """Parse one BIG-bench arithmetic example and check its target against the arithmetic."""
    m = _QUESTION.match(question.strip())
    if m is None:
        raise ValueError(f"unrecognised arithmetic question {question!r}")
    p = Problem(a=int(m[1]), op=m[2], b=int(m[3]), question=question.strip(), target=target)
    if p.value() != int(target):
        raise ValueError(f"{question!r}: target {target} but the arithmetic gives {p.value()}")
    return p


def number_match(prediction: str, reference: str) -> float:
    """1.0 when the first integer on the first generated line equals the reference number."""
    m = _NUMBER.search(first_line(prediction))
    return float(m is not None and int(m[0]) == int(reference))


def task_dir() -> Path:
    return assets.ensure("bigbench") / "bigbench-1.0.0/bigbench/benchmark_tasks/arithmetic"


def available_subtasks() -> list[str]:
    return sorted(p.name for p in task_dir().iterdir() if _SUBTASK.match(p.name))


def load(subtasks: Sequence[str]) -> list[Problem]:
    valid = available_subtasks()
    bad = [s for s in subtasks if s not in valid]
    if bad or not subtasks:
        raise ValueError(f"task.subtasks={list(subtasks)!r}: valid choices are {valid}")
    problems: list[Problem] = []
    for name in sorted(set(subtasks)):
        with open(task_dir() / name / "task.json", encoding="utf-8") as f:
            problems += [parse(e["input"], e["target"]) for e in json.load(f)["examples"]]
    return problems


@register("arithmetic")
def build(cfg: Mapping[str, Any]) -> TaskData:
    problems = load(list(cfg["subtasks"]))
    template: str = cfg["template"]
    # identical questions across subtasks count once
    examples = (
        Example(
            prompt=template.format(question=p.question, a=p.a, b=p.b, op=p.op, symbol=OPS[p.op]),
            answer=p.target,
        )
        for p in problems
    )
    items, splits = split_unique(examples, cfg)
    return TaskData(
        name="arithmetic",
        metric="exact_match",
        splits=splits,
        score=number_match,
        max_new_tokens=int(cfg["max_new_tokens"]),
        source=f"{SOURCE}; subtasks {sorted(set(cfg['subtasks']))}",
        license=LICENSE,
        info={"available": len(items)},
    )
