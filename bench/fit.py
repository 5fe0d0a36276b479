"""The training stage of a run: the budgeted loop on the task's training split, memory sampled at
every step, and the record's `params`, `memory` and `train` blocks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import measure, models, stream
from bench.config import Checked
from bench.evaluate import encoded
from bench.methods import Method
from bench.train import TrainResult, train


def param_block(model: Any, method: Method) -> dict[str, Any]:
    counts = measure.param_counts(model)
    return {
        **counts,
        "trainable_pct": 100.0 * counts["trainable"] / counts["total"],
        "inference_extra": method.inference_extra_params(model),
        "adapter_bytes": None,
    }


def base_sizes(model: Any) -> dict[str, int]:
    """The base model's total and non-embedding parameter counts (tied weights once)."""
    total = measure.param_counts(model)["total"]
    inp = model.get_input_embeddings()
    emb = sum(p.numel() for p in inp.parameters())
    out = model.get_output_embeddings()
    if out is not None and out.weight is not inp.weight:
        emb += out.weight.numel()
    return {"total_params": total, "non_embedding_params": total - emb}


@dataclass
class Fitted:
    result: TrainResult
    train: dict[str, Any]  # the record's `train` block
    memory: dict[str, Any]  # the record's `memory` block


def fit(
    model: Any,
    tok: Any,
    task: Any,
    c: Checked,
    method: Method,
    *,
    baseline_rss: int,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> Fitted:
    b = c.budget
    optimizer = c.train.optimizer
    if optimizer == "auto":
        optimizer = method.optimizer(c.device)
    meter = measure.MemoryMeter(c.device)
    meter.start(baseline=baseline_rss if c.device == "cpu" else None)

    def step_hook(step: int, m: dict[str, float]) -> None:
        meter.sample()
        if on_step:
            on_step(step, {**m, "memory_bytes": meter.samples[-1] - meter.baseline})

    batches, mix = stream.stream(
        encoded(task, tok, "train", b.seq_len),
        c.raw.get("data"),
        tok=tok,
        batch_size=b.batch_size,
        grad_accum=b.grad_accum,
        steps=b.steps,
        seq_len=b.seq_len,
        seed=c.raw["seed"],
        pad_id=tok.pad_token_id,
    )
    res = train(
        model,
        batches,
        steps=b.steps,
        lr=c.lr,
        grad_accum=b.grad_accum,
        warmup_ratio=c.train.warmup_ratio,
        weight_decay=c.train.weight_decay,
        clip=c.train.clip,
        precision=c.raw["precision"],
        device=c.device,
        optimizer=optimizer,
        max_seconds=b.seconds if b.kind == "time" else None,
        on_step=step_hook,
        progress=c.raw["progress"],
    )
    mem = meter.summary()
    mem["breakdown"] = measure.memory_breakdown(model)
    if (storage := method.base_storage(model)) is not None:  # e.g. a 4-bit base's bits/param
        mem["base_storage"] = storage
    block = train_block(res, model, c, optimizer, chars=mix.chars)
    if stream.active(c.raw.get("data")):  # what the changed stream actually held
        block["stream"] = mix.block()
    return Fitted(res, block, mem)


def train_block(
    res: TrainResult, model: Any, c: Checked, optimizer: str, *, chars: int
) -> dict[str, Any]:
    b = c.budget
    info = models.model_info(c.model)
    flops = measure.model_flops_per_token(model, info.num_layers, info.hidden_size, b.seq_len)
    st = sorted(res.step_times)
    return {
        "steps": res.steps,
        "tokens": res.tokens,
        "padded_tokens": res.padded_tokens,
        "seconds": res.seconds,
        "tokens_per_s": res.tokens / res.seconds,
        # the text trained on, in characters: what compares tokenizers (tokens do not)
        "chars": chars,
        "chars_per_s": chars / res.seconds,
        "samples_per_s": res.steps * b.batch_size * b.grad_accum / res.seconds,
        "step_time_p50": st[len(st) // 2],
        "step_time_p90": st[min(len(st) - 1, int(0.9 * len(st)))],
        "flops_per_token": flops,
        "achieved_flops": flops * res.tokens / res.seconds,
        "loss_curve": res.loss_curve,
        "lr_curve": res.lr_curve,
        "final_loss": res.final_loss,
        "lr": c.lr,
        "optimizer": optimizer,
    }


def budget_block(c: Checked) -> dict[str, Any]:
    b = c.budget
    return {
        "kind": b.kind,
        "steps": b.steps if b.kind == "steps" else None,
        "batch_size": b.batch_size,
        "grad_accum": b.grad_accum,
        "seq_len": b.seq_len,
        "seconds": b.seconds if b.kind == "time" else None,
        "tokens": None,
    }
