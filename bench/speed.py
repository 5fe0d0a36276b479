"""`make bench`: the harness's training throughput next to a bare peft + torch loop.

Same model, method, batch, sequence length, precision (`auto`: bf16 autocast where the CPU has
native bf16 matmuls, else fp32), optimizer (AdamW) and clipping; the two loops alternate in ABBA
order so drift in machine load hits both, and the first `warmup` steps of each are not timed.
Also reports model-FLOPs utilisation against this machine's measured matmul peak in the precision
used. The loops and rows are bench.perf's, shared with bench.gpu_check. Results: results/speed/.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from bench import perf

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _fixed_batches(tok: Any, n: int, batch: int, seq: int) -> list[perf.Batch]:
    """Full-length sequences of real text (Brown training paragraphs), labels on every token."""
    from bench.corpora import brown_train_paragraphs

    ids: list[int] = []
    for p in brown_train_paragraphs():
        ids += tok(p + "\n", add_special_tokens=False)["input_ids"]
        if len(ids) >= n * batch * seq:
            break
    x = torch.tensor(ids[: n * batch * seq]).view(n, batch, seq)
    return [{"input_ids": b, "attention_mask": torch.ones_like(b), "labels": b.clone()} for b in x]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--methods", default=None, help="comma list (default: all but peft)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per repetition")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2, help="alternating repetitions of each loop")
    ap.add_argument("--out", default="results/speed")
    ap.add_argument("--precision", default="auto", help="auto | bf16-autocast | fp32 | bf16")
    ap.add_argument(
        "--frozen-dtype",
        choices=["compute", "fp32"],
        default="compute",
        help="frozen weights in the compute dtype (as bench.run) or fp32 (to measure the gain)",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from bench.precision import resolve_precision
    from bench.results import environment, write_json_atomic

    a = parse_args(argv)
    if a.frozen_dtype == "fp32":  # the comparison point: frozen weights cast at every matmul
        from bench import precision

        precision.hold_frozen = lambda model, prec: 0  # type: ignore[assignment]
    model_cfg = perf.model_config(a.model)
    on = perf.On("cpu", resolve_precision(a.precision, "cpu"))
    dtype = perf.compute_dtype(on.precision)
    peak = perf.matmul_peak("cpu", dtype, n=1024, seconds=2.0)["flops"]
    env = environment("cpu")  # env.cpu_flags: what decides bf16 speed, with every timing
    print(
        f"[speed] precision {on.precision}; {dtype} matmul peak {peak / 1e9:.0f} GFLOP/s; "
        f"threads {torch.get_num_threads()}; cpu flags {env['cpu_flags']}",
        flush=True,
    )
    rec: dict[str, Any] = {
        "model": a.model,
        "batch": a.batch,
        "seq_len": a.seq,
        "precision": on.precision,
        "frozen_dtype": a.frozen_dtype,
        "optimizer": "adamw",
        "clip": perf.CLIP,
        "steps_timed": a.steps * a.reps,
        "matmul_peak_flops": peak,
        "rows": [],
        "env": env,
    }
    name = f"speed-{a.model}-b{a.batch}-s{a.seq}-{on.precision}-frozen_{a.frozen_dtype}"
    path = Path(a.out) / f"{name}-{env['hostname_hash']}.json"

    def row(method: str) -> dict[str, Any]:
        def batches(tok: Any) -> list[perf.Batch]:
            return _fixed_batches(tok, 4, a.batch, a.seq)

        timing = {"steps": a.steps, "warmup": a.warmup, "reps": a.reps}
        r = perf.speed_method(method, model_cfg, batches, on, peak=peak, **timing)
        print(f"[speed] {perf.speed_line(r)}", flush=True)
        return r

    def save(_key: str, _t0: float) -> None:  # after every method: a killed run keeps its rows
        write_json_atomic(path, rec)

    perf.per_method(rec, "rows", perf.method_names(a.methods), row, save)
    print(f"[speed] wrote {path}")
    failed = [r["method"] for r in rec["rows"] if "error" in r]
    if failed:
        raise SystemExit(f"[speed] failed: {', '.join(failed)} (errors in {path})")


if __name__ == "__main__":
    main()
