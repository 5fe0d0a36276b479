"""Greedy generation equals a no-cache greedy loop over the adapter-active forward pass, for every
method. Guards against the transformers 5.x regression (prefixes ignored, cached drift)."""

from __future__ import annotations

import pytest
import torch

from bench.generate import greedy_generate, greedy_reference
from tests.conftest import METHODS
from tests.test_methods import TINY, build

PROMPTS = [
    "reverse abc:",
    "reverse fe:",
    "reverse dcabe:",
    "reverse a:",
    "ab",
    "reverse abcdefabcdef:",
]


def strong_model(name: str) -> tuple[object, object]:
    """The method applied to a tiny model with large random weights (std ~0.2, not 0.02): with
    the default init, positions barely matter and a position bug (e.g. left padding placed
    between virtual tokens and the prompt) can hide."""
    from bench import methods, models
    from tests.test_methods import mcfg

    torch.manual_seed(1)
    model, tok = models.load(TINY, dtype=torch.float32, device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    c = mcfg(name)
    model = methods.get(name).apply(model, c)
    with torch.no_grad():  # move trained parameters away from their identity init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    return model, tok


@pytest.mark.parametrize("name", [m for m in METHODS if m != "qlora"])
def test_generate_matches_greedy_loop(name: str) -> None:
    """Prompts of different lengths share one left-padded batch."""
    model, tok = strong_model(name)
    got = greedy_generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=8)
    want = [greedy_reference(model, tok, p, max_new_tokens=10) for p in PROMPTS]
    assert got == want
    if hasattr(model, "disable_adapter"):  # and the adapter is active in what we compared
        from bench.train import prompt_ids

        ids = torch.tensor([prompt_ids(PROMPTS[0], tok)])
        with torch.no_grad():
            on = model(input_ids=ids).logits[0, -1]
            with model.disable_adapter():
                off = model(input_ids=ids).logits[0, -1]
        assert not torch.allclose(on, off)


def test_generate_matches_greedy_loop_qlora() -> None:
    """QLoRA (4-bit base, CPU bitsandbytes kernels): same check on the quantized model."""
    torch.manual_seed(1)
    model = build("qlora")
    from bench import models

    _, tok = models.load(TINY, dtype=torch.float32, device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    got = greedy_generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=8)
    assert got == [greedy_reference(model, tok, p, max_new_tokens=10) for p in PROMPTS]


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
