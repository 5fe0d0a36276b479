"""bench/evalcost: evaluation token counts per part (character tokenizer: tokens = characters)
and measured evaluation / training ratios from hand-made records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bench import evalcost
from bench.metrics import hallucination as hal
from bench.metrics.probes import probe_file
from bench.models import char_tokenizer
from tests.conftest import CONF


def test_common_prefix() -> None:
    assert evalcost._common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert evalcost._common_prefix([[5], [6]]) == 0
    assert evalcost._common_prefix([]) == 0


def test_general_parts_count_characters() -> None:
    ev = yaml.safe_load((CONF / "eval" / "default.yaml").read_text())
    tiny = yaml.safe_load((CONF / "eval" / "tiny.yaml").read_text())
    for k in ("nll", "probes", "repetition", "hallucination", "inference"):
        ev[k] = {**ev[k], **tiny[k]}  # conf/eval/tiny.yaml over its defaults, one level deep
    parts = {p.name: p for p in evalcost.general_parts(char_tokenizer(), ev)}
    assert parts["nll"].tokens == 8 * 49  # 8 passages x (48 tokens + the prefix token)
    assert parts["repetition"].tokens == 4 * (16 + 1 + 40) + 2 * 24
    assert parts["inference"].tokens == 1 * 2 * (16 + 4)
    # hallucination: 8 prompts of len(prompt) characters + 6 new tokens each; the instruction and
    # demonstrations open every prompt, so sharing them saves at least 7 copies of that text
    qs = hal.questions(n_capitals=2, n_elements=2, n_known_unknowns=2, n_invented=2, seed=0)
    h = parts["hallucination"]
    assert h.tokens == sum(len(hal.prompt(q.text)) for q in qs) + 8 * 6
    head = len(hal.prompt("")) - len("Q: \nA:")
    assert h.tokens - h.shared >= 7 * head > 0
    # probes: each choice is scored after its item's context; shared counts the context once
    full = shared = 0
    for name, fmt in (
        ("general_knowledge", "Question: {}\nAnswer:"),
        ("strategyqa", "Question: {}\nAnswer:"),
    ):
        for row in map(json.loads, probe_file(name).read_text().splitlines()[:4]):
            ctx, conts = len(fmt.format(row["question"])), [1 + len(c) for c in row["choices"]]
            full += len(conts) * ctx + sum(conts)
            shared += ctx + sum(conts)
    assert (parts["probes"].tokens, parts["probes"].shared) == (full, shared)


def _rec(run: str, evaluated: str, train_s: float, after: float, inf: float | None) -> dict:
    return {
        "status": "success", "model": "m", "task": "t", "label": run.split("-")[0],
        "evaluated": evaluated, "train": {"seconds": train_s},
        "config": {"budget": {"steps": 10, "grad_accum": 1, "batch_size": 4, "seq_len": 8}},
        "timing": {"before_key": "k", "before_eval_s": 30.0, "after_eval_s": after,
                   "inference_s": inf},
    }  # fmt: skip


def test_measured_ratios(tmp_path: Path) -> None:
    recs = [
        _rec("lora-0", "all", 100.0, 20.0, 2.0),
        _rec("lora-1", "all", 200.0, 20.0, 8.0),
        _rec("full-0", "val", 100.0, 1.0, None),  # a grid point: shares the base, no ratio
    ]
    for i, r in enumerate(recs):
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
    (tmp_path / "bad.json").write_text(json.dumps({**recs[0], "status": "failed"}))
    ratios, budgets = evalcost.measured_ratios(tmp_path)
    # base evaluation 30 s shared by the 3 successful runs of its key: 10 s each
    assert ratios[("m", "t", "lora")] == pytest.approx([(20 + 2 + 10) / 100, (20 + 8 + 10) / 200])
    assert ("m", "t", "full") not in ratios
    assert budgets[("m", "t")]["batch_size"] == 4
