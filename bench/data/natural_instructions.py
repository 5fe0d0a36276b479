"""Natural Instructions v1 (Mishra et al. 2022) as BIG-bench 1.0.0 ships it: 61 crowdsourcing
subtasks, each an instruction and its human-written examples. Used twice:

- seeds: the seed subtasks' instructions prompt the self-instruct pipeline (bench/self_instruct.py),
  and their examples train ``natural_instructions``, the human-data counterpart of
  ``self_instruct``;
- held-out evaluation: validation and test of both tasks come from the other subtasks, scored by
  ROUGE-L against every reference, as Super-NaturalInstructions reports (Wang et al. 2022).

A subtask's instruction is its ``Prompt:`` line ("Write a question about the passage."), the
one-sentence summary that ends each crowd instruction: the full definition runs 300-3,000
characters, which would crowd the examples out of a 256-token context. Every text is squeezed to
one line: answers are generated up to the first newline.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from bench import assets
from bench.data import Example, TaskData, first_line, register

SOURCE = (
    "BIG-bench 1.0.0 (PyPI sdist) natural_instructions: Natural Instructions v1 "
    "(Mishra et al. 2022, allenai/natural-instructions)"
)
# BIG-bench distributes the task under its Apache-2.0 license; the sdist states no other terms,
# and the source datasets (Quoref, MC-TACO, CosmosQA, DROP, ...) keep their own licenses.
LICENSE = "Apache-2.0 (BIG-bench); source datasets under their own licenses"

# The subtask split is fixed here, not a config knob: the generator's seeds and both tasks'
# held-out evaluation must always agree (a held-out subtask seeding the generator would leak).
SPLIT_SEED = 0
MIN_SEEDS = 50  # at least this many seed subtasks; the rest (at most 11 of 61) are held out

_PROMPT = re.compile(r"Prompt:\s*(.+?)\s*$", re.S)
_WORD = re.compile(r"[a-z0-9]")  # what rouge_score's tokenizer keeps


@dataclass(frozen=True)
class Subtask:
    name: str  # e.g. subtask001_quoref_question_generation
    instruction: str
    examples: tuple[tuple[str, tuple[str, ...]], ...]  # (input, targets) as in the JSON

    def pairs(self, max_input_chars: int) -> list[tuple[str, tuple[str, ...]]]:
        """(input, references) as one-line texts, for inputs up to max_input_chars (the targets
        of only those are squeezed: most inputs are long passages, 600K targets cost seconds)."""
        out = []
        for raw, targets in self.examples:
            if len(x := flat(raw)) <= max_input_chars:
                refs = tuple(dict.fromkeys(r for r in map(flat, targets) if r))  # unique, in order
                if refs:
                    out.append((x, refs))
        return out


@dataclass(frozen=True)
class NIExample(Example):
    """An Example with every reference answer (``answer`` is the first) and its subtask."""

    references: tuple[str, ...] = ()
    subtask: str = ""


def flat(text: str) -> str:
    return " ".join(text.split())


def task_dir() -> Path:
    root = assets.ensure("bigbench") / "bigbench-1.0.0/bigbench/benchmark_tasks"
    return root / "natural_instructions"


@cache
def subtask_names() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in task_dir().glob("subtask*") if p.is_dir()))


def source_of(name: str) -> str:
    """The source dataset a subtask was built from: subtask001_quoref_... -> quoref."""
    return name.split("_")[1]


@cache
def subtask_split() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(seed, held-out) subtask names, disjoint, split by source dataset: the subtasks of one
    dataset share their passages (quoref's question and answer generation read the same ones),
    so a held-out subtask must have no sibling among the seeds. The datasets are shuffled with
    SPLIT_SEED and whole datasets are held out, in that order, while the held-out subtasks stay
    within len - MIN_SEEDS."""
    names = subtask_names()
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(source_of(n), []).append(n)
    order = sorted(groups)
    random.Random(SPLIT_SEED).shuffle(order)
    held: list[str] = []
    for g in order:
        if len(held) + len(groups[g]) <= len(names) - MIN_SEEDS:
            held += groups[g]
    heldout = tuple(sorted(held))
    return tuple(n for n in names if n not in held), heldout


def instruction_of(task_prefix: str) -> str:
    m = _PROMPT.search(task_prefix)
    if m is None:
        raise ValueError(f"no 'Prompt:' line in natural_instructions prefix {task_prefix[:80]!r}")
    return flat(m[1])


