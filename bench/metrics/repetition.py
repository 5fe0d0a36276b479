"""Repetition metrics (Welleck et al. 2019, "Neural Text Generation with Unlikelihood Training";
Fu et al. 2021), on model token ids.

Sequence level, on greedy continuations of held-out prefixes:
  seq_rep_n   per continuation 1 - |unique n-grams| / |n-grams|, averaged over continuations that
              have at least one n-gram (n = 1..4).
  distinct_n  |unique n-grams| / |n-grams| pooled over all continuations (n-grams never span two
              continuations; n = 1, 2).
  loop_share  share of continuations whose last `tail` tokens are periodic with some period
              p <= `max_period`, i.e. tail[i] == tail[i + p] for every i: the tail is one span of
              at most `max_period` tokens repeated back to back (the first copy may be partial).
              Continuations shorter than `tail` never count as loops.

Headline (what reports rank on), so that collapse cannot look like variety:
  same_share  share of continuations equal to the most common one (1.0: one string for all)
  degeneration = max(seq_rep_4, 1 - distinct_2): repetition within a continuation (loops) or
              across continuations (the same text whatever the prompt); higher = more
              repetitive, 1 = one repeated token; ranks models, comparable within a tokenizer
  degenerate  flag: loop_share >= 0.5 or same_share >= 0.5 or degeneration >= DEGENERATE

Token level, teacher-forced on held-out text (Welleck's rep/l and wrep/l; the text is the first
`tf_tokens` tokens of `tf_documents` held-out Brown documents, scored as in nll.py): for every
scored position t of a sequence x (the model predicts x_t from the true prefix x_<t), with the
greedy prediction p_t = argmax and the window W_t = x_{max(0, t-l)} .. x_{t-1} of the previous l
ground-truth tokens (fewer at the start of a sequence; empty at t = 0):
  rep_l   = #{t : p_t in W_t} / #positions
  wrep_l  = #{t : p_t in W_t and p_t != x_t} / #positions   (same denominator, so wrep <= rep)
pooled over every scored position of every passage (micro-average).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

# degeneration at or above this flags a model: base SmolLM2-135M scores 0.54 (pooled bigrams of
# 50 varied continuations repeat common pairs); 50 copies of one 64-token string score 0.98
DEGENERATE = 0.8


def ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def seq_rep_n(tokens: Sequence[int], n: int) -> float | None:
    """1 - unique/total n-grams of one sequence; None when it has no n-gram."""
    grams = ngrams(tokens, n)
    if not grams:
        return None
    return 1.0 - len(set(grams)) / len(grams)


def distinct_n(seqs: Sequence[Sequence[int]], n: int) -> float | None:
    """Unique / total n-grams pooled over sequences; None when there is no n-gram at all."""
    counts: Counter[tuple[int, ...]] = Counter()
    for s in seqs:
        counts.update(ngrams(s, n))
    total = sum(counts.values())
    return len(counts) / total if total else None


def is_loop(tokens: Sequence[int], *, tail: int = 32, max_period: int = 8) -> bool:
    """True when the last `tail` tokens repeat one span of <= `max_period` tokens."""
    if len(tokens) < tail:
        return False
    t = list(tokens[-tail:])
    return any(all(t[i] == t[i + p] for i in range(tail - p)) for p in range(1, max_period + 1))


def rep_counts(targets: Sequence[int], preds: Sequence[int], window: int) -> tuple[int, int, int]:
    """(repeats, wrong repeats, positions) of one passage for rep_l / wrep_l (see module doc).

    preds[t] is the model's greedy prediction for position t given targets[:t]."""
    if len(targets) != len(preds):
        raise ValueError(f"{len(targets)} targets vs {len(preds)} predictions")
    rep = wrep = 0
    for t, (p, x) in enumerate(zip(preds, targets, strict=True)):
        if p in targets[max(0, t - window) : t]:
            rep += 1
            wrep += p != x
    return rep, wrep, len(targets)


def token_level(
    passages: Sequence[tuple[Sequence[int], Sequence[int]]], windows: Sequence[int]
) -> dict[str, float]:
    """rep_l and wrep_l pooled over (targets, predictions) passages."""
    out: dict[str, float] = {}
    for w in windows:
        rep = wrep = n = 0
        for targets, preds in passages:
            r, wr, k = rep_counts(targets, preds, w)
            rep, wrep, n = rep + r, wrep + wr, n + k
        out[f"rep_{w}"] = rep / n if n else float("nan")
        out[f"wrep_{w}"] = wrep / n if n else float("nan")
    return out


def sequence_level(
    continuations: Sequence[Sequence[int]], *, tail: int = 32, max_period: int = 8
) -> dict[str, Any]:
    """seq_rep_1..4, distinct_1/2 and loop_share over greedy continuations."""
    out: dict[str, Any] = {}
    for n in range(1, 5):
        vals = [v for s in continuations if (v := seq_rep_n(s, n)) is not None]
        out[f"seq_rep_{n}"] = sum(vals) / len(vals) if vals else None
    for n in (1, 2):
        out[f"distinct_{n}"] = distinct_n(continuations, n)
    loops = [is_loop(s, tail=tail, max_period=max_period) for s in continuations]
    out["loop_share"] = sum(loops) / len(loops) if loops else None
    same = Counter(tuple(x) for x in continuations).most_common(1)
    out["same_share"] = same[0][1] / len(continuations) if same else None
    out.update(degeneration_of(out))
    out["n_continuations"] = len(continuations)
    out["mean_length"] = (
        sum(len(s) for s in continuations) / len(continuations) if continuations else 0.0
    )
    return out


def degeneration_of(m: dict[str, Any]) -> dict[str, Any]:
    """The headline score and flag (module doc) from seq_rep_4, distinct_2, loop_share and
    same_share; None parts count as 0 (no n-gram: nothing repeated)."""
    score = max(m.get("seq_rep_4") or 0.0, 1.0 - (m.get("distinct_2") or 1.0))
    flag = (
        (m.get("loop_share") or 0.0) >= 0.5
        or (m.get("same_share") or 0.0) >= 0.5
        or score >= DEGENERATE
    )
    return {"degeneration": score, "degenerate": flag}
