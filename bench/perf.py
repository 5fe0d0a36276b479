"""What `make bench` (bench.speed, CPU) and bench.gpu_check (CUDA) share: config loading, the
one way to get a trainable model, a bare torch loop and the harness loop with the same settings,
their ABBA timing, and the rows built from them. No Hydra (the GPU image has none): `defaults:`
lists are merged here by Hydra's rules (tests/test_perf.py checks it equals Hydra's compose).
"""

from __future__ import annotations

import gc
import statistics
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from bench.train import adamw, autocast_ctx

CONF = Path(__file__).resolve().parent.parent / "conf"
CLIP = 1.0  # both loops clip the global gradient norm to this

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class On:
    """Where, and in which precision (resolved, never `auto`), a measurement runs."""

    device: str
    precision: str


# ----------------------------------------------------------------------------- configs


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """OmegaConf's merge for plain data: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def group_config(group: str, name: str, conf: Path = CONF) -> dict[str, Any]:
    """conf/<group>/<name>.yaml with its `defaults:` list applied as Hydra does: entries in
    order, `_self_` where listed (appended last when absent), names relative to the group."""
    raw = yaml.safe_load((conf / group / f"{name}.yaml").read_text()) or {}
    defaults = raw.pop("defaults", None) or []
    if "_self_" not in defaults:
        defaults = [*defaults, "_self_"]
    out: dict[str, Any] = {}
    for entry in defaults:
        if entry == "_self_":
            out = _deep_merge(out, raw)
        elif isinstance(entry, str):  # `/x/y` is from the conf root, `y` from this group
            g, n = (entry[1:] if entry.startswith("/") else f"{group}/{entry}").rsplit("/", 1)
            out = _deep_merge(out, group_config(g, n, conf))
        else:
            raise ValueError(f"conf/{group}/{name}.yaml: unsupported defaults entry {entry!r}")
    return out


def method_config(name: str) -> dict[str, Any]:
    return group_config("method", name)


def model_config(name: str) -> dict[str, Any]:
    """A conf/model name, or a path to a model YAML (e.g. a shape not committed)."""
    if name.endswith((".yaml", ".yml")):
        return yaml.safe_load(Path(name).read_text())
    return group_config("model", name)


def method_names(arg: str | None) -> list[str]:
    """A comma list from the CLI, else every registered method that has defaults to run."""
    from bench import methods

    if arg:
        return [m.strip() for m in arg.split(",") if m.strip()]
    return methods.swept()  # the generic peft method needs a peft_type chosen per run


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matmuls run in: what the matmul peak for MFU must be measured in."""
    return torch.bfloat16 if precision.startswith("bf16") else torch.float32