def load_subtask(name: str) -> Subtask:
    if name not in subtask_names():
        raise ValueError(f"unknown natural_instructions subtask {name!r}; valid: {subtask_names()}")
    with open(task_dir() / name / "task.json", encoding="utf-8") as f:
        raw = json.load(f)
    examples = tuple(
        (e["input"], (e["target"],) if isinstance(e["target"], str) else tuple(e["target"]))
        for e in raw["examples"]
    )
    return Subtask(name=name, instruction=instruction_of(raw["task_prefix"]), examples=examples)


def has_words(text: str) -> bool:
    """ROUGE-L scores nothing but lower-case letters and digits: an answer without any would
    score 0 even against itself."""
    return bool(_WORD.search(text.lower()))


def fits(prompt: str, answer: str, cfg: Mapping[str, Any]) -> bool:
    return (
        len(prompt) <= int(cfg["max_prompt_chars"])
        and len(answer) <= int(cfg["max_answer_chars"])
        and has_words(answer)
    )


def examples_of(sub: Subtask, cfg: Mapping[str, Any]) -> list[NIExample]:
    """The subtask's examples that fit the length limits, templated, shuffled per subtask with
    the task's split_seed (a str seed: the same in every process)."""
    out: dict[str, NIExample] = {}
    for inp, refs in sub.pairs(int(cfg["max_prompt_chars"])):
        prompt = cfg["template"].format(instruction=sub.instruction, input=inp)
        if fits(prompt, refs[0], cfg):
            out.setdefault(prompt, NIExample(prompt, refs[0], refs, sub.name))
    items = [out[k] for k in sorted(out)]
    random.Random(f"{cfg['split_seed']}:{sub.name}").shuffle(items)
    return items


def interleave(pools: Iterable[Sequence[NIExample]]) -> list[NIExample]:
    """Round-robin over the subtasks' pools: any prefix draws evenly from every subtask."""
    pools = [list(p) for p in pools]
    out: list[NIExample] = []
    for i in range(max((len(p) for p in pools), default=0)):
        out += [p[i] for p in pools if i < len(p)]
    return out


def heldout_splits(cfg: Mapping[str, Any]) -> dict[str, list[Example]]:
    """Validation and test from the held-out subtasks (test first: a larger n_val never changes
    the test set). Shared by every task trained for this evaluation."""
    order = interleave(examples_of(load_subtask(n), cfg) for n in subtask_split()[1])
    n_val, n_test = int(cfg["n_val"]), int(cfg["n_test"])
    if len(order) < n_val + n_test:
        raise ValueError(
            f"the held-out subtasks have {len(order)} examples within task.max_prompt_chars and "
            f"task.max_answer_chars; n_test={n_test} + n_val={n_val} asks for more"
        )
    return {"test": order[:n_test], "validation": order[n_test : n_test + n_val]}


@cache
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)  # Super-NI's setting


def rouge_l(prediction: str, reference: str | Sequence[str]) -> float:
    """ROUGE-L F1 of the first generated line, the maximum over the references."""
    refs = [reference] if isinstance(reference, str) else list(reference)
    pred = first_line(prediction)
    return max(_scorer().score(flat(r), pred)["rougeL"].fmeasure for r in refs)


def task_data(name: str, train: list[Example], cfg: Mapping[str, Any], **kw: Any) -> TaskData:
    """TaskData with the held-out evaluation and ROUGE-L: the same for every instruction task."""
    seeds, heldout = subtask_split()
    info = {"multi_reference": True, "seed_subtasks": len(seeds), "heldout_subtasks": heldout}
    return TaskData(
        name=name,
        metric="rougeL",
        splits={"train": train, **heldout_splits(cfg)},
        score=rouge_l,
        max_new_tokens=int(cfg["max_new_tokens"]),
        info={**info, **kw.pop("info", {})},
        **kw,
    )


@register("natural_instructions")
def build(cfg: Mapping[str, Any]) -> TaskData:
    """Human-written examples of the seed subtasks, drawn evenly across them."""
    seeds = subtask_split()[0]
    order = interleave(examples_of(load_subtask(n), cfg) for n in seeds)
    n_train = int(cfg["n_train"])
    if len(order) < n_train:
        raise ValueError(f"task.n_train={n_train}: the seed subtasks have {len(order)} examples")
    return task_data(
        "natural_instructions",
        order[:n_train],
        cfg,
        source=f"{SOURCE}; {len(seeds)} seed subtasks (train), held-out subtasks (eval)",
        license=LICENSE,
        info={"available": len(order)},
    )
