"""`python -m bench.gpu_check --out DIR`: the harness's own numbers on a CUDA machine.

Measures, with the harness's code paths (bench.methods, bench.models.load, bench.train.train,
bench.measure), on a randomly initialised Llama of SmolLM2-135M shape built from its config (no
weights travel; nothing is fetched):

1. CUDA memory per method: allocator peak allocated / reserved over a short training run.
2. bf16-autocast training tokens/s, harness vs a bare torch loop (alternating, warm-up skipped),
   a measured bf16 matmul peak (CUDA events) and model-FLOPs utilisation against it.
3. QLoRA on real bitsandbytes CUDA kernels: 4-bit NF4 storage, weight bytes vs bf16, and a few
   paged-AdamW steps on a repeated batch (loss finite and falling).

Everything goes into one JSON (written after each section, so a timeout still leaves figures).
Deliberately imports neither bench.run nor bench.sweep (hydra is not on the GPU image).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the device reaches no hub; fail fast, never hang
CONF = Path(__file__).resolve().parent.parent / "conf"

ALL_METHODS = (
    "full", "freeze", "lora", "qlora", "prompt_tuning", "ptuning_v1", "prefix_tuning",
    "ptuning_v2",
)  # fmt: skip
SPEED_METHODS = ("full", "lora", "prompt_tuning")

# LlamaConfig kwargs. smollm2-135m mirrors HuggingFaceTB/SmolLM2-135M's config.json;
# tiny is for a CPU smoke run of this script only.
SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1024,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
    },
}

Batch = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
    print(f"[gpu_check] {msg}", flush=True)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    else:
        from bench.measure import release_memory

        release_memory()


def _allocated(device: str) -> int:
    return torch.cuda.memory_allocated() if device.startswith("cuda") else 0


def _method_cfg(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONF / "method" / f"{name}.yaml").read_text())


def _error(e: BaseException) -> str:
    traceback.print_exc()
    return f"{type(e).__name__}: {e}"[:2000]


def build_random_model(shape: str, out: Path, seed: int = 0) -> dict[str, Any]:
    """Save a random Llama + the char tokenizer (models.load wants one; ids are fed directly)
    and return a `kind: hub` model config pointing at that local directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.models import char_tokenizer

    tok = char_tokenizer()
    lcfg = LlamaConfig(
        **SHAPES[shape],
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(lcfg).save_pretrained(out)  # fp32: the harness loads fp32 + autocasts
    tok.save_pretrained(out)
    s = SHAPES[shape]
    return {
        "name": f"random-{shape}",
        "kind": "hub",
        "hub_id": str(out),
        "arch": {  # declared so model_info needs no AutoConfig round trip
            "num_layers": s["num_hidden_layers"],
            "hidden_size": s["hidden_size"],
            "num_heads": s["num_attention_heads"],
            "num_kv_heads": s["num_key_value_heads"],
            "vocab_size": s["vocab_size"],
            "model_type": "llama",
        },
    }


def random_batches(n: int, batch: int, seq: int, vocab: int, seed: int = 0) -> list[Batch]:
    """Full-length random token ids, labels on every token (no tokenizer, no padding)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, batch, seq), generator=g)
    return [{"input_ids": b, "attention_mask": torch.ones_like(b), "labels": b.clone()} for b in x]


def cycle(batches: list[Batch]) -> Iterator[Batch]:
    i = 0
    while True:
        yield batches[i % len(batches)]
        i += 1


def load_method_model(
    method: str, model_cfg: dict[str, Any], device: str, dtype: torch.dtype = torch.float32
) -> tuple[Any, Any, dict[str, Any]]:
    """The harness's load path (bench.run): validate, load with the method's kwargs, apply."""
    from bench import methods, models

    m = methods.get(method)
    mcfg = _method_cfg(method)
    m.validate(mcfg, models.model_info(model_cfg))
    model, _ = models.load(
        model_cfg, dtype=dtype, device=device, extra_kwargs=m.load_kwargs(mcfg, device)
    )
    torch.manual_seed(0)
    return m.apply(model, mcfg), m, mcfg


def optimizer_for(m: Any, device: str) -> str:
    # same rule as bench.run with train.optimizer=auto
    return getattr(m, "optimizer_name", lambda d: "adamw")(device)


# ----------------------------------------------------------------------------- 0. matmul peak


def matmul_peak(device: str, n: int, reps: int = 10, blocks: int = 3) -> dict[str, Any]:
    """bf16 square matmul FLOP/s: best of `blocks` blocks of `reps` products, CUDA-event timed."""
    if not device.startswith("cuda"):
        from bench.measure import measure_matmul_peak

        peak = measure_matmul_peak(torch.bfloat16, n=min(n, 512), seconds=0.5)
        return {"n": min(n, 512), "flops": peak, "blocks_flops": [peak], "timer": "perf_counter"}
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(blocks):
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        for _ in range(reps):
            a @ b
        t1.record()
        t1.synchronize()
        rates.append(2 * n**3 * reps / (t0.elapsed_time(t1) / 1e3))
    del a, b
    return {"n": n, "reps": reps, "flops": max(rates), "blocks_flops": rates, "timer": "cuda"}


# ----------------------------------------------------------------------------- 1. memory


def memory_row(
    method: str, model_cfg: dict[str, Any], device: str, batches: list[Batch], a: Any
) -> dict[str, Any]:
    from bench import measure
    from bench.train import train

    _free(device)
    before = _allocated(device)
    model, m, mcfg = load_method_model(method, model_cfg, device)
    loaded = _allocated(device) - before
    opt = optimizer_for(m, device)
    meter = measure.MemoryMeter(device)
    meter.start()  # as bench.run on CUDA: baseline 0, so the peak includes the weights
    res = train(
        model,
        cycle(batches),
        steps=a.steps,
        lr=mcfg["lr"],
        clip=1.0,
        precision=a.precision,
        device=device,
        optimizer=opt,
        on_step=lambda _s, _m: meter.sample(),
        progress=False,
    )
    counts = measure.param_counts(model)
    row = {
        "method": method,
        "optimizer": opt,
        "params": counts,
        "allocated_before_load_bytes": before,
        "loaded_bytes": loaded,
        "memory": meter.summary(),
        "breakdown": measure.memory_breakdown(model),
        "loss_first": res.loss_curve[0][1],
        "loss_last": res.final_loss,
        "step_time_median_s": statistics.median(res.step_times),
    }
    del model, res
    return row


# ----------------------------------------------------------------------------- 2. speed


def bare_loop(model: Any, batches: list[Batch], lr: float, steps: int, a: Any) -> list[float]:
    """What a user would write by hand: AdamW, autocast, clip, step, and reading the loss each
    step (as the harness does), which also puts both loops on the same sync pattern."""
    device = a.device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        b = {k: v.to(device) for k, v in batches[i % len(batches)].items()}
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            loss = model(**b).loss
        loss.backward()
        loss.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def harness_loop(model: Any, batches: list[Batch], lr: float, steps: int, a: Any) -> list[float]:
    from bench.train import train

    res = train(
        model,
        cycle(batches),
        steps=steps,
        lr=lr,
        clip=1.0,
        precision="bf16-autocast",
        device=a.device,
        progress=False,
    )
    return res.step_times


def speed_row(
    method: str,
    model_cfg: dict[str, Any],
    batches: list[Batch],
    peak: float,
    a: Any,
) -> dict[str, Any]:
    from bench import measure, models

    _free(a.device)
    model, _, mcfg = load_method_model(method, model_cfg, a.device)
    info = models.model_info(model_cfg)
    loops: tuple[tuple[str, Callable[..., list[float]]], ...] = (
        ("bare", bare_loop),
        ("harness", harness_loop),
    )
    times: dict[str, list[float]] = {"bare": [], "harness": []}
    for _ in range(a.reps):  # alternate so drift in clocks or load hits both loops
        for name, fn in loops:
            t = fn(model, batches, mcfg["lr"], a.warmup + a.speed_steps, a)
            _sync(a.device)
            times[name] += t[a.warmup :]
    counts = measure.param_counts(model)
    flops = measure.train_flops_per_token(
        counts["total"], counts["trainable"], info.num_layers, info.hidden_size, a.seq
    )
    tokens_per_step = a.batch * a.seq
    row: dict[str, Any] = {
        "method": method,
        "trainable": counts["trainable"],
        "total": counts["total"],
        "flops_per_token": flops,
        "steps_timed_per_loop": len(times["harness"]),
    }
    for name, t in times.items():
        tps = tokens_per_step / statistics.median(t)
        row[f"{name}_step_s_median"] = statistics.median(t)
        row[f"{name}_tokens_per_s"] = tps
        row[f"{name}_mfu"] = flops * tps / peak
    row["ratio"] = row["harness_tokens_per_s"] / row["bare_tokens_per_s"]
    del model
    return row


# ----------------------------------------------------------------------------- 3. QLoRA


def _quant_state_bytes(qs: Any) -> int:
    """Bytes of a bitsandbytes QuantState's tensors (absmax, code; nested state when double-
    quantized), i.e. what the 4-bit weights need beside the packed data."""
    from bench.measure import tensor_bytes

    n = 0
    for t in (getattr(qs, "absmax", None), getattr(qs, "code", None), getattr(qs, "offset", None)):
        if isinstance(t, torch.Tensor):
            n += tensor_bytes(t)
    s2 = getattr(qs, "state2", None)
    if s2 is not None:
        n += _quant_state_bytes(s2)
    return n


def linear4bit_report(model: Any) -> dict[str, Any]:
    import bitsandbytes as bnb

    from bench.measure import tensor_bytes

    mods = [mod for mod in model.modules() if isinstance(mod, bnb.nn.Linear4bit)]
    linears = [
        mod
        for mod in model.modules()
        if isinstance(mod, torch.nn.Linear) and not isinstance(mod, bnb.nn.Linear4bit)
    ]
    packed = qstate = logical = 0
    keys = ("weight_storage_dtypes", "weight_classes", "quant_types", "double_quant")
    seen: dict[str, set[Any]] = {k: set() for k in (*keys, "compute_dtypes", "devices")}
    for mod in mods:
        w = mod.weight
        qs = w.quant_state
        packed += tensor_bytes(w)
        qstate += _quant_state_bytes(qs)
        logical += int(torch.Size(qs.shape).numel())
        seen["weight_storage_dtypes"].add(str(w.dtype))
        seen["weight_classes"].add(type(w).__name__)
        seen["quant_types"].add(qs.quant_type)
        seen["double_quant"].add(bool(qs.nested))
        seen["compute_dtypes"].add(str(mod.compute_dtype))
        seen["devices"].add(w.device.type)
    return {
        "n_linear4bit": len(mods),
        "n_other_linear": len(linears),  # lm_head (tied) and LoRA A/B stay unquantized
        **{k: sorted(v) for k, v in seen.items()},
        "packed_bytes": packed,
        "quant_state_bytes": qstate,
        "logical_params": logical,
        "bf16_equivalent_bytes": 2 * logical,
        "bits_per_param": 8 * (packed + qstate) / max(logical, 1),
    }


def qlora_check(model_cfg: dict[str, Any], batch: Batch, a: Any) -> dict[str, Any]:
    import bitsandbytes as bnb

    from bench import measure, methods, models
    from bench.train import train

    device = a.device
    out: dict[str, Any] = {"bitsandbytes": bnb.__version__}
    m = methods.get("qlora")
    mcfg = _method_cfg("qlora")
    kw = m.load_kwargs(mcfg, device)
    q = kw["quantization_config"]
    out["quantization_config"] = {
        "quant_type": q.bnb_4bit_quant_type,
        "double_quant": q.bnb_4bit_use_double_quant,
        "compute_dtype": str(q.bnb_4bit_compute_dtype),
        "quant_storage": str(q.bnb_4bit_quant_storage),
    }

    # bf16 reference: the same weights, every tensor bf16
    _free(device)
    before = _allocated(device)
    ref, _ = models.load(model_cfg, dtype=torch.bfloat16, device=device)
    out["bf16_model"] = {
        "allocated_bytes": _allocated(device) - before,
        "footprint_bytes": int(ref.get_memory_footprint()),
        "linear_weight_bytes": sum(
            measure.tensor_bytes(mod.weight)
            for name, mod in ref.named_modules()
            if isinstance(mod, torch.nn.Linear) and name != "lm_head"
        ),
    }
    del ref
    _free(device)

    # 4-bit, non-quantized tensors in bf16 too, so the difference is the quantization alone
    before = _allocated(device)
    model, _ = models.load(model_cfg, dtype=torch.bfloat16, device=device, extra_kwargs=kw)
    out["nf4_model"] = {
        "allocated_bytes": _allocated(device) - before,
        "footprint_bytes": int(model.get_memory_footprint()),
        **linear4bit_report(model),
    }
    ok = (
        out["nf4_model"]["n_linear4bit"] > 0
        and out["nf4_model"]["weight_storage_dtypes"] == ["torch.uint8"]
        and out["nf4_model"]["weight_classes"] == ["Params4bit"]
    )
    out["storage_is_4bit_uint8"] = ok
    out["linear_bytes_ratio_vs_bf16"] = (
        out["nf4_model"]["packed_bytes"] + out["nf4_model"]["quant_state_bytes"]
    ) / max(out["bf16_model"]["linear_weight_bytes"], 1)

    # train on one repeated batch with the optimizer the harness picks (paged AdamW on CUDA)
    torch.manual_seed(0)
    model = m.apply(model, mcfg)  # prepare_model_for_kbit_training upcasts the rest to fp32
    opt = optimizer_for(m, device)
    meter = measure.MemoryMeter(device)
    meter.start()
    res = train(
        model,
        cycle([batch]),
        steps=a.qlora_steps,
        lr=a.qlora_lr or mcfg["lr"],
        clip=1.0,
        precision=a.precision,
        device=device,
        optimizer=opt,
        on_step=lambda _s, _m: meter.sample(),
        progress=False,
    )
    losses = [v for _, v in res.loss_curve]
    still_4bit = linear4bit_report(model)
    out["train"] = {
        "optimizer": opt,
        "steps": res.steps,
        "lr": a.qlora_lr or mcfg["lr"],
        "params": measure.param_counts(model),
        "losses": losses,
        "finite": all(math.isfinite(x) for x in losses),
        "falls": losses[-1] < losses[0],
        "drop": losses[0] - losses[-1],
        "memory": meter.summary(),
        "step_time_median_s": statistics.median(res.step_times),
        "base_still_uint8": still_4bit["weight_storage_dtypes"] == ["torch.uint8"],
        "base_frozen": not any(
            p.requires_grad
            for mod in model.modules()
            if isinstance(mod, bnb.nn.Linear4bit)
            for p in mod.parameters(recurse=False)
        ),
    }
    del model, res
    return out


# ----------------------------------------------------------------------------- main


def _summary(rec: dict[str, Any]) -> str:
    mib = 2**20
    lines = [f"device {rec['env'].get('device_name')}, precision {rec['precision']}"]
    mm = rec.get("matmul_peak")
    if mm:
        lines.append(f"bf16 matmul {mm['n']}^3 peak: {mm['flops'] / 1e12:.1f} TFLOP/s")
    for r in rec.get("memory", []):
        if "error" in r:
            lines.append(f"  mem {r['method']:14s} ERROR {r['error']}")
            continue
        mem = r["memory"]
        lines.append(
            f"  mem {r['method']:14s} trainable {r['params']['trainable']:>11,d}  "
            f"loaded {r['loaded_bytes'] / mib:7.1f} MiB  peak alloc {mem['peak_bytes'] / mib:8.1f}"
            f" MiB  reserved {mem.get('peak_reserved_bytes', 0) / mib:8.1f} MiB  "
            f"opt {r['optimizer']}"
        )
    for r in rec.get("speed", []):
        if "error" in r:
            lines.append(f"  speed {r['method']:14s} ERROR {r['error']}")
            continue
        lines.append(
            f"  speed {r['method']:14s} bare {r['bare_tokens_per_s']:9.0f} tok/s  harness "
            f"{r['harness_tokens_per_s']:9.0f} tok/s  ratio {r['ratio']:.3f}  "
            f"MFU harness {r['harness_mfu']:.1%} bare {r['bare_mfu']:.1%}"
        )
    q = rec.get("qlora")
    if q and "error" not in q:
        n, b, t = q["nf4_model"], q["bf16_model"], q["train"]
        lines.append(
            f"  qlora: {n['n_linear4bit']} Linear4bit {n['weight_storage_dtypes']} "
            f"{n['quant_types']} dq={n['double_quant']} compute {n['compute_dtypes']}; linear "
            f"weights {(n['packed_bytes'] + n['quant_state_bytes']) / mib:.1f} MiB vs bf16 "
            f"{b['linear_weight_bytes'] / mib:.1f} MiB ({n['bits_per_param']:.3f} bit/param); "
            f"model alloc {n['allocated_bytes'] / mib:.1f} vs {b['allocated_bytes'] / mib:.1f} MiB"
        )
        lines.append(
            f"  qlora train ({t['optimizer']}): loss {t['losses'][0]:.3f} -> "
            f"{t['losses'][-1]:.3f} finite={t['finite']} falls={t['falls']} "
            f"peak {t['memory']['peak_bytes'] / mib:.1f} MiB"
        )
    elif q:
        lines.append(f"  qlora ERROR {q['error']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.gpu_check", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--out", default="results/gpu", help="folder for the JSON")
    ap.add_argument("--device", default="cuda", help="cuda (default) | cpu (smoke run only)")
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--methods", default=",".join(ALL_METHODS), help="memory section")
    ap.add_argument("--speed-methods", default=",".join(SPEED_METHODS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10, help="training steps per memory run")
    ap.add_argument("--speed-steps", type=int, default=10, help="timed steps per repetition")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per repetition")
    ap.add_argument("--reps", type=int, default=2, help="alternating repetitions of each loop")
    ap.add_argument("--qlora-steps", type=int, default=20)
    ap.add_argument("--qlora-lr", type=float, default=None, help="default: conf/method/qlora")
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument(
        "--precision", default=None, help="default: bf16-autocast on CUDA, measured auto on CPU"
    )
    ap.add_argument("--skip", default="", help="comma list of sections: memory,speed,qlora")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(
            "gpu_check: CUDA is not available here (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}); run it on a GPU machine, or "
            "pass --device cpu --shape tiny for a CPU smoke run of the script itself."
        )
    from bench import measure
    from bench.results import environment, write_json_atomic

    if a.precision is None:
        cuda = a.device.startswith("cuda")
        a.precision = "bf16-autocast" if cuda else measure.resolve_precision("auto", "cpu")
    skip = set(filter(None, a.skip.split(",")))
    env = environment(a.device)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(env["device_name"])).strip("-") or "device"
    path = Path(a.out) / f"gpu_check-{slug}-{a.shape}-b{a.batch}-s{a.seq}.json"
    rec: dict[str, Any] = {
        "model": f"random-{a.shape}",
        "model_config": SHAPES[a.shape],
        "batch": a.batch,
        "seq_len": a.seq,
        "precision": a.precision,  # memory and QLoRA sections
        "speed_precision": "bf16-autocast",  # speed section, both loops
        "steps": a.steps,
        "seconds": {},
        "env": env,
        "cuda": {
            "torch_cuda": torch.version.cuda,
            "capability": list(torch.cuda.get_device_capability())
            if a.device.startswith("cuda")
            else None,
            "total_memory_bytes": torch.cuda.get_device_properties(0).total_memory
            if a.device.startswith("cuda")
            else None,
        },
    }

    def save(section: str, t0: float) -> None:
        rec["seconds"][section] = time.perf_counter() - t0
        write_json_atomic(path, rec)  # after every section: a timeout still leaves figures

    with tempfile.TemporaryDirectory(prefix="gpu-check-model-") as tmp:
        t0 = time.perf_counter()
        model_cfg = build_random_model(a.shape, Path(tmp))
        vocab = SHAPES[a.shape]["vocab_size"]
        batches = random_batches(4, a.batch, a.seq, vocab)
        save("build_model", t0)
        _log(f"random {a.shape} saved to {tmp} ({rec['seconds']['build_model']:.1f} s)")

        # first: it also creates the cuBLAS workspace, so every memory row below starts equal
        t0 = time.perf_counter()
        rec["matmul_peak"] = matmul_peak(a.device, a.matmul_n)
        _free(a.device)
        save("matmul_peak", t0)
        _log(f"bf16 matmul peak {rec['matmul_peak']['flops'] / 1e12:.1f} TFLOP/s")

        if "memory" not in skip:
            rec["memory"] = []
            t0 = time.perf_counter()
            for method in filter(None, a.methods.split(",")):
                try:
                    row = memory_row(method, model_cfg, a.device, batches, a)
                except Exception as e:  # one method failing must not cost the others
                    row = {"method": method, "error": _error(e)}
                rec["memory"].append(row)
                _free(a.device)
                _log(f"memory {method}: {'error' if 'error' in row else 'ok'}")
                save("memory", t0)

        if "speed" not in skip:
            rec["speed"] = []
            t0 = time.perf_counter()
            peak = rec["matmul_peak"]["flops"]
            for method in filter(None, a.speed_methods.split(",")):
                try:
                    row = speed_row(method, model_cfg, batches, peak, a)
                except Exception as e:
                    row = {"method": method, "error": _error(e)}
                rec["speed"].append(row)
                _free(a.device)
                _log(f"speed {method}: {'error' if 'error' in row else 'ok'}")
                save("speed", t0)

        if "qlora" not in skip:
            t0 = time.perf_counter()
            try:
                rec["qlora"] = qlora_check(model_cfg, batches[0], a)
            except Exception as e:
                rec["qlora"] = {"error": _error(e)}
            _free(a.device)
            save("qlora", t0)

    print(_summary(rec), flush=True)
    _log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
