"""Multiple-choice math word problems from BIG-bench ``elementary_math_qa`` (MathQA-derived).

Each example is a word problem (optionally with an operation-sequence hint) and 3-10 options, one
correct. The prompt lists the options as ``A) ... B) ...``; the model answers with the letter
(``answer_format: letter``, chance is ~20%) or with the option text (``answer_format: text``).
Letters are scored without SQuAD normalisation, which would delete the article-like "a".
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench import assets
from bench.data import Example, TaskData, exact_match, first_line, register, split_unique

SOURCE = "BIG-bench 1.0.0 (PyPI sdist) elementary_math_qa (from MathQA, Amini et al. 2019)"
LICENSE = "Apache-2.0 (BIG-bench and MathQA)"

SUBSETS: tuple[str, ...] = (
    "question_only",
    "question_with_mathematical_hint",
    "question_with_language_hint",
    "mathematical_hint_only",
    "language_hint_only",
)
FORMATS: tuple[str, ...] = ("letter", "text")
LETTERS = string.ascii_uppercase
_LETTER = re.compile(r"^\(?([A-Za-z])(?:[).:]|\s|$)")
# 137 source examples carry a Python list repr split at commas ("[' 16'", "' $ 1", "920']"): the
# option set is corrupt (sometimes an extra option), so these examples are dropped
_CORRUPT = re.compile(r"^\[?'|'\]?$")


def letter_match(prediction: str, reference: str) -> float:
    """1.0 when the first line starts with the reference option letter ("B", "B)", "(b) ...")."""
    m = _LETTER.match(first_line(prediction))
    return float(m is not None and m[1].upper() == reference.upper())


def task_dir() -> Path:
    return assets.ensure("bigbench") / "bigbench-1.0.0/bigbench/benchmark_tasks/elementary_math_qa"


def _example(raw: Mapping[str, Any], template: str, answer_format: str) -> Example | None:
    # JSON object order is the MathQA option order; json.load keeps it
    options = [" ".join(o.split()) for o in raw["target_scores"]]
    if any(_CORRUPT.search(o) for o in options):
        return None
    correct = [i for i, v in enumerate(raw["target_scores"].values()) if v == 1]
    if len(correct) != 1:
        raise ValueError(f"expected exactly one correct option in {raw!r}")
    rendered = " ".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
    question = " ".join(raw["input"].split())  # hints sit on a second line; keep one line
    answer = LETTERS[correct[0]] if answer_format == "letter" else options[correct[0]]
    return Example(prompt=template.format(question=question, options=rendered), answer=answer)


@register("elementary_math_qa")
def build(cfg: Mapping[str, Any]) -> TaskData:
    subset, answer_format = cfg["subset"], cfg["answer_format"]
    if subset not in SUBSETS:
        raise ValueError(f"task.subset={subset!r}: valid choices are {list(SUBSETS)}")
    if answer_format not in FORMATS:
        raise ValueError(f"task.answer_format={answer_format!r}: valid choices are {list(FORMATS)}")
    with open(task_dir() / subset / "task.json", encoding="utf-8") as f:
        raw = json.load(f)["examples"]
    parsed = [_example(r, cfg["template"], answer_format) for r in raw]
    corrupt = sum(ex is None for ex in parsed)
    # hint-only subsets repeat inputs; the first is kept
    items, splits = split_unique([ex for ex in parsed if ex is not None], cfg)
    return TaskData(
        name="elementary_math_qa",
        metric="accuracy" if answer_format == "letter" else "exact_match",
        splits=splits,
        score=letter_match if answer_format == "letter" else exact_match,
        max_new_tokens=int(cfg["max_new_tokens"]),
        source=f"{SOURCE}; subset {subset}",
        license=LICENSE,
        info={
            "available": len(items),
            "dropped_corrupt": corrupt,
            "answer_format": answer_format,
        },
    )
