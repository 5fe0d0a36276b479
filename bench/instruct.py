"""Self-Instruct's model-free parts (Wang et al. 2022): the settings schema, the prompts, and the
filters a candidate instruction or instance must pass. The pipeline is bench/self_instruct.py.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from bench.data import natural_instructions as ni
from bench.methods import Strict

INSTRUCTION_REASONS = ("truncated", "empty", "length", "keyword", "start", "duplicate", "rouge")
INSTANCE_REASONS = ("truncated", "empty_output", "length")
_TASK_PREFIX = re.compile(r"^\s*Task\s*\d+\s*[:.]\s*", re.I)


class Generation(Strict):
    """transformers' generation options; temperature and top_p apply only when do_sample."""

    do_sample: bool
    temperature: PositiveFloat
    top_p: float = Field(gt=0.0, le=1.0)
    max_new_tokens: PositiveInt


class Filters(Strict):
    rouge_threshold: float = Field(gt=0.0, le=1.0)
    min_words: PositiveInt
    max_words: PositiveInt
    keywords: list[str]
    max_input_chars: PositiveInt
    max_output_chars: PositiveInt

    @model_validator(mode="after")
    def _words(self) -> Filters:
        if self.min_words > self.max_words:
            raise ValueError(
                f"self_instruct.filters.min_words: {self.min_words} must be <= max_words "
                f"({self.max_words})"
            )
        return self


class Settings(Strict):
    """conf/self_instruct/*.yaml; every key here decides the data (and so the dataset key)."""

    n_examples: PositiveInt
    max_rounds: PositiveInt
    batch_size: PositiveInt
    seed: NonNegativeInt
    seed_demos: PositiveInt
    machine_demos: NonNegativeInt
    instance_demos: PositiveInt
    max_demo_chars: PositiveInt
    # no `auto`: the data, and so its key, must not depend on the machine's bf16 support
    precision: Literal["fp32", "bf16-autocast", "bf16"]
    instructions: Generation
    instances: Generation
    filters: Filters


# ----------------------------------------------------------------------------- filters


@dataclass
class Pool:
    """The instruction pool (seeds first) with the paper's novelty test."""

    threshold: float
    texts: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        from rouge_score import rouge_scorer

        # as the paper's code: ROUGE-L F1, rouge_score's tokenizer, no stemming
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    def add(self, text: str, *, generated: bool) -> None:
        self.texts.append(text)
        self._seen.add(_norm(text))
        if generated:
            self.generated.append(text)

    def rouge(self, text: str) -> float:
        """The highest ROUGE-L F1 of `text` against any pool instruction."""
        return max((self.scorer.score(t, text)["rougeL"].fmeasure for t in self.texts), default=0.0)

    def novel(self, text: str) -> str | None:
        """None if `text` may join the pool, else why not (duplicate or rouge)."""
        if _norm(text) in self._seen:
            return "duplicate"
        return "rouge" if self.rouge(text) >= self.threshold else None


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def invalid(text: str, f: Filters) -> str | None:
    """The first validity check `text` fails (empty, length, keyword, start), or None."""
    if not text:
        return "empty"
    if not f.min_words <= len(text.split()) <= f.max_words:
        return "length"
    low = text.lower()
    if any(re.search(rf"\b{re.escape(k.lower())}\b", low) for k in f.keywords):
        return "keyword"
    if not (text[0].isascii() and text[0].isalnum()):
        return "start"
    return None


def parse_instructions(text: str, finished: bool) -> list[tuple[str, bool]]:
    """(candidate, truncated) per line of a continuation, "Task k:" prefixes removed; the last
    line is truncated unless the row ended by itself. A continuation without a line counts as
    one empty candidate, so every prompt yields at least one."""
    lines = [ni.flat(_TASK_PREFIX.sub("", line)) for line in text.split("\n")]
    out = [(c, False) for c in lines if c]
    if out and not finished and lines[-1]:
        out[-1] = (out[-1][0], True)
    return out or [("", False)]


# ----------------------------------------------------------------------------- prompts


def instruction_prompt(rng: random.Random, seeds: Sequence[str], pool: Pool, s: Settings) -> str:
    machine = rng.sample(pool.generated, min(s.machine_demos, len(pool.generated)))
    human = rng.sample(list(seeds), s.seed_demos + s.machine_demos - len(machine))
    demos = human + machine
    rng.shuffle(demos)
    lines = [f"Task {i + 1}: {t}" for i, t in enumerate(demos)]
    return "Come up with a series of tasks:\n" + "\n".join(lines) + f"\nTask {len(demos) + 1}:"


def demo_pool(subtasks: Sequence[ni.Subtask], max_chars: int) -> list[list[tuple[str, str, str]]]:
    """Per seed subtask, up to 20 short examples (instruction, input, output) to demonstrate."""
    out = []
    for sub in subtasks:
        short = [
            (sub.instruction, x, r[0]) for x, r in sub.pairs(max_chars) if len(r[0]) <= max_chars
        ]
        if short:
            out.append(short[:20])
    return out


def instance_prompt(
    rng: random.Random, demos: Sequence[Sequence[tuple[str, str, str]]], instruction: str, k: int
) -> str:
    chosen = [rng.choice(d) for d in rng.sample(list(demos), min(k, len(demos)))]
    shots = "".join(f"Task: {i}\nInput: {x}\nOutput: {y}\n\n" for i, x, y in chosen)
    return (
        f"Come up with an input and an output for each task.\n\n{shots}Task: {instruction}\nInput:"
    )
