"""How many tokens one evaluation of a model state runs through the model, against the tokens
the run trains on: a floor under the evaluation / training time ratio that no implementation of
the same evaluation can go below.

A training token costs one forward pass plus its backward: at most ~3 forward-equivalents
(full fine-tuning, with weight gradients), ~2 when only activation gradients flow (LoRA, prompt
methods), ~1 when the backward stops after a few blocks (freeze). An evaluated token costs at
least one forward. So, if evaluation runs E tokens per state and training T, the time ratio
is at least E / (c * T), with c those forward-equivalents per training token, and a ratio of at
most r needs c >= E / (r * T). The token counts come from the evaluation's own inputs (the
tokenizer, the task splits and `conf/eval`), so they follow the settings; "shared" counts every
common prompt prefix once (the hallucination demonstrations, a probe item's context across its
choices, a test prompt between its generation and its answer bits), the floor for an
implementation that caches those prefixes' keys and values.

`python -m bench.evalcost --sweep default` prints, per cell of the sweep, E and T and the
measured ratio of its fully evaluated records (after-evaluation + inference timing + their share
of the cell's base evaluation, over training seconds).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import yaml

CONF = Path(__file__).resolve().parent.parent / "conf"
MAX_FWD_PER_TRAIN_TOKEN = 3.0  # forward + backward with weight gradients (~2 forwards)


@dataclass(frozen=True)
class Part:
    name: str
    tokens: int  # tokens the model runs (prompt + generated, or teacher-forced) for this part
    shared: int  # the same, with every common prompt prefix counted once


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    n = min(map(len, seqs), default=0)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return n


def _probe_text(name: str) -> str:
    """The probe's doc_to_text (bench/probes/<name>.yaml), a template over {{question}}."""
    from bench.metrics.settings import PROBE_DIR

    return str(yaml.safe_load((PROBE_DIR / f"{name}.yaml").read_text())["doc_to_text"])


def general_parts(tok: Any, ev: Mapping[str, Any]) -> list[Part]:
    """Tokens per state of the general-ability metrics and inference timing of `conf/eval`."""
    from bench.metrics import hallucination as hal
    from bench.metrics.probes import probe_file

    def n_tok(s: str) -> int:
        return len(tok(s, add_special_tokens=False)["input_ids"])

    parts = []
    nll = ev["nll"]
    if nll["enabled"]:
        parts.append(Part("nll", k := nll["n_passages"] * (nll["max_tokens"] + 1), k))
    r = ev["repetition"]
    if r["enabled"]:
        k = r["n_prefixes"] * (r["prefix_tokens"] + 1 + r["max_new_tokens"])
        k += r["tf_documents"] * r["tf_tokens"]
        parts.append(Part("repetition", k, k))
    p = ev["probes"]
    if p["enabled"]:
        full = shared = 0
        for name in p["tasks"]:
            rows = probe_file(name).read_text(encoding="utf-8").splitlines()[: p["limit"]]
            text = _probe_text(name)
            for row in map(json.loads, rows):
                ctx = n_tok(text.replace("{{question}}", row["question"]))
                conts = [n_tok(" " + c) for c in row["choices"]]
                full += len(conts) * ctx + sum(conts)
                shared += ctx + sum(conts)
        parts.append(Part("probes", full, shared))
    h = ev["hallucination"]
    if h["enabled"]:
        counts = {k: h[k] for k in ("n_capitals", "n_elements", "n_known_unknowns", "n_invented")}
        ids = [
            tok(hal.prompt(q.text), add_special_tokens=False)["input_ids"]
            for q in hal.questions(**counts, seed=ev["seed"])
        ]
        k = sum(map(len, ids)) + len(ids) * h["max_new_tokens"]
        parts.append(Part("hallucination", k, k - (len(ids) - 1) * _common_prefix(ids)))
    i = ev["inference"]
    if i["enabled"]:  # unmerged only: the merged copy is timed for LoRA-type methods alone
        k = (i["warmup"] + i["repeats"]) * i["batch_size"] * (i["prompt_tokens"] + i["new_tokens"])
        parts.append(Part("inference", k, k))
    return parts


