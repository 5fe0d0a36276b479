"""Held-out general text: mean per-token NLL (forgetting, part a), and the teacher-forced greedy
predictions that rep_l / wrep_l are computed from (on longer held-out documents).

Definition. Each passage is encoded without special tokens and cut to its first `max_tokens`
tokens x_0..x_{T-1}; the model reads [prefix] + x_0..x_{T-2}, where prefix = BOS (EOS if the
tokenizer has none), and every x_t is scored: NLL = -sum_t log p(x_t | prefix, x_<t) summed over
all passages / number of scored tokens (a token-weighted mean, in nats). This is exactly what
lm-eval's `loglikelihood_rolling` scores for a text that fits the context (tested), with
add_bos_token=False so the text itself carries no BOS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from bench import corpora
from bench.metrics._util import model_device, pad_id, prefix_token_id

MIN_CHARS = 200  # corpora.general_heldout_passages' default: paragraphs of real prose


@dataclass
class PassageScore:
    targets: list[int]  # x_0..x_{T-1}
    nll: list[float]  # -log p(x_t | prefix, x_<t)
    preds: list[int]  # argmax_v p(v | prefix, x_<t)
    n_bytes: int = 0  # UTF-8 bytes of the scored text, decode(x_0..x_{T-1}): the bpb denominator


@lru_cache(maxsize=1)
def _heldout_pool() -> tuple[str, ...]:
    docs = corpora.brown_documents()
    n_all = sum(
        1 for d, ps in docs.items() if corpora.is_heldout(d) for p in ps if len(p) >= MIN_CHARS
    )
    return tuple(corpora.general_heldout_passages(n_all, min_chars=MIN_CHARS))


def heldout_texts(n: int, *, part: str) -> list[str]:
    """`n` held-out Brown paragraphs spread evenly over all 100 held-out documents (the pool is
    in document order, so a plain head would be all press reportage). part="nll" draws from the
    even pool positions, part="prefix" from the odd ones: the two sets never overlap."""
    pool = _heldout_pool()[{"nll": 0, "prefix": 1}[part] :: 2]
    if n > len(pool):
        raise ValueError(f"asked {n} held-out passages for {part}, only {len(pool)} exist")
    return [pool[i * len(pool) // n] for i in range(n)]


def heldout_documents(n: int) -> list[str]:
    """`n` held-out Brown documents (spread evenly over the 100, so over all genres), each as its
    paragraphs joined by blank lines: long running text for rep_l's 128-token windows."""
    docs = [ps for d, ps in sorted(corpora.brown_documents().items()) if corpora.is_heldout(d)]
    if n > len(docs):
        raise ValueError(f"asked {n} held-out documents, only {len(docs)} exist")
    return ["\n\n".join(docs[i * len(docs) // n]) for i in range(n)]


@torch.no_grad()
def score_passages(
    model: Any, tok: Any, texts: Sequence[str], *, max_tokens: int, batch_size: int
) -> list[PassageScore]:
    """Per-token NLL and greedy predictions of each passage (see module doc), in input order.

    Works with peft prompt-learning models: their logits carry extra leading positions for the
    virtual tokens, and only the last T positions (the real ones, right-padded batch) are used."""
    dev = model_device(model)
    prefix, pad = prefix_token_id(tok), pad_id(model, tok)
    enc = [tok(t, add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
    order = sorted((i for i in range(len(enc)) if enc[i]), key=lambda i: -len(enc[i]))
    out: dict[int, PassageScore] = {}
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        n = len(enc[idx[0]])
        ids = torch.full((len(idx), n), pad, dtype=torch.long)  # right padding
        mask = torch.zeros_like(ids)
        for j, i in enumerate(idx):
            x = enc[i]
            ids[j, : len(x)] = torch.tensor([prefix, *x[:-1]])
            mask[j, : len(x)] = 1
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits[:, -n:]
        for j, i in enumerate(idx):  # row by row: one fp32 copy of [T, vocab] at a time
            k = len(enc[i])
            row = logits[j, :k].float()
            nll = F.cross_entropy(row, torch.tensor(enc[i], device=dev), reduction="none")
            nbytes = len(tok.decode(enc[i]).encode("utf-8"))
            out[i] = PassageScore(enc[i], nll.tolist(), row.argmax(-1).tolist(), nbytes)
        del logits
    return [out[i] for i in range(len(enc)) if i in out]


def summarize(scores: Sequence[PassageScore]) -> dict[str, float]:
    """Token-weighted mean NLL (nats), and bits per byte = total NLL / ln 2 / bytes of the scored
    text: the tokenizer-free unit, so models with different vocabularies share one axis."""
    total = sum(sum(s.nll) for s in scores)
    n = sum(len(s.nll) for s in scores)
    nbytes = sum(s.n_bytes for s in scores)
    mean = total / n if n else float("nan")
    return {
        "nll": mean,
        "ppl": math.exp(mean) if n else float("nan"),
        "bpb": total / math.log(2) / nbytes if nbytes else float("nan"),
        "n_tokens": n,
        "n_bytes": nbytes,
        "n_passages": len(scores),
    }
