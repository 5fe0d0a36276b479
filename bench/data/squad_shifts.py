"""Extractive QA from BIG-bench ``squad_shifts`` (SQuAD v1.1 dev plus the SQuADShifts sets).

SQuADShifts (Miller et al. 2020) re-collected SQuAD-style questions on new Wikipedia articles,
New York Times articles, Reddit comments and Amazon reviews with the original SQuAD pipeline.
Every question has several crowd-sourced reference answers; quality is SQuAD exact match and
token F1, each the maximum over the references (Rajpurkar et al. 2016).

Paragraphs carry ~5 questions each, so the split is made over paragraphs: a context seen in
training never appears in validation or test.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import assets
from bench.data import Example, TaskData, first_line, normalize_answer, register

# subset name -> file inside the BIG-bench task folder (SQuAD dev is v1.1, the shifts are v1.0)
SUBSETS: dict[str, str] = {
    "squaddev": "squaddev_v1.1.json",
    "new_wiki": "new_wiki_v1.0.json",
    "nyt": "nyt_v1.0.json",
    "reddit": "reddit_v1.0.json",
    "amazon_reviews": "amazon_reviews_v1.0.json",
}

SOURCE = "BIG-bench 1.0.0 (PyPI sdist) squad_shifts: SQuAD v1.1 dev and SQuADShifts v1.0"
LICENSE = "Apache-2.0 (BIG-bench); underlying data: SQuAD v1.1 CC BY-SA 4.0, SQuADShifts CC BY 4.0"


@dataclass(frozen=True)
class QAExample(Example):
    """An Example with every crowd reference; ``answer`` (the training target) is one of them."""

    references: tuple[str, ...] = ()
    subset: str = ""


References = str | Sequence[str]


def _refs(reference: References) -> list[str]:
    return [reference] if isinstance(reference, str) else list(reference)


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if not pred_tokens or not ref_tokens:
        # SQuAD convention: two empty answers agree, one empty answer scores 0
        return float(pred_tokens == ref_tokens)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_em(prediction: str, reference: References) -> float:
    """SQuAD exact match of the first generated line, max over the reference answers."""
    pred = normalize_answer(first_line(prediction))
    return max(float(pred == normalize_answer(r)) for r in _refs(reference))


def squad_f1(prediction: str, reference: References) -> float:
    """SQuAD token F1 (bag of normalised tokens) of the first line, max over the references."""
    pred = normalize_answer(first_line(prediction)).split()
    return max(_f1(pred, normalize_answer(r).split()) for r in _refs(reference))


def _target(answers: Sequence[str]) -> str:
    """The training target: the answer most annotators gave (after SQuAD normalisation), ties to
    the earliest, so the model learns the consensus span rather than annotator 1's."""
    counts = Counter(normalize_answer(a) for a in answers)
    best = max(counts.values())
    return next(a for a in answers if counts[normalize_answer(a)] == best)


def task_dir() -> Path:
    return assets.ensure("bigbench") / "bigbench-1.0.0/bigbench/benchmark_tasks/squad_shifts"


def load_groups(
    subsets: Sequence[str], template: str, max_context_chars: int
) -> list[list[QAExample]]:
    """Questions grouped by paragraph, in a canonical order independent of file order."""
    bad = [s for s in subsets if s not in SUBSETS]
    if bad or not subsets:
        raise ValueError(f"task.subsets={list(subsets)!r}: valid choices are {sorted(SUBSETS)}")
    # (subset, context) -> question -> answers; duplicated questions on one paragraph are merged
    paragraphs: dict[tuple[str, str], dict[str, list[str]]] = {}
    for subset in sorted(set(subsets)):
        with open(task_dir() / SUBSETS[subset], encoding="utf-8") as f:
            data = json.load(f)["data"]
        for article in data:
            for para in article["paragraphs"]:
                context = " ".join(para["context"].split())  # newlines would break the template
                if len(context) > max_context_chars:
                    continue
                qs = paragraphs.setdefault((subset, context), {})
                for qa in para["qas"]:
                    question = " ".join(qa["question"].split())
                    answers = [a["text"].strip() for a in qa["answers"] if a["text"].strip()]
                    if question and answers:
                        qs.setdefault(question, []).extend(answers)
    groups: list[list[QAExample]] = []
    for (subset, context), qs in sorted(paragraphs.items()):
        group = [
            QAExample(
                prompt=template.format(context=context, question=q),
                answer=_target(answers),
                references=tuple(dict.fromkeys(answers)),  # unique, first-seen order
                subset=subset,
            )
            for q, answers in sorted(qs.items())
        ]
        if group:
            groups.append(group)
    return groups


def grouped_split(
    groups: Sequence[Sequence[QAExample]], *, n_train: int, n_val: int, n_test: int, seed: int
) -> dict[str, list[Example]]:
    """Shuffle paragraphs once with `seed`, fill test, then validation, then train with whole
    paragraphs; the unused questions of the paragraph that fills a split are dropped, so no
    context crosses splits. Test is filled first: growing n_train never changes the test set."""
    order = list(groups)
    random.Random(seed).shuffle(order)
    it = iter(order)
    out: dict[str, list[Example]] = {}
    for name, n in (("test", n_test), ("validation", n_val), ("train", n_train)):
        taken: list[Example] = []
        while len(taken) < n:
            group = next(it, None)
            if group is None:
                total = sum(len(g) for g in groups)
                raise ValueError(
                    f"squad_shifts has {total} questions in {len(groups)} paragraphs, too few "
                    f"for n_test={n_test}, n_val={n_val}, n_train={n_train} with whole "
                    "paragraphs per split; lower the sizes or raise max_context_chars"
                )
            taken.extend(group[: n - len(taken)])
        out[name] = taken
    return out


@register("squad_shifts")
def build(cfg: Mapping[str, Any]) -> TaskData:
    groups = load_groups(list(cfg["subsets"]), cfg["template"], int(cfg["max_context_chars"]))
    splits = grouped_split(
        groups,
        n_train=int(cfg["n_train"]),
        n_val=int(cfg["n_val"]),
        n_test=int(cfg["n_test"]),
        seed=int(cfg["split_seed"]),
    )
    return TaskData(
        name="squad_shifts",
        metric="exact_match",
        splits=splits,
        score=squad_em,
        max_new_tokens=int(cfg["max_new_tokens"]),
        source=f"{SOURCE}; subsets {sorted(set(cfg['subsets']))}",
        license=LICENSE,
        info={
            "extra_scores": {"f1": squad_f1},
            # score against every crowd answer: pass `example.references` as the reference
            "multi_reference": True,
            "available": sum(len(g) for g in groups),
            "paragraphs": len(groups),
        },
    )
