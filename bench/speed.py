"""`make bench`: the harness's training throughput next to a bare peft + torch loop.

Same model, method, batch, sequence length, precision (bf16 autocast where this machine runs it
faster, else fp32), optimizer (AdamW) and clipping; the two loops alternate in ABBA order so
drift in machine load hits both, and the first `warmup` steps of each are not timed.
Also reports model-FLOPs utilisation against this machine's measured matmul peak in the precision
used. Results go to results/speed/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from bench.train import autocast_ctx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONF = Path(__file__).resolve().parent.parent / "conf"


def _fixed_batches(tok: Any, n: int, batch: int, seq: int) -> list[dict[str, torch.Tensor]]:
    """Full-length sequences of real text (Brown training paragraphs), labels on every token."""
    from bench.corpora import brown_train_paragraphs

    ids: list[int] = []
    for p in brown_train_paragraphs():
        ids += tok(p + "\n", add_special_tokens=False)["input_ids"]
        if len(ids) >= n * batch * seq:
            break
    x = torch.tensor(ids[: n * batch * seq]).view(n, batch, seq)
    return [{"input_ids": b, "attention_mask": torch.ones_like(b), "labels": b.clone()} for b in x]


def _build(method: str, model_cfg: dict[str, Any], device: str) -> tuple[Any, Any]:
    from bench import methods, models

    mcfg = yaml.safe_load((CONF / "method" / f"{method}.yaml").read_text())
    m = methods.get(method)
    model, _ = models.load(
        model_cfg, dtype=torch.float32, device=device, extra_kwargs=m.load_kwargs(mcfg, device)
    )
    torch.manual_seed(0)
    return m.apply(model, mcfg), mcfg


def bare_loop(
    model: Any, batches: list[dict[str, torch.Tensor]], lr: float, steps: int, precision: str
) -> list[float]:
    """What a user would write by hand: AdamW, autocast, clip, step. Returns step times."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    times = []
    for i in range(steps):
        b = batches[i % len(batches)]
        t0 = time.perf_counter()
        with autocast_ctx(precision, "cpu"):
            loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def harness_loop(
    model: Any, batches: list[dict[str, torch.Tensor]], lr: float, steps: int, precision: str
) -> list[float]:
    from bench.train import train

    def stream() -> Any:
        i = 0
        while True:
            yield batches[i % len(batches)]
            i += 1

    res = train(model, stream(), steps=steps, lr=lr, clip=1.0, precision=precision, progress=False)
    return res.step_times


def main(argv: list[str] | None = None) -> None:
    from bench import measure, models
    from bench.results import environment, write_json_atomic

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--methods", default="full,lora,prompt_tuning")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per repetition")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2, help="alternating repetitions of each loop")
    ap.add_argument("--out", default="results/speed")
    ap.add_argument("--precision", default="auto", help="auto | bf16-autocast | fp32")
    a = ap.parse_args(argv)

    model_cfg = yaml.safe_load((CONF / "model" / f"{a.model}.yaml").read_text())
    info = models.model_info(model_cfg)
    precision = measure.resolve_precision(a.precision, "cpu")
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    peak = measure.measure_matmul_peak(dtype, n=1024, seconds=2.0)
    print(
        f"[speed] precision {precision}; {dtype} matmul peak {peak / 1e9:.0f} GFLOP/s; "
        f"threads {torch.get_num_threads()}",
        flush=True,
    )
    rows = []
    for method in a.methods.split(","):
        model, mcfg = _build(method, model_cfg, "cpu")
        _, tok = models.load(model_cfg, dtype=torch.float32, device="cpu")
        batches = _fixed_batches(tok, 4, a.batch, a.seq)
        tokens_per_step = a.batch * a.seq
        times: dict[str, list[float]] = {"bare": [], "harness": []}
        loops = [("bare", bare_loop), ("harness", harness_loop)]
        for rep in range(a.reps):
            # ABBA order: neither loop always runs first (allocator and cache state carry over)
            for name, fn in loops if rep % 2 == 0 else loops[::-1]:
                t = fn(model, batches, mcfg["lr"], a.warmup + a.steps, precision)
                times[name] += t[a.warmup :]
        counts = measure.param_counts(model)
        flops = measure.train_flops_per_token(
            counts["total"], counts["trainable"], info.num_layers, info.hidden_size, a.seq
        )
        row: dict[str, Any] = {
            "method": method,
            "trainable": counts["trainable"],
            "flops_per_token": flops,
        }
        for name, t in times.items():
            tps = tokens_per_step / statistics.median(t)
            row[f"{name}_tokens_per_s"] = tps
            row[f"{name}_step_times"] = [round(x, 4) for x in t]
            row[f"{name}_mfu"] = flops * tps / peak
        row["ratio"] = row["harness_tokens_per_s"] / row["bare_tokens_per_s"]
        rows.append(row)
        print(
            f"[speed] {method:14s} bare {row['bare_tokens_per_s']:7.0f} tok/s  harness "
            f"{row['harness_tokens_per_s']:7.0f} tok/s  ratio {row['ratio']:.3f}  "
            f"MFU {row['harness_mfu']:.1%}",
            flush=True,
        )
        del model
        measure.release_memory()
    out = {
        "model": a.model,
        "batch": a.batch,
        "seq_len": a.seq,
        "precision": precision,
        "optimizer": "adamw",
        "clip": 1.0,
        "steps_timed": a.steps * a.reps,
        "matmul_peak_flops": peak,
        "rows": rows,
        "env": environment("cpu"),
    }
    path = Path(a.out) / f"speed-{a.model}-b{a.batch}-s{a.seq}-{out['env']['hostname_hash']}.json"
    write_json_atomic(path, out)
    print(f"[speed] wrote {path}")


if __name__ == "__main__":
    main()
