"""`python -m bench.gpu_check --out DIR`: harness numbers on a CUDA machine (bench.perf, shared
with bench.speed) on a random Llama of conf/model/<model>.yaml's `arch:` shape: 1. memory per
method (allocator peak); 2. tokens/s, harness vs bare loop (ABBA), MFU vs a measured matmul peak;
3. the 4-bit method on bitsandbytes CUDA kernels (NF4 storage, bytes vs bf16, paged AdamW, loss
falling). One JSON, written after each section. Imports no Hydra (not on the GPU image).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bench import methods, perf
from bench.methods.qlora import linear4bit_report  # the 4-bit storage, as records measure it
from bench.precision import resolve_precision
from bench.results import environment, write_json_atomic  # env.cpu_flags: with every timing

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the device reaches no hub; fail fast, never hang

# conf/model `arch:` key -> LlamaConfig kwarg: all needed, or the random model has another cost
ARCH_TO_LLAMA = {
    "num_layers": "num_hidden_layers", "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size", "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads", "vocab_size": "vocab_size",
    "tie_word_embeddings": "tie_word_embeddings",
}  # fmt: skip
QUANT = "quantized"  # the record section that checks the 4-bit CUDA kernels
ARCH_OPTIONAL = ("max_position_embeddings", "rope_theta", "rms_norm_eps")  # cost-neutral


def _log(msg: str) -> None:
    print(f"[gpu_check] {msg}", flush=True)


# ----------------------------------------------------------------------------- model


def llama_kwargs(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """LlamaConfig kwargs from the model's declared `arch:` block."""
    arch = dict(model_cfg.get("arch") or {})
    where = f"conf/model/{model_cfg['name']}.yaml arch"
    if arch.get("model_type", "llama") != "llama":
        raise ValueError(f"{where}: model_type {arch['model_type']!r}; a random Llama needs llama")
    missing = [k for k in ARCH_TO_LLAMA if k not in arch]
    if missing:
        raise ValueError(f"{where}: missing {missing}, needed to build its shape at random")
    return {
        **{ARCH_TO_LLAMA[k]: arch[k] for k in ARCH_TO_LLAMA},
        **{k: arch[k] for k in ARCH_OPTIONAL if k in arch},
    }


