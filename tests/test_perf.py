"""bench.perf, shared by `make bench` and bench.gpu_check: configs as Hydra composes them, both
training loops really train (and only what the method trains), ABBA order, honest rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bench import gpu_check, methods, models, perf
from tests.conftest import compose

TINY = perf.model_config("tiny-random")
ON = perf.On("cpu", "fp32")
BATCH, SEQ, STEPS = 2, 16, 3


def batches() -> list[perf.Batch]:
    return perf.random_batches(2, BATCH, SEQ, models.model_info(TINY).vocab_size)


def snapshot(model: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Copies of the (trainable, frozen) parameters."""
    params = dict(model.named_parameters())
    train = {n: p.detach().clone() for n, p in params.items() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in params.items() if not p.requires_grad}
    return train, frozen


@pytest.mark.integration
def test_method_configs_equal_hydra_compose() -> None:
    """The Hydra-free defaults merge (the GPU image has no Hydra) gives Hydra's result, qlora's
    composed lora.yaml included."""
    for name in methods.names():
        assert perf.method_config(name) == compose([f"method={name}"])["method"], name
    assert perf.method_config("qlora")["r"] == perf.method_config("lora")["r"]


@pytest.mark.integration
def test_method_names_from_registry_or_cli() -> None:
    assert perf.method_names(None) == methods.swept()  # report order, generic peft left out
    assert perf.method_names("lora, full") == ["lora", "full"]


@pytest.mark.integration
@pytest.mark.parametrize("loop", sorted(perf.LOOPS))
def test_loop_trains_only_trainable_params(loop: str) -> None:
    model, _, _, mcfg = perf.load_method("lora", TINY, ON)
    before_train, before_frozen = snapshot(model)
    assert before_train and before_frozen
    times = perf.LOOPS[loop](model, batches(), mcfg["lr"], STEPS, ON)
    assert len(times) == STEPS and all(t > 0 for t in times)
    after_train, after_frozen = snapshot(model)
    changed = [n for n in before_train if not torch.equal(before_train[n], after_train[n])]
    assert sorted(changed) == sorted(before_train)  # every LoRA A and B moved
    assert all(torch.equal(before_frozen[n], after_frozen[n]) for n in before_frozen)


@pytest.mark.integration
def test_time_loops_abba_and_warmup(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake(name: str) -> Any:
        def loop(model: Any, b: Any, lr: float, steps: int, on: perf.On) -> list[float]:
            calls.append(name)
            return [float(i) for i in range(steps)]

        return loop

    monkeypatch.setattr(perf, "LOOPS", {"bare": fake("bare"), "harness": fake("harness")})
    times = perf.time_loops(None, [], 1.0, ON, steps=2, warmup=1, reps=4)
    assert calls == ["bare", "harness", "harness", "bare"] * 2
    assert times == {"bare": [1.0, 2.0] * 4, "harness": [1.0, 2.0] * 4}  # warm-up step dropped


@pytest.mark.integration
def test_speed_row_tokens_per_s_is_tokens_over_seconds() -> None:
    model, _, _, mcfg = perf.load_method("lora", TINY, ON)
    b = batches()
    times = {name: fn(model, b, mcfg["lr"], STEPS, ON) for name, fn in perf.LOOPS.items()}
    peak = 1e12
    row = perf.speed_row(
        "lora", model, TINY, times, tokens=perf.tokens_per_step(b), seq=SEQ, peak=peak
    )
    assert row["tokens_per_step"] == BATCH * SEQ
    assert row["steps_timed_per_loop"] == STEPS
    for name in perf.LOOPS:
        tps = row[f"{name}_tokens_per_s"]
        assert tps == pytest.approx(BATCH * SEQ / row[f"{name}_step_s_median"])
        assert row[f"{name}_mfu"] == pytest.approx(row["flops_per_token"] * tps / peak)
    assert row["ratio"] == pytest.approx(row["harness_tokens_per_s"] / row["bare_tokens_per_s"])


@pytest.mark.integration
def test_memory_row_measures_cpu_rss_and_throughput() -> None:
    row = perf.memory_row("lora", TINY, batches(), STEPS, ON)
    assert row["tokens"] == STEPS * BATCH * SEQ
    assert row["seconds"] > 0
    assert row["tokens_per_s"] == pytest.approx(row["tokens"] / row["seconds"])
    assert row["memory"]["kind"] == "cpu_rss" and row["memory"]["samples"] == STEPS
    assert row["optimizer"] == methods.get("lora").optimizer("cpu")
    assert 0 < row["params"]["trainable"] < row["params"]["total"]


@pytest.mark.integration
def test_random_model_has_the_declared_arch(tmp_path: Path) -> None:
    arch = {
        "num_layers": 2, "hidden_size": 32, "intermediate_size": 80, "num_heads": 4,
        "num_kv_heads": 2, "vocab_size": 128, "model_type": "llama", "tie_word_embeddings": True,
    }  # fmt: skip
    cfg, shape = gpu_check.build_random_model({"name": "x", "kind": "hub", "arch": arch}, tmp_path)
    model, _ = models.load(cfg, dtype=torch.float32, device="cpu")
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (2, 32, 80)
    assert (c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == (4, 2, 128)
    assert c.tie_word_embeddings and shape["intermediate_size"] == 80
    assert models.model_info(cfg).num_layers == 2
    del arch["intermediate_size"]
    with pytest.raises(ValueError, match="intermediate_size"):
        gpu_check.llama_kwargs({"name": "x", "arch": arch})