def task_parts(tok: Any, task_cfg: Mapping[str, Any], seq_len: int) -> list[Part]:
    """Test generation (prompt + reference answer + a stop token: greedy decoding that is right
    stops there), test answer bits (teacher-forced) and validation loss."""
    from bench import data
    from bench.train import encode

    t = data.build(task_cfg)

    def n_tok(s: str) -> int:
        return len(tok(s, add_special_tokens=False)["input_ids"])

    test, val = t.splits["test"], t.splits["validation"]
    gen = sum(n_tok(e.prompt) + n_tok(" " + e.answer) + 1 for e in test)
    tf_test = sum(len(encode(e, tok, seq_len).input_ids) for e in test)
    tf_val = sum(len(encode(e, tok, seq_len).input_ids) for e in val)
    return [
        Part("generation", gen, gen),
        Part("answer_bits", tf_test, 0),  # the test prompt's forward can also start generation
        Part("val_loss", tf_val, tf_val),
    ]


def measured_ratios(folder: Path) -> tuple[dict[tuple[str, str, str], list[float]], dict]:
    """(model, task, label) -> eval/train time ratios of the fully evaluated records, and
    (model, task) -> the training budget of the cell (as its records resolved it)."""
    recs = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    recs = [r for r in recs if r.get("status") == "success"]
    per_key: dict[str, int] = defaultdict(int)  # runs sharing one base evaluation
    for r in recs:
        per_key[r["timing"].get("before_key")] += 1
    out: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    budgets = {}
    for r in recs:
        budgets[(r["model"], r["task"])] = r["config"]["budget"]
        t, tr = r["timing"], r["train"]["seconds"]
        if r.get("evaluated") != "all" or not tr:
            continue
        cost = t["after_eval_s"] + (t.get("inference_s") or 0.0)
        cost += (t.get("before_eval_s") or 0.0) / per_key[t.get("before_key")]
        out[(r["model"], r["task"], r["label"])].append(cost / tr)
    return out, budgets


def table(sweep: str, results_dir: Path, target: float) -> str:
    from transformers import AutoTokenizer

    from bench import models

    folder = results_dir / sweep
    ratios, budgets = measured_ratios(folder)
    ev = yaml.safe_load((CONF / "eval" / "default.yaml").read_text())
    lines = [
        f"Evaluation tokens per state (E) against training tokens (T), sweep `{sweep}`; a ratio "
        f"<= {target} needs training to cost >= E / ({target} T) forward passes per token, at "
        f"most ~{MAX_FWD_PER_TRAIN_TOKEN:g} (full fine-tuning). 'shared': common prompt "
        "prefixes counted once. Measured: mean (min-max) over the cell's fully evaluated runs; c = "
        "E / (T x ratio), what a training token costs in evaluated tokens at today's speeds.",
        "",
        "| model | task | T | E | E shared | needed fwd/token | needed, shared | method: measured ratio |",  # noqa: E501
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    notes = []
    for model, task in sorted({(m, t) for m, t, _ in ratios}):
        mcfg = yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text())
        tcfg = yaml.safe_load((CONF / "task" / f"{task}.yaml").read_text())
        b = budgets[(model, task)]
        train_tokens = b["steps"] * b["grad_accum"] * b["batch_size"] * b["seq_len"]
        tok = AutoTokenizer.from_pretrained(str(models.model_dir(mcfg)))
        parts = general_parts(tok, ev) + task_parts(tok, tcfg, b["seq_len"])
        e, es = sum(p.tokens for p in parts), sum(p.shared for p in parts)
        meas = ", ".join(
            f"{lab} {(x := fmean(v)):.2f} ({min(v):.2f}-{max(v):.2f}; c {e / train_tokens / x:.1f})"
            for (m, t, lab), v in sorted(ratios.items())
            if (m, t) == (model, task)
        )
        lines.append(
            f"| {model} | {task} | {train_tokens:,} | {e:,} | {es:,} | "
            f"{e / (target * train_tokens):.2f} | {es / (target * train_tokens):.2f} | {meas} |"
        )
        notes.append(f"- {model} x {task}, tokens / shared: " + ", ".join(
            f"{p.name} {p.tokens:,} / {p.shared:,}" for p in parts))  # fmt: skip
    return "\n".join([*lines, "", "Parts:", *notes])


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.evalcost", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--sweep", default="default")
    ap.add_argument("--results-dir", default="results", type=Path)
    ap.add_argument("--target", default=0.25, type=float, help="evaluation / training time ratio")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (a.results_dir / a.sweep).is_dir():
        raise SystemExit(f"no results folder {a.results_dir / a.sweep}")
    print(table(a.sweep, a.results_dir, a.target))


if __name__ == "__main__":
    main()
