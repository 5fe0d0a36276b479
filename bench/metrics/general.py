"""One entry point for the general-ability measurements of one model state.

The run pipeline calls `evaluate_general` on the base model ("before": adapter disabled / not yet
applied) and on the fine-tuned model ("after"), then `forgetting_summary(before, after)` for the
record's `forgetting` block, and `measure_inference` once on the fine-tuned model.

Definitions: bench/metrics/nll.py (held-out NLL), probes.py (lm-eval probe suite),
repetition.py (seq_rep_n, rep_l, wrep_l, distinct_n, loop share), hallucination.py.
The model is measured in whatever dtype / device / autocast context the caller runs it in; its
train/eval flag and the global RNG states are restored afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bench.metrics import hallucination as hal
from bench.metrics import repetition as rep
from bench.metrics._util import continue_ids, eval_mode, prefix_token_id, preserved_rng
from bench.metrics.inference import measure_inference
from bench.metrics.nll import heldout_documents, heldout_texts, score_passages, summarize
from bench.metrics.probes import run_probes
from bench.metrics.settings import EvalSettings, parse

__all__ = ["evaluate_general", "forgetting_summary", "measure_inference"]


class _Clock:
    def __init__(self, wall: dict[str, float], cpu: dict[str, float]) -> None:
        self.wall, self.cpu, self.t0, self.c0 = wall, cpu, 0.0, 0.0

    def start(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def stop(self, name: str) -> None:
        self.wall[name] = time.perf_counter() - self.t0
        self.cpu[name] = time.process_time() - self.c0


def _repetition(model: Any, tok: Any, s: EvalSettings) -> dict[str, Any]:
    r = s.repetition
    # Prompts: the first prefix_tokens tokens of held-out paragraphs (disjoint from the NLL set),
    # after the same prefix token the NLL passages are scored with.
    prompts = [
        [prefix_token_id(tok), *tok(t, add_special_tokens=False)["input_ids"][: r.prefix_tokens]]
        for t in heldout_texts(r.n_prefixes, part="prefix")
    ]
    d = s.decoding  # greedy by default; a sampled setting continues each prompt k times
    k = d.num_samples if d.do_sample else 1
    conts = continue_ids(
        model,
        tok,
        [p for p in prompts for _ in range(k)],
        max_new_tokens=r.max_new_tokens,
        batch_size=s.batch_size,
        min_new_tokens=r.max_new_tokens if r.suppress_eos else 0,
        decoding=d,
        seed=s.seed,
    )
    out = rep.sequence_level(conts, tail=r.loop_tail, max_period=r.loop_max_period)
    tf = score_passages(
        model,
        tok,
        heldout_documents(r.tf_documents),
        max_tokens=r.tf_tokens,
        batch_size=s.batch_size,
    )
    out.update(rep.token_level([(p.targets, p.preds) for p in tf], r.windows))
    out["tf_tokens"] = sum(len(p.targets) for p in tf)
    out["examples"] = [tok.decode(c, skip_special_tokens=True) for c in conts[:3]]
    return out


def evaluate_general(
    model: Any, tok: Any, cfg: Mapping[str, Any] | EvalSettings | None
) -> dict[str, Any]:
    """{"nll": float, "probes": {name: acc}, "repetition": {...}, "hallucination": {...}} plus
    detail blocks (`nll_detail` with bits per byte, `probe_n` and `probe_chance` (the expected
    accuracy of a uniform guess over each item's choices), `timing` in wall seconds,
    `cpu_seconds` of this process). A disabled part is None."""
    s = parse(cfg)
    out: dict[str, Any] = {"nll": None, "probes": None, "repetition": None, "hallucination": None}
    if not s.enabled:
        return out
    timing: dict[str, float] = {}  # wall seconds per part
    cpu: dict[str, float] = {}  # process CPU seconds (all threads): contention-free cost
    clock = _Clock(timing, cpu)
    with eval_mode(model), preserved_rng():
        if s.nll.enabled:
            clock.start()
            scores = score_passages(
                model,
                tok,
                heldout_texts(s.nll.n_passages, part="nll"),
                max_tokens=s.nll.max_tokens,
                batch_size=s.batch_size,
            )
            out["nll_detail"] = summarize(scores)
            out["nll"] = out["nll_detail"]["nll"]
            clock.stop("nll")
        if s.repetition.enabled:
            clock.start()
            out["repetition"] = _repetition(model, tok, s)
            clock.stop("repetition")
        if s.probes.enabled:
            clock.start()
            res = run_probes(
                model,
                tok,
                names=s.probes.tasks,
                limit=s.probes.limit,
                batch_size=s.batch_size,
                seed=s.seed,
            )
            out["probes"] = {k: v["acc"] for k, v in res.items()}
            out["probe_n"] = {k: v["n"] for k, v in res.items()}
            out["probe_chance"] = {k: v["chance"] for k, v in res.items()}
            clock.stop("probes")
        if s.hallucination.enabled:
            clock.start()
            h = s.hallucination
            qs = hal.questions(
                n_capitals=h.n_capitals,
                n_elements=h.n_elements,
                n_known_unknowns=h.n_known_unknowns,
                n_invented=h.n_invented,
                seed=s.seed,
            )
            out["hallucination"] = hal.evaluate(
                model, tok, qs=qs, max_new_tokens=h.max_new_tokens, batch_size=s.batch_size
            )
            clock.stop("hallucination")
    timing["total"], cpu["total"] = sum(timing.values()), sum(cpu.values())
    out["timing"], out["cpu_seconds"] = timing, cpu
    return out


def _rel_drop(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None  # undefined: a probe the base model scores 0 on cannot drop relatively
    return (before - after) / before


def forgetting_summary(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The record's `forgetting` block from two `evaluate_general` results.

    nll_delta = nll_after - nll_before (> 0: the model got worse on general text), in nats per
    token; nll_bpb_* the same in bits per byte of the scored text.
    probes[name] = {before, after, relative_drop = (before - after) / before, n, chance};
    mean_relative_drop averages relative_drop over the probes where it is defined (before > 0),
    else None."""
    nb, na = before.get("nll"), after.get("nll")
    bb, ba = ((x.get("nll_detail") or {}).get("bpb") for x in (before, after))
    pb, pa = before.get("probes") or {}, after.get("probes") or {}
    n, chance = before.get("probe_n") or {}, before.get("probe_chance") or {}
    probes = {
        k: {
            "before": pb[k],
            "after": pa[k],
            "relative_drop": _rel_drop(pb[k], pa[k]),
            "n": n.get(k),
            "chance": chance.get(k),
        }
        for k in pb
        if k in pa
    }
    drops = [p["relative_drop"] for p in probes.values() if p["relative_drop"] is not None]
    return {
        "nll_before": nb,
        "nll_after": na,
        "nll_delta": na - nb if nb is not None and na is not None else None,
        "nll_bpb_before": bb,
        "nll_bpb_after": ba,
        "nll_bpb_delta": ba - bb if bb is not None and ba is not None else None,
        "probes": probes,
        "mean_relative_drop": sum(drops) / len(drops) if drops else None,
    }
