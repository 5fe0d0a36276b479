"""What a remedy study (issue 16) opens with: the answers to its questions, generated from the
same paired effects its later sections show.

- Forgetting: which remedy moves its method along the learning-forgetting front and which moves
  the front itself (remedies.front_move), and each two methods (LoRA and full fine-tuning...)
  against each other at equal quality gain.
- Repetition: which training stream (duplicated examples, more epochs) makes the fine-tuned model
  repeat more, and what each decoding does to the repetition of the base and of the fine-tuned
  model, at what cost in task quality.

Repetition differences are paired over seeds (each seed's mean over its continuations), with a
Student-t interval; quality differences are the effects' own (paired over test examples)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bench.report.doc import Section
from bench.report.prepare import Data, cell_of
from bench.report.sections.remedies import (
    FORGET,
    equal_gain,
    front_move,
    is_remedy,
    ival,
    quality_text,
    seed_diff,
    sign95,
)
from bench.report.stats import Stat

REP = "seq_rep_4"  # 1 - unique 4-grams / 4-grams of a continuation: lower is better
LOOP = "loop_share"  # share of continuations stuck in a loop
_REP_WORD = {1: "repeats more", -1: "repeats less", 0: "no measurable change in repetition"}


def _is_decoding(e: Any) -> bool:
    return any(k == "decoding" for k, _, _ in e.comparison.changed)


def _ival(s: Stat) -> str:
    """A seed-paired difference; one that is the same on every seed (one base model under a
    deterministic decoding) has no interval to show, and says so."""
    if s.n > 1 and s.sd <= 1e-9:  # rounding noise of equal differences
        return f"{s.mean:+.3f} on all {s.n} seeds"
    return ival(s)


def repetition_effect(e: Any, ok: pd.DataFrame) -> tuple[str, int] | None:
    """One sentence on what a remedy does to repetition, and the sign (+1 repeats more, -1
    less, 0 not measurably) of its effect on the fine-tuned model; None where the records
    measured no repetition."""
    c = e.comparison
    rep = seed_diff(ok, c.reference, c.variant, f"repetition.after.{REP}")
    if rep.n == 0:
        return None
    loop = seed_diff(ok, c.reference, c.variant, f"repetition.after.{LOOP}")
    sign = sign95(rep.low, rep.high) if rep.n > 1 and rep.sd > 1e-9 else 0  # no interval: no claim
    text = (f"{c.variant} vs {c.reference}: fine-tuned seq-rep-4 Δ {_ival(rep)}, loop share "
            f"Δ {_ival(loop)} (n={rep.n} seeds): {_REP_WORD[sign]}")  # fmt: skip
    if _is_decoding(e):
        base = seed_diff(ok, c.reference, c.variant, f"repetition.before.{REP}")
        if base.n:
            text += f"; the base model under the same decoding: seq-rep-4 Δ {_ival(base)}"
    return f"{text}; {quality_text(e.quality, e.metric)}.", sign


def _list(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def answers(
    d: Data, effects: Mapping[tuple[str, str], list[Any]], lead: Sequence[str] = ()
) -> Section | None:
    """The opening section of a sweep with remedies, after the `lead` lines (a vocabulary
    study's per-character verdicts, per_char.verdicts); None when there is nothing to say."""
    sec = Section("Answers", "answers", [
        "Generated from the numbers below. A remedy is a setting's label plus a training stream "
        "([...]), a tag (@...), a decoding ({...}) or a vocabulary expansion (+vocabK), compared "
        "with that setting as it is. Forgetting: general-text bits per byte, after − before, "
        "paired over seeds; quality paired over test examples; 95% intervals. Repetition: "
        "seq-rep-4 of greedy or decoded continuations of general text, paired over seeds.",
    ])  # fmt: skip
    if lead:
        sec.blocks.append(list(lead))
    for (model, task), found in effects.items():
        ok = cell_of(d.ok, model, task)
        found = [e for e in found if is_remedy(e.comparison.variant)]
        if ok.empty or not found:
            continue
        lines: list[str] = []
        moves: dict[str, list[str]] = {}
        for e in (e for e in found if not _is_decoding(e)):  # decoding leaves training alone
            q, c = (e.quality if e.by_quality else None), e.comparison
            forget = seed_diff(ok, c.reference, c.variant, FORGET)
            move = front_move((q.low, q.high) if q else None, forget)
            moves.setdefault(move.split(":")[0], []).append(e.comparison.variant)
        if moves:
            lines.append(f"{model} × {task}, forgetting: " + "; ".join(
                f"{m}: {_list(v)}" for m, v in sorted(moves.items())) + ".")  # fmt: skip
        names = sorted({str(m) for m in ok["method"]})  # e.g. LoRA vs full at equal gain
        lines += [s for a in names for b in names if a < b and (s := equal_gain(ok, a, b))]
        rep = [r for e in found if (r := repetition_effect(e, ok))]
        if rep:
            by = {w: [t.split(" vs ")[0] for t, s in rep if s == k] for k, w in _REP_WORD.items()}
            lines.append(f"{model} × {task}, repetition of the fine-tuned model: " + "; ".join(
                f"{w}: {_list(v)}" for w, v in by.items()) + ".")  # fmt: skip
            lines += [t for t, _ in rep]
        sec.blocks.append(lines)
    return sec if len(sec.blocks) > 1 else None