def build_random_model(
    model_cfg: Mapping[str, Any], out: Path, seed: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config, LlamaConfig kwargs) of a random model of `model_cfg`'s shape. kind tiny is
    random already and built locally; any other kind is saved to `out` as a random Llama + the
    char tokenizer (models.load wants one; ids are fed directly)."""
    from bench import models

    if model_cfg["kind"] == "tiny":
        shape = {v: model_cfg[k] for k, v in ARCH_TO_LLAMA.items() if k in model_cfg}
        return dict(model_cfg), {**shape, "vocab_size": models.model_info(model_cfg).vocab_size}
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = llama_kwargs(model_cfg)
    tok = models.char_tokenizer()
    ids = {f"{t}_token_id": getattr(tok, f"{t}_token_id") for t in ("bos", "eos", "pad")}
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**kw, **ids)).save_pretrained(out)  # fp32, as harness loads
    tok.save_pretrained(out)
    # ModelInfo's part of `arch` kept: model_info needs no AutoConfig round trip
    info = {f.name for f in dataclasses.fields(models.ModelInfo)}
    arch = {k: v for k, v in model_cfg["arch"].items() if k in info}
    cfg = {"name": f"random-{model_cfg['name']}", "kind": "hub", "hub_id": str(out)}
    return {**cfg, "arch": arch}, kw


# ----------------------------------------------------------------------------- QLoRA


def _load_bf16(model_cfg: Mapping[str, Any], device: str, kw: Any = None) -> tuple[Any, int]:
    """The base alone, all in bf16, and the bytes its loading took."""
    from bench import models

    perf.free(device)
    before = perf.in_use(device)
    model, _ = models.load(model_cfg, dtype=torch.bfloat16, device=device, extra_kwargs=kw)
    return model, perf.in_use(device) - before


def _base_models(model_cfg: Mapping[str, Any], kw: Mapping[str, Any], device: str) -> dict:
    """The base all-bf16 and 4-bit (other tensors bf16 too, so the difference is the
    quantization): a measurement of how the method loads it, not a model to train."""
    from bench import measure

    ref, loaded = _load_bf16(model_cfg, device)
    out: dict[str, Any] = {}
    out["bf16_model"] = {
        "allocated_bytes": loaded,
        "footprint_bytes": int(ref.get_memory_footprint()),
        "linear_weight_bytes": sum(
            measure.tensor_bytes(mod.weight)
            for name, mod in ref.named_modules()
            if isinstance(mod, torch.nn.Linear) and name != "lm_head"
        ),
    }
    del ref
    model, loaded = _load_bf16(model_cfg, device, kw)
    n = {
        "allocated_bytes": loaded,
        "footprint_bytes": int(model.get_memory_footprint()),
        **linear4bit_report(model),
    }
    del model
    perf.free(device)
    out["nf4_model"] = n
    uint8 = n["weight_storage_dtypes"] == ["torch.uint8"] and n["weight_classes"] == ["Params4bit"]
    out["storage_is_4bit_uint8"] = n["n_linear4bit"] > 0 and uint8
    nf4_bytes = n["packed_bytes"] + n["quant_state_bytes"]
    out["linear_bytes_ratio_vs_bf16"] = nf4_bytes / max(out["bf16_model"]["linear_weight_bytes"], 1)
    return out


def _qlora_train(model_cfg: Mapping[str, Any], batch: perf.Batch, a: Any) -> dict[str, Any]:
    """A few steps on one repeated batch with the optimizer the method wants (paged AdamW)."""
    import bitsandbytes as bnb

    from bench import measure

    before = perf.in_use(a.device)
    # bf16 base as in _base_models; prepare_model_for_kbit_training upcasts the rest to fp32
    model, _, m, mcfg = perf.load_method(a.qlora_method, model_cfg, a.on, torch.bfloat16)
    opt, lr = m.optimizer(a.device), a.qlora_lr or mcfg["lr"]
    steps = a.qlora_steps
    res, mem = perf.train_measured(model, [batch], lr, steps, a.on, optimizer=opt, baseline=before)
    losses = [v for _, v in res.loss_curve]
    lin4 = [mod for mod in model.modules() if isinstance(mod, bnb.nn.Linear4bit)]
    out = {
        "optimizer": opt,
        "steps": res.steps,
        "lr": lr,
        "params": measure.param_counts(model),
        "losses": losses,
        "finite": all(math.isfinite(x) for x in losses),
        "falls": losses[-1] < losses[0],
        "drop": losses[0] - losses[-1],
        "memory": mem,
        "step_time_median_s": statistics.median(res.step_times),
        "base_still_uint8": linear4bit_report(model)["weight_storage_dtypes"] == ["torch.uint8"],
        "base_frozen": not any(p.requires_grad for x in lin4 for p in x.parameters(recurse=False)),
    }
    del model, res
    return out


def qlora_check(model_cfg: Mapping[str, Any], batch: perf.Batch, a: Any) -> dict[str, Any]:
    import bitsandbytes as bnb

    from bench import methods

    mcfg = perf.method_config(a.qlora_method)
    kw = methods.get(a.qlora_method).load_kwargs(mcfg, a.device)
    q = kw["quantization_config"]
    return {
        "bitsandbytes": bnb.__version__,
        "quantization_config": {
            "quant_type": q.bnb_4bit_quant_type,
            "double_quant": q.bnb_4bit_use_double_quant,
            "compute_dtype": str(q.bnb_4bit_compute_dtype),
            "quant_storage": str(q.bnb_4bit_quant_storage),
        },
        **_base_models(model_cfg, kw, a.device),
        "train": _qlora_train(model_cfg, batch, a),
    }


# ----------------------------------------------------------------------------- main

MIB = 2**20


def _mem_line(r: Mapping[str, Any]) -> str:
    mem = r["memory"]
    return (
        f"{r['method']:14s} trainable {r['params']['trainable']:>11,d}  "
        f"loaded {r['loaded_bytes'] / MIB:7.1f} MiB  peak alloc {mem['peak_bytes'] / MIB:8.1f}"
        f" MiB  reserved {mem.get('peak_reserved_bytes', 0) / MIB:8.1f} MiB  "
        f"opt {r['optimizer']}  {r['tokens_per_s']:9.0f} tok/s"
    )


def _summary_qlora(q: Mapping[str, Any]) -> list[str]:
    if "error" in q:
        return [f"  qlora ERROR {q['error']}"]
    n, b, t = q["nf4_model"], q["bf16_model"], q["train"]
    return [
        f"  qlora: {n['n_linear4bit']} Linear4bit {n['weight_storage_dtypes']} "
        f"{n['quant_types']} dq={n['double_quant']} compute {n['compute_dtypes']}; linear "
        f"weights {(n['packed_bytes'] + n['quant_state_bytes']) / MIB:.1f} MiB vs bf16 "
        f"{b['linear_weight_bytes'] / MIB:.1f} MiB ({n['bits_per_param']:.3f} bit/param); "
        f"model alloc {n['allocated_bytes'] / MIB:.1f} vs {b['allocated_bytes'] / MIB:.1f} MiB",
        f"  qlora train ({t['optimizer']}): loss {t['losses'][0]:.3f} -> "
        f"{t['losses'][-1]:.3f} finite={t['finite']} falls={t['falls']} "
        f"peak {t['memory']['peak_bytes'] / MIB:.1f} MiB",
    ]


def _summary(rec: Mapping[str, Any]) -> str:
    env = rec["env"]
    lines = [
        f"device {env.get('device_name')}, precision {rec['precision']}, "
        f"cpu flags {env['cpu_flags']}"
    ]
    mm = rec.get("matmul_peak")
    if mm:
        dtype = str(perf.compute_dtype(rec["precision"])).removeprefix("torch.")
        lines.append(f"{dtype} matmul {mm['n']}^3 peak: {mm['flops'] / 1e12:.1f} TFLOP/s")
    for label, key, line in (("mem", "memory", _mem_line), ("speed", "speed", perf.speed_line)):
        for r in rec.get(key, []):
            text = f"{r['method']:14s} ERROR {r['error']}" if "error" in r else line(r)
            lines.append(f"  {label} {text}")
    if rec.get(QUANT):
        lines += _summary_qlora(rec[QUANT])
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.gpu_check", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--out", default="results/gpu", help="folder for the JSON")
    ap.add_argument("--device", default="cuda", help="cuda (default) | cpu (smoke run only)")
    ap.add_argument("--model", "--shape", default="smollm2-135m", help="conf/model name or YAML")
    ap.add_argument("--methods", default=None, help="memory section (default: all but peft)")
    ap.add_argument("--speed-methods", default=None, help="default: as --methods")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10, help="training steps per memory run")
    ap.add_argument("--speed-steps", type=int, default=10, help="timed steps per repetition")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per repetition")
    ap.add_argument("--reps", type=int, default=2, help="alternating repetitions of each loop")
    ap.add_argument(
        "--qlora-method",
        default=(methods.quantized() or [None])[0],
        help="the 4-bit method section 3 checks (default: the registry's quantized method)",
    )
    ap.add_argument("--qlora-steps", type=int, default=20)
    ap.add_argument("--qlora-lr", type=float, default=None, help="default: the method's lr")
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--precision", default="auto", help="auto | bf16-autocast | fp32 | bf16")
    ap.add_argument("--skip", default="", help=f"comma list of sections: memory,speed,{QUANT}")
    return ap.parse_args(argv)


def _record(a: argparse.Namespace, name: str, shape: dict[str, Any]) -> dict[str, Any]:
    cuda = a.device.startswith("cuda")
    props = torch.cuda.get_device_properties(0) if cuda else None
    return {
        "model": name,
        "model_config": shape,
        "batch": a.batch,
        "seq_len": a.seq,
        "precision": a.precision,  # every section
        "speed_precision": a.precision,
        "steps": a.steps,
        "seconds": {},
        "env": environment(a.device),
        "cuda": {
            "torch_cuda": torch.version.cuda,
            "capability": list(torch.cuda.get_device_capability()) if cuda else None,
            "total_memory_bytes": props.total_memory if props else None,
        },
    }


def _sections(
    rec: dict[str, Any], a: argparse.Namespace, model_cfg: Mapping[str, Any], save: Callable
) -> None:
    from bench import models

    dev, skip = a.device, set(filter(None, a.skip.split(",")))
    batches = perf.random_batches(4, a.batch, a.seq, models.model_info(model_cfg).vocab_size)
    # first: it also creates the cuBLAS workspace, so every memory row below starts equal
    t0 = time.perf_counter()
    n, secs = (a.matmul_n, 1.0) if dev.startswith("cuda") else (min(a.matmul_n, 512), 0.5)
    rec["matmul_peak"] = perf.matmul_peak(dev, perf.compute_dtype(a.precision), n, secs)
    perf.free(dev)
    save("matmul_peak", t0)
    _log(f"matmul peak {rec['matmul_peak']['flops'] / 1e12:.1f} TFLOP/s")
    if "memory" not in skip:
        fn = partial(perf.memory_row, model_cfg=model_cfg, batches=batches, steps=a.steps, on=a.on)
        perf.per_method(rec, "memory", perf.method_names(a.methods), fn, save)
    if "speed" not in skip:
        timing = {"steps": a.speed_steps, "warmup": a.warmup, "reps": a.reps}

        def speed(m: str) -> dict[str, Any]:  # random ids: the tokenizer is not needed
            peak = rec["matmul_peak"]["flops"]
            return perf.speed_method(m, model_cfg, lambda _: batches, a.on, peak=peak, **timing)

        perf.per_method(rec, "speed", perf.method_names(a.speed_methods or a.methods), speed, save)
    if QUANT not in skip:
        t0 = time.perf_counter()
        try:
            rec[QUANT] = qlora_check(model_cfg, batches[0], a)
        except Exception as e:
            rec[QUANT] = {"error": perf.error(e)}
        perf.free(dev)
        save(QUANT, t0)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(
            "gpu_check: CUDA is not available here (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}); run it on a GPU machine, or "
            "pass --device cpu --model tiny-random for a CPU smoke run of the script itself."
        )
    a.precision = resolve_precision(a.precision, a.device)
    a.on = perf.On(a.device, a.precision)
    base_cfg = perf.model_config(a.model)
    with tempfile.TemporaryDirectory(prefix="gpu-check-model-") as tmp:
        t0 = time.perf_counter()
        model_cfg, shape = build_random_model(base_cfg, Path(tmp))
        rec = _record(a, model_cfg["name"], shape)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", str(rec["env"]["device_name"])).strip("-")
        path = Path(a.out) / f"gpu_check-{slug or 'device'}-{base_cfg['name']}"
        path = path.with_name(f"{path.name}-b{a.batch}-s{a.seq}.json")

        def save(section: str, t0: float) -> None:
            rec["seconds"][section] = time.perf_counter() - t0
            write_json_atomic(path, rec)  # after every section: a timeout still leaves figures

        save("build_model", t0)
        _log(f"{model_cfg['name']} ready in {tmp} ({rec['seconds']['build_model']:.1f} s)")
        _sections(rec, a, model_cfg, save)
    print(_summary(rec), flush=True)
    _log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
