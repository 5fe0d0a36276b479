"""Training-loop pieces on hand-worked examples."""

from __future__ import annotations

import math

import pytest
import torch

from bench.data import Example
from bench.train import IGNORE, batch_stream, collate, encode, lr_factor


def test_lr_schedule_values() -> None:
    assert lr_factor(0.03, 0.06) == pytest.approx(0.5)
    assert lr_factor(0.06, 0.06) == pytest.approx(1.0)
    assert lr_factor(0.53, 0.06) == pytest.approx(0.5)  # half-way through the cosine part
    assert lr_factor(1.0, 0.06) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0.5, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_encode_masks_prompt_and_keeps_answer() -> None:
    from bench.models import char_tokenizer

    tok = char_tokenizer()
    e = encode(Example(prompt="reverse abc:", answer="cba"), tok, seq_len=64)
    n_prompt = len("reverse abc:")
    assert len(e.input_ids) == n_prompt + 4 + 1  # " cba" + EOS
    assert e.labels[:n_prompt] == [IGNORE] * n_prompt
    assert tok.decode(e.labels[n_prompt:-1]) == " cba" and e.labels[-1] == tok.eos_token_id
    short = encode(Example(prompt="reverse abc:", answer="cba"), tok, seq_len=8)
    assert (
        len(short.input_ids) == 8 and short.labels[-5:] == e.labels[-5:]
    )  # prompt cut, not answer
    # room for the whole prompt but not for twice it: kept whole (it once kept only its last 3)
    fits = encode(Example(prompt="reverse abc:", answer="cba"), tok, seq_len=20)
    assert fits.input_ids == e.input_ids


def test_collate_pads_right_and_ignores_padding() -> None:
    from bench.train import Encoded

    b = collate([Encoded([5, 6, 7], [IGNORE, 6, 7]), Encoded([8], [8])], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


def test_data_order_depends_only_on_seed() -> None:
    from bench.train import Encoded

    data = [Encoded([i + 1], [i + 1]) for i in range(20)]
    take = lambda s: [next(s)["input_ids"][:, 0].tolist() for _ in range(7)]  # noqa: E731
    a = take(batch_stream(data, batch_size=4, seed=3, pad_id=0))
    assert a == take(batch_stream(data, batch_size=4, seed=3, pad_id=0))
    assert a != take(batch_stream(data, batch_size=4, seed=4, pad_id=0))
    first_epoch = sorted(x for batch in a[:5] for x in batch)
    assert first_epoch == list(range(1, 21))  # an epoch visits every example once
    assert torch.is_tensor(next(batch_stream(data, batch_size=4, seed=3, pad_id=0))["labels"])
