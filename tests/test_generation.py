"""Greedy generation equals a no-cache greedy loop over the adapter-active forward pass, for every
method. Guards against the transformers 5.x regression (prefixes ignored, cached drift)."""

from __future__ import annotations

import pytest
import torch

from bench.generate import greedy_generate, greedy_reference
from tests.conftest import METHODS
from tests.test_methods import TINY, build

PROMPTS = ["reverse abc:", "reverse fe:", "reverse dcabe:", "reverse a:"]


@pytest.mark.parametrize("name", METHODS)
def test_generate_matches_greedy_loop(name: str) -> None:
    from bench import models

    torch.manual_seed(1)
    model = build(name)
    _, tok = models.load(TINY, dtype=torch.float32, device="cpu")
    with torch.no_grad():  # move trained parameters away from their identity init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    got = greedy_generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=4)
    want = [greedy_reference(model, tok, p, max_new_tokens=10) for p in PROMPTS]
    assert got == want
    # and the adapter matters: the base model continues differently for at least one prompt
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            base = [greedy_reference(model, tok, p, max_new_tokens=10) for p in PROMPTS]
        assert base != want


def test_newline_stop_keeps_first_line() -> None:
    """Stopping rows at a newline leaves every first line (what tasks score) unchanged."""
    from bench import models
    from bench.data import Example
    from bench.generate import generate_text
    from bench.train import batch_stream, encode, train

    torch.manual_seed(0)
    model, tok = models.load(TINY, dtype=torch.float32, device="cpu")
    # teach the tiny model to emit newlines, so that stopping actually triggers
    data = [
        encode(Example(prompt=f"reverse {w}:", answer=f"{w[::-1]}\nx"), tok, 32)
        for w in ("ab", "bca", "fed", "cab", "aef", "dd")
    ]
    train(
        model,
        batch_stream(data, batch_size=6, seed=0, pad_id=tok.pad_token_id),
        steps=60,
        lr=1e-2,
        precision="fp32",
        progress=False,
        warmup_ratio=0.0,
    )
    full = generate_text(model, tok, PROMPTS, max_new_tokens=12)
    short = generate_text(model, tok, PROMPTS, max_new_tokens=12, stop_at_newline=True)
    assert any("\n" in f for f in full)
    assert [f.split("\n")[0] for f in full] == [s.split("\n")[0] for s in short]
    assert sum(map(len, short)) < sum(map(len, full))