def load_method(
    name: str, model_cfg: Mapping[str, Any], on: On, dtype: torch.dtype | None = None
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(model, tokenizer, method, method config): validated, loaded and applied as bench.run;
    `dtype` overrides the load dtype the precision implies."""
    from bench import methods, models

    mcfg = method_config(name)
    methods.get(name).validate(mcfg, models.model_info(model_cfg))
    torch.manual_seed(0)  # adapter init is the same in every loop and on every machine
    model, tok, method = methods.load_and_apply(
        model_cfg, mcfg, device=on.device, precision=on.precision, dtype=dtype
    )
    return model, tok, method, mcfg


# ----------------------------------------------------------------------------- device


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free(device: str) -> None:
    """Drop garbage and give memory back, so the next measurement starts from the same floor."""
    from bench.measure import release_memory

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    release_memory()


def in_use(device: str) -> int:
    """Bytes in use now: the CUDA allocator's on CUDA, the resident set size on CPU."""
    from bench.measure import rss_bytes

    return torch.cuda.memory_allocated() if device.startswith("cuda") else rss_bytes()


def error(e: BaseException) -> str:
    traceback.print_exc()
    return f"{type(e).__name__}: {e}"[:2000]


def per_method(
    rec: dict[str, Any],
    key: str,
    names: list[str],
    fn: Callable[[str], dict[str, Any]],
    save: Callable[[str, float], None],
) -> None:
    """rec[key]: fn's row per method, saved after each; a failing method leaves an error row."""
    rec[key] = []
    t0 = time.perf_counter()
    for method in names:
        try:
            row = fn(method)
        except Exception as e:  # one method failing must not cost the others
            row = {"method": method, "error": error(e)}
        rec[key].append(row)
        free(rec["env"]["device"])
        print(f"[perf] {key} {method}: {'error' if 'error' in row else 'ok'}", flush=True)
        save(key, t0)


def matmul_peak(device: str, dtype: torch.dtype, n: int, seconds: float = 1.0) -> dict[str, Any]:
    """Square-matmul FLOP/s in the dtype the loops compute in: MFU's denominator. CUDA: best of
    3 blocks of 10 products timed by CUDA events (host timers would see only the launches)."""
    if not device.startswith("cuda"):
        from bench.measure import measure_matmul_peak

        peak = measure_matmul_peak(dtype, n=n, seconds=seconds)
        return {"n": n, "flops": peak, "blocks_flops": [peak], "timer": "perf_counter"}
    reps = 10
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(3):
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        for _ in range(reps):
            a @ b
        t1.record()
        t1.synchronize()
        rates.append(2 * n**3 * reps / (t0.elapsed_time(t1) / 1e3))
    del a, b
    return {"n": n, "reps": reps, "flops": max(rates), "blocks_flops": rates, "timer": "cuda"}


# ----------------------------------------------------------------------------- data


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


def tokens_per_step(batches: list[Batch]) -> float:
    # the harness counts attention-mask tokens; virtual (prompt) tokens are not data
    return sum(int(b["attention_mask"].sum()) for b in batches) / len(batches)


# ----------------------------------------------------------------------------- loops


def bare_loop(model: Any, batches: list[Batch], lr: float, steps: int, on: On) -> list[float]:
    """What a user writes by hand: AdamW, autocast per precision, clip, step. Step times."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, lr, 0.0)  # the harness's optimizer: the comparison is the loop
    model.train()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        b = {k: v.to(on.device, non_blocking=True) for k, v in batches[i % len(batches)].items()}
        with autocast_ctx(on.precision, on.device):
            loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(on.device)  # CUDA runs asynchronously: unsynced, a step would time its launches
        times.append(time.perf_counter() - t0)
    return times


def _train(model: Any, batches: list[Batch], lr: float, steps: int, on: On, **kw: Any) -> Any:
    from bench.train import train

    b = cycle(batches)
    return train(model, b, steps=steps, lr=lr, clip=CLIP, **asdict(on), progress=False, **kw)


def harness_loop(model: Any, batches: list[Batch], lr: float, steps: int, on: On) -> list[float]:
    """bench.train.train with the bare loop's settings (AdamW, no weight decay, same clip)."""
    res = _train(model, batches, lr, steps, on, optimizer="adamw")
    sync(on.device)  # the last step's queued kernels must not land in the other loop's time
    return res.step_times


LOOPS: dict[str, Callable[..., list[float]]] = {"bare": bare_loop, "harness": harness_loop}


def time_loops(
    model: Any, batches: list[Batch], lr: float, on: On, *, steps: int, warmup: int, reps: int
) -> dict[str, list[float]]:
    """Timed step times per loop; the first `warmup` steps of every repetition are dropped."""
    loops = list(LOOPS.items())
    times: dict[str, list[float]] = {name: [] for name in LOOPS}
    for rep in range(reps):
        # ABBA order: neither loop always runs first (allocator, cache and clock state carry over)
        for name, fn in loops if rep % 2 == 0 else loops[::-1]:
            times[name] += fn(model, batches, lr, warmup + steps, on)[warmup:]
    return times


def train_measured(
    model: Any,
    batches: list[Batch],
    lr: float,
    steps: int,
    on: On,
    *,
    optimizer: str,
    baseline: int,
) -> tuple[Any, dict[str, Any]]:
    """The harness's run with memory sampled each step, as bench.run does it: on CPU against
    `baseline` (RSS before loading), on CUDA against 0; so the peak includes the weights."""
    from bench.measure import MemoryMeter

    meter = MemoryMeter(on.device)
    meter.start(None if on.device.startswith("cuda") else baseline)
    res = _train(
        model, batches, lr, steps, on, optimizer=optimizer, on_step=lambda *_: meter.sample()
    )
    return res, meter.summary()


# ----------------------------------------------------------------------------- rows


def speed_row(
    method: str,
    model: Any,
    model_cfg: Mapping[str, Any],
    times: Mapping[str, list[float]],
    *,
    tokens: float,
    seq: int,
    peak: float,
) -> dict[str, Any]:
    """Throughput of each loop: `tokens` per step over the median step time, and MFU."""
    from bench import measure, models

    info = models.model_info(model_cfg)
    counts = measure.param_counts(model)
    flops = measure.model_flops_per_token(model, info.num_layers, info.hidden_size, seq)
    row: dict[str, Any] = {
        "method": method,
        "trainable": counts["trainable"],
        "total": counts["total"],
        "flops_per_token": flops,
        "tokens_per_step": tokens,
        "steps_timed_per_loop": len(times["harness"]),
    }
    for name, t in times.items():
        median = statistics.median(t)
        row[f"{name}_step_s_median"] = median
        row[f"{name}_step_times"] = [round(x, 4) for x in t]
        row[f"{name}_tokens_per_s"] = tokens / median
        row[f"{name}_mfu"] = flops * tokens / median / peak
    row["ratio"] = row["harness_tokens_per_s"] / row["bare_tokens_per_s"]
    return row


def speed_line(r: Mapping[str, Any]) -> str:
    return (
        f"{r['method']:14s} bare {r['bare_tokens_per_s']:9.0f} tok/s  harness "
        f"{r['harness_tokens_per_s']:9.0f} tok/s  ratio {r['ratio']:.3f}  "
        f"MFU harness {r['harness_mfu']:.1%} bare {r['bare_mfu']:.1%}"
    )


def speed_method(
    method: str,
    model_cfg: Mapping[str, Any],
    make_batches: Callable[[Any], list[Batch]],
    on: On,
    *,
    steps: int,
    warmup: int,
    reps: int,
    peak: float,
) -> dict[str, Any]:
    """Load `method` once, time both loops on that model (batches from its tokenizer), row."""
    free(on.device)
    model, tok, _, mcfg = load_method(method, model_cfg, on)
    batches = make_batches(tok)
    times = time_loops(model, batches, mcfg["lr"], on, steps=steps, warmup=warmup, reps=reps)
    seq = int(batches[0]["input_ids"].shape[1])
    row = speed_row(
        method, model, model_cfg, times, tokens=tokens_per_step(batches), seq=seq, peak=peak
    )
    del model
    free(on.device)
    return row


def memory_row(
    method: str, model_cfg: Mapping[str, Any], batches: list[Batch], steps: int, on: On
) -> dict[str, Any]:
    """Memory and throughput of a short harness run of `method`, with the optimizer it wants."""
    from bench import measure

    free(on.device)
    before = in_use(on.device)
    model, _, m, mcfg = load_method(method, model_cfg, on)
    loaded = in_use(on.device) - before
    opt = m.optimizer(on.device)
    res, mem = train_measured(model, batches, mcfg["lr"], steps, on, optimizer=opt, baseline=before)
    row = {
        "method": method,
        "optimizer": opt,
        "params": measure.param_counts(model),
        "allocated_before_load_bytes": before,
        "loaded_bytes": loaded,
        "memory": mem,
        "breakdown": measure.memory_breakdown(model),
        "loss_first": res.loss_curve[0][1],
        "loss_last": res.final_loss,
        "step_time_median_s": statistics.median(res.step_times),
        "tokens": res.tokens,
        "seconds": res.seconds,
        "tokens_per_s": res.tokens / res.seconds,
    }
    del model, res
    return row
