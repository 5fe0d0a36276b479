"""Answer scoring: validation loss and answer bits per byte (bench/metrics/answers.py)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bench import data, methods
from bench.metrics.answers import answer_bits, answer_nll, bits_per_byte, mean_loss
from bench.train import IGNORE, Encoded, autocast_ctx, collate, encode
from tests.conftest import tiny_cfg


class Uniform(torch.nn.Module):
    """Logits that are all zero: every token has probability 1/V, so every NLL is ln V."""

    vocab = 16

    def forward(self, input_ids: Any, attention_mask: Any, logits_to_keep: int) -> Any:
        self.kept = logits_to_keep
        b, _ = input_ids.shape
        return SimpleNamespace(logits=torch.zeros(b, logits_to_keep, self.vocab))


@pytest.mark.unit
def test_bits_per_byte_hand_worked() -> None:
    """Answer " 42" as 2 tokens + EOS after a 3-token prompt; uniform over 16 tokens: each token
    costs log2(16) = 4 bits. Answer bits = 2 x 4 = 8 (EOS not counted); "42" is 2 bytes, so
    4 bits per byte; validation loss = ln 16 per label token (3 of them)."""
    ex = Encoded(input_ids=[1, 2, 3, 7, 8, 0], labels=[IGNORE] * 3 + [7, 8, 0])
    short = Encoded(input_ids=[1, 7, 0], labels=[IGNORE, 7, 0])
    m = Uniform()
    nll = answer_nll(m, [ex, short], batch_size=2, pad_id=0, precision="fp32", device="cpu")
    assert m.kept == 6 - 1 + 1  # the first label sits at position 1 of the batch (short row)
    assert [len(x) for x in nll] == [3, 2]
    assert all(v == pytest.approx(math.log(16)) for x in nll for v in x)
    bits = answer_bits(nll[0], 2)
    assert bits == pytest.approx(8.0)
    assert bits_per_byte([bits], [2]) == pytest.approx(4.0)
    assert bits_per_byte([8.0, 4.0], [2, 6]) == pytest.approx(12 / 8)  # bytes weigh equally
    assert mean_loss(nll) == pytest.approx(math.log(16))


def _reference_loss(model: Any, batch: list[Encoded], pad: int) -> list[list[float]]:
    """Full logits over every position, one example at a time (no padding)."""
    out = []
    for e in batch:
        b = collate([e], pad)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        logits = logits[:, -b["input_ids"].shape[1] :]
        nll = torch.nn.functional.cross_entropy(
            logits[0, :-1].float(), b["labels"][0, 1:], reduction="none", ignore_index=IGNORE
        )
        out.append(nll[b["labels"][0, 1:] != IGNORE].tolist())
    return out


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "prefix_tuning"])
def test_answer_nll_equals_full_logits_one_at_a_time(method: str) -> None:
    """Sorted, padded batches with the head over the last positions only give the NLLs of an
    unpadded full forward pass, for plain, virtual-token and prefix models."""
    cfg = tiny_cfg(method, Path("/nonexistent"))
    torch.manual_seed(0)
    model, tok, _ = methods.load_and_apply(
        cfg["model"], cfg["method"], device="cpu", precision="fp32"
    )
    model.eval()
    task = data.build(cfg["task"])
    enc = [encode(e, tok, 64) for e in task.splits["test"]]
    with torch.no_grad(), autocast_ctx("fp32", "cpu"):
        ref = _reference_loss(model, enc, tok.pad_token_id)
    got = answer_nll(model, enc, batch_size=3, pad_id=tok.pad_token_id, precision="fp32",
                     device="cpu")  # fmt: skip
    assert [len(x) for x in got] == [len(x) for x in ref]
    for a, b in zip(got, ref, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
