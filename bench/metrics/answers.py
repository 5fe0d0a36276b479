"""Teacher-forced scores of reference answers: validation loss and answer bits per byte from one
forward pass per batch.

Each example is encoded as in training (bench.train.encode): prompt + " " + answer + EOS, with
the answer and EOS as labels. `answer_nll` returns, per example, the NLL in nats of every label
token given all tokens before it (adapter active, virtual tokens included).

- Validation loss = sum of all label NLLs / number of label tokens (answer + EOS; the training
  objective, token-weighted).
- Answer bits per byte = NLL of the answer's tokens (" " + answer, without EOS) in bits / UTF-8
  bytes of the answer. Bytes, not tokens, so models with different tokenizers share one axis;
  it moves before exact match does (a closer wrong answer already scores better).

Cost: batches sorted by length (little padding), and the LM head only over the last positions
that hold labels (`logits_to_keep`), not over the whole prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from bench.train import IGNORE, Encoded, autocast_ctx, collate


@torch.no_grad()
def answer_nll(
    model: Any,
    data: Sequence[Encoded],
    *,
    batch_size: int,
    pad_id: int,
    precision: str,
    device: str,
) -> list[list[float]]:
    """Per example (input order), the NLL in nats of each label token."""
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data[i].input_ids))
    out: list[list[float]] = [[] for _ in data]
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        b = collate([data[i] for i in idx], pad_id)  # right padding: positions stay exact
        n = b["input_ids"].shape[1]
        labelled = (b["labels"] != IGNORE).any(0).nonzero()
        if not len(labelled):
            continue
        k = n - int(labelled[0]) + 1  # logits from the position before the first label on
        with autocast_ctx(precision, device):
            logits = model(
                input_ids=b["input_ids"].to(device),
                attention_mask=b["attention_mask"].to(device),
                logits_to_keep=k,
            ).logits[:, -k:]  # prompt methods prepend virtual positions: count from the end
        target = b["labels"][:, n - k + 1 :].to(device)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), target, reduction="none", ignore_index=IGNORE
        )
        for j, i in enumerate(idx):
            out[i] = nll[j][target[j] != IGNORE].tolist()
    return out


def mean_loss(nll: Sequence[Sequence[float]]) -> float:
    n = sum(len(x) for x in nll)
    return sum(sum(x) for x in nll) / n if n else float("nan")


def answer_bits(nll: Sequence[float], n_answer_tokens: int) -> float:
    """Bits of the answer's tokens (the EOS after them is not part of the answer)."""
    return sum(nll[:n_answer_tokens]) / math.log(2)


def bits_per_byte(bits: Sequence[float], nbytes: Sequence[int]) -> float:
    """Total bits over total bytes: each byte of every answer weighs the same."""
    total = sum(nbytes)
    return sum(bits) / total if total else float("nan")
