"""``self_instruct``: train on a dataset that the self-instruct pipeline (bench/self_instruct.py,
Wang et al. 2022) generated; evaluate on the held-out Natural Instructions subtasks as
``natural_instructions`` does (the same template, validation and test, and ROUGE-L).

A generated dataset lives in ``<cache>/self_instruct/<key>/`` (``data.jsonl`` + ``manifest.json``);
its key hashes the pipeline settings, the generator model's config, the seed subtasks and
VERSION, so the task config's ``dataset`` (a key) names the data a run trains on, and a run id
changes with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from bench import assets
from bench.data import Example, TaskData, register
from bench.data import natural_instructions as ni

# Bump when a change to the pipeline changes what it writes for the same settings: the key, and
# so the dataset a task config names, changes with it (the manifest records the code as well).
VERSION = 1
DATA, MANIFEST = "data.jsonl", "manifest.json"


def datasets_root() -> Path:
    return assets.cache_root() / "self_instruct"


def dataset_key(settings: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    """What a generated dataset depends on: the pipeline settings, the generator's config, the
    seed subtasks and VERSION (not the device, thread count or progress bars)."""
    key = {"version": VERSION, "settings": settings, "model": model, "seeds": ni.subtask_split()[0]}
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(key: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The rows and manifest of a generated dataset; its data must match the manifest's sha256
    (the manifest is written last, so a crash mid-write leaves no dataset that looks whole)."""
    folder = datasets_root() / key
    if not (folder / MANIFEST).exists():
        have = sorted(p.name for p in datasets_root().glob("*") if (p / MANIFEST).exists())
        raise FileNotFoundError(
            f"task.dataset={key!r}: no generated dataset in {folder}; generate it with "
            f"`python -m bench.self_instruct` (it prints the key), or pick one of {have}"
        )
    manifest = json.loads((folder / MANIFEST).read_text())
    digest = sha256_file(folder / DATA)
    if digest != manifest["data"]["sha256"]:
        raise ValueError(f"{folder / DATA}: sha256 {digest} != manifest's; generate it again")
    with open(folder / DATA, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return rows, manifest


@cache
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    # the pipeline's novelty filter's scorer (bench/instruct.py Pool): the paper's, no stemming
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def diversity(texts: Sequence[str], seeds: Sequence[str], top: int = 5) -> dict[str, Any]:
    """How varied a set of instructions is (Wang et al. 2022 sec. 3): distinct leading words
    (imperatives lead with their verb), distinct-n (Li et al. 2016: unique n-grams / n-grams
    over the set, rouge_score's tokens), and each instruction's highest ROUGE-L against a seed
    instruction other than itself, as a histogram in tenths (bin k: [k/10, (k+1)/10), 1.0 in
    the last) with its mean and median."""
    from rouge_score import tokenize

    toks = [tokenize.tokenize(t, None) for t in texts]
    lead = Counter(t[0] for t in toks if t)
    out: dict[str, Any] = {"n": len(texts), "distinct": len({_norm(t) for t in texts})}
    out["leading_words"] = len(lead)
    out["top_leading"] = [
        [w, k] for w, k in sorted(lead.items(), key=lambda x: (-x[1], x[0]))[:top]
    ]
    for n in (1, 2):
        grams = [tuple(t[i : i + n]) for t in toks for i in range(len(t) - n + 1)]
        out[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else None
    best = [
        max((_scorer().score(s, t)["rougeL"].fmeasure for s in seeds if _norm(s) != _norm(t)),
            default=0.0)
        for t in texts
    ]  # fmt: skip
    counts = [0] * 10
    for v in best:  # rounded first: 0.7 is 7/10, not a float a hair below it
        counts[min(math.floor(round(v * 10, 9)), 9)] += 1
    out["rouge_vs_seeds"] = {  # None, not NaN, for an empty set: records are strict JSON
        "mean": statistics.fmean(best) if best else None,
        "median": statistics.median(best) if best else None,
        "counts": counts,
    }
    return out


def summary(
    key: str, manifest: Mapping[str, Any], train: Sequence[str], usable: int
) -> dict[str, Any]:
    """What a run's record carries of its generated dataset (task_info.dataset): the manifest's
    identity and counts, and diversity of the seeds, the pool (computed at generation) and the
    instructions trained on (computed here)."""
    seeds = [ni.load_subtask(n).instruction for n in manifest["seed_tasks"]]
    settings = manifest["generator"]["settings"]
    return {
        "key": key,
        "version": manifest["version"],
        "sha256": manifest["data"]["sha256"],
        "generator": manifest["generator"]["model"]["name"],
        "n_examples": settings["n_examples"],
        "rouge_threshold": settings["filters"]["rouge_threshold"],
        "rounds": manifest["rounds"],
        "target_reached": manifest["target_reached"],
        "counts": manifest["counts"],
        "rows": manifest["data"]["rows"],
        "usable": usable,  # rows within the task's length limits, distinct prompts
        "trained": len(train),
        "diversity": {
            "seeds": diversity(seeds, seeds),
            "pool": manifest.get("diversity"),  # None: generated before the manifest kept it
            "train": diversity(train, seeds),
        },
    }


@register("self_instruct")
def build(cfg: Mapping[str, Any]) -> TaskData:
    rows, manifest = read(str(cfg["dataset"]))
    leaked = sorted(set(manifest["seed_tasks"]) & set(ni.subtask_split()[1]))
    if leaked:  # the held-out evaluation would score the generator's own seeds
        raise ValueError(f"task.dataset={cfg['dataset']}: seeded with held-out subtasks {leaked}")
    items: dict[str, Example] = {}
    instruction: dict[str, str] = {}
    for r in rows:  # the same template and length limits as the human-written examples
        prompt = cfg["template"].format(instruction=r["instruction"], input=r["input"])
        if ni.fits(prompt, r["output"], cfg) and prompt not in items:
            items[prompt] = Example(prompt, r["output"])
            instruction[prompt] = r["instruction"]
    order = [items[k] for k in sorted(items)]
    random.Random(int(cfg["split_seed"])).shuffle(order)
    n_train = int(cfg["n_train"])
    if len(order) < n_train:
        raise ValueError(
            f"task.n_train={n_train}: dataset {cfg['dataset']} has {len(order)} usable examples "
            f"({len(rows)} generated); lower n_train or generate more (self_instruct.n_examples)"
        )
    model = manifest["generator"]["model"]["name"]
    return ni.task_data(
        "self_instruct",
        order[:n_train],
        cfg,
        source=f"self-instruct dataset {cfg['dataset']} generated by {model} from "
        f"{len(manifest['seed_tasks'])} seed subtasks of {ni.SOURCE}; data sha256 "
        f"{manifest['data']['sha256'][:16]}",
        license=f"machine-generated by {model} (see its model config); seeds: {ni.LICENSE}",
        info={
            "available": len(order),
            "dataset": summary(
                str(cfg["dataset"]),
                manifest,
                [instruction[e.prompt] for e in order[:n_train]],
                len(order),
            ),
        },
    )
