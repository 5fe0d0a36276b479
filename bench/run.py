"""Entry point: `python -m bench.run method=lora model=smollm2-135m task=arithmetic`.

`main` (Hydra) is a thin wrapper around `run_one(cfg) -> record`, which tests call directly.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default path never touches a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PRECISIONS = ("auto", "bf16-autocast", "fp32", "bf16")


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        c = OmegaConf.to_container(cfg, resolve=True)
        c.pop("hydra", None)
        return c  # type: ignore[return-value]
    return dict(cfg)


def validate(cfg: Mapping[str, Any]) -> None:
    """Every check that needs no weights: a bad value fails here, naming key and valid choices."""
    from bench import data, methods, models
    from bench.methods import ConfigError, require

    method = methods.get(cfg["method"]["name"])
    require(
        cfg["model"].get("kind") in models.MODEL_KINDS,
        "model.kind",
        f"got {cfg['model'].get('kind')!r}; valid: {list(models.MODEL_KINDS)}",
    )
    if cfg["task"]["name"] not in data.names():
        raise ConfigError(
            f"task.name: {cfg['task']['name']!r} is not a task; valid: {data.names()}"
        )
    require(
        cfg["precision"] in PRECISIONS,
        "precision",
        f"got {cfg['precision']!r}; valid: {list(PRECISIONS)}",
    )
    b = cfg["budget"]
    require(
        b.get("kind") in ("steps", "time"),
        "budget.kind",
        f"got {b.get('kind')!r}; valid: ['steps', 'time']",
    )
    for k in ("steps", "batch_size", "grad_accum", "seq_len"):
        require(
            isinstance(b.get(k), int) and b[k] > 0,
            f"budget.{k}",
            f"must be an int > 0, got {b.get(k)!r}",
        )
    if b["kind"] == "time":
        require((b.get("seconds") or 0) > 0, "budget.seconds", "must be > 0")
    lr = cfg["train"].get("lr") or cfg["method"].get("lr")
    require(
        isinstance(lr, (int, float)) and lr > 0, "train.lr / method.lr", f"must be > 0, got {lr!r}"
    )
    method.validate(cfg["method"], models.model_info(cfg["model"]))
    if (cfg.get("eval") or {}).get("enabled"):
        from bench.metrics.settings import parse

        try:
            parse(cfg["eval"])
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"eval: {e}") from e


def _device(cfg: Mapping[str, Any]) -> str:
    import torch

    d = cfg.get("device", "auto")
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return d


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _quality(
    model: Any, tok: Any, task: Any, cfg: Mapping[str, Any], device: str
) -> dict[str, Any]:
    from bench.generate import generate_text

    test = task.splits["test"]
    preds = generate_text(
        model,
        tok,
        [e.prompt for e in test],
        max_new_tokens=task.max_new_tokens,
        batch_size=cfg["train"]["eval_batch_size"],
        precision=cfg["precision"],
        device=device,
        stop_at_newline=True,
    )
    refs = [getattr(e, "references", None) or e.answer for e in test]  # multi-reference QA
    scores = [task.score(p, r) for p, r in zip(preds, refs, strict=True)]
    out: dict[str, Any] = {
        "score": sum(scores) / len(scores),
        "scores": scores,
        "examples": preds[:5],
    }
    for name, fn in (task.info.get("extra_scores") or {}).items():
        out[name] = sum(fn(p, r) for p, r in zip(preds, refs, strict=True)) / len(test)
    return out


def _general(model: Any, tok: Any, cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    ev = cfg.get("eval") or {}
    if not ev.get("enabled", False):
        return None
    from bench.metrics.general import evaluate_general

    return evaluate_general(model, tok, ev)


def _evaluate(
    model: Any, tok: Any, task: Any, val: Any, cfg: Mapping[str, Any], device: str
) -> dict[str, Any]:
    """Everything measured on one state of the model (base = before, trained = after)."""
    from bench.train import eval_loss

    t0 = time.perf_counter()
    q = _quality(model, tok, task, cfg, device)
    t1 = time.perf_counter()
    vl = eval_loss(
        model,
        val,
        batch_size=cfg["train"]["eval_batch_size"],
        pad_id=tok.pad_token_id,
        precision=cfg["precision"],
        device=device,
    )
    t2 = time.perf_counter()
    general = _general(model, tok, cfg)
    t3 = time.perf_counter()
    # wall seconds per part, so the record itself shows what evaluation costs next to training
    parts: dict[str, Any] = {"quality_s": t1 - t0, "val_loss_s": t2 - t1, "general_s": t3 - t2}
    if general:
        parts["general"] = general.get("timing")
    return {"quality": q, "val_loss": vl, "general": general, "seconds": t3 - t0, "parts": parts}


def _before_key(cfg: Mapping[str, Any], method: Any) -> str:
    """The base model's measurements depend on model, task, eval settings, precision and on how
    the base is loaded (QLoRA's base is 4-bit) - not on the method otherwise."""
    from bench.results import config_hash

    quant = {
        k: v
        for k, v in cfg["method"].items()
        if k in ("quant_type", "double_quant", "compute_dtype")
    }
    key = {
        "model": cfg["model"],
        "task": cfg["task"],
        "eval": cfg.get("eval"),
        "precision": cfg["precision"],
        "quant": quant if method.load_kwargs(cfg["method"], "cpu") else None,
        "eval_batch_size": cfg["train"]["eval_batch_size"],
        "seq_len": cfg["budget"]["seq_len"],
    }
    return config_hash(key, 16)


def run_one(cfg_in: Any) -> dict[str, Any]:
    """Run one (method, model, task, seed) and return its record; the record is always written."""
    from bench import data, measure, methods, models
    from bench.results import (
        empty_record,
        environment,
        is_done,
        now,
        read_record,
        run_id,
        write_json_atomic,
    )
    from bench.sweep import note_finished

    cfg = _plain(cfg_in)
    validate(cfg)  # before any expensive work
    cfg["precision"] = measure.resolve_precision(cfg["precision"], _device(cfg))
    rid = run_id(cfg)
    sweep_dir = Path(cfg["results_dir"]) / cfg["sweep_name"]
    path = sweep_dir / f"{rid}.json"
    if not cfg.get("force") and is_done(path):
        print(f"[bench] skip {rid}: finished record exists", flush=True)
        rec = read_record(path)
        assert rec is not None
        note_finished(cfg, rec, skipped=True)
        return rec

    import torch

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = _device(cfg)
    rec = empty_record(cfg, rid)
    rec["env"] = environment(device)
    method = methods.get(cfg["method"]["name"])
    mcfg = dict(cfg["method"])
    b = cfg["budget"]
    rec["budget"] = {
        "kind": b["kind"],
        "steps": b["steps"] if b["kind"] == "steps" else None,
        "batch_size": b["batch_size"],
        "grad_accum": b["grad_accum"],
        "seq_len": b["seq_len"],
        "seconds": b.get("seconds") if b["kind"] == "time" else None,
        "tokens": None,
    }
    tracker = _tracker(cfg, rid, sweep_dir)
    tmp_adapter = Path(tempfile.mkdtemp(prefix="bench-adapter-"))
    try:
        from bench.train import Diverged, batch_stream, encode, train

        baseline = measure.rss_bytes()
        task = data.build(cfg["task"])
        rec["task_info"] = {
            "name": task.name,
            "metric": task.metric,
            "source": task.source,
            "license": task.license,
            **{f"n_{k}": len(v) for k, v in task.splits.items()},
        }
        rec["model_info"] = models.describe(cfg["model"])
        dtype = torch.bfloat16 if cfg["precision"] == "bf16" else torch.float32
        load_kw = method.load_kwargs(mcfg, device)

        # ---- before: the base model, measured once per cell and cached beside the records
        before_key = _before_key(cfg, method)
        before_path = sweep_dir / ".cache" / f"before-{before_key}.json"
        before = read_record(before_path)
        before_cached = before is not None
        if before is None:
            model, tok = models.load(cfg["model"], dtype=dtype, device=device, extra_kwargs=load_kw)
            val = [encode(e, tok, b["seq_len"]) for e in task.splits["validation"]]
            before = _evaluate(model, tok, task, val, cfg, device)
            write_json_atomic(before_path, before)
            del model
            measure.release_memory()
        rec["timing"] = {
            "before_eval_s": before["seconds"],
            "before_cached": before_cached,
            "before_key": before_key,  # runs with one key share one base evaluation
            "before_parts": before.get("parts"),  # absent in caches written by older versions
        }

        # ---- train
        _seed_all(cfg["seed"])
        model, tok = models.load(cfg["model"], dtype=dtype, device=device, extra_kwargs=load_kw)
        base = measure.param_counts(model)["total"]
        emb = sum(p.numel() for p in model.get_input_embeddings().parameters())
        out_emb = model.get_output_embeddings()
        if out_emb is not None and out_emb.weight is not model.get_input_embeddings().weight:
            emb += out_emb.weight.numel()
        rec["model_info"].update(total_params=base, non_embedding_params=base - emb)
        if "init_text" in mcfg:
            mcfg["_tokenizer_path"] = str(models.model_dir(cfg["model"]))
        model = method.apply(model, mcfg)
        if os.environ.get("BENCH_INJECT_FAILURE") == mcfg["name"]:  # fault injection for tests
            raise RuntimeError(f"injected failure for method {mcfg['name']}")
        counts = measure.param_counts(model)
        rec["params"] = {
            **counts,
            "trainable_pct": 100.0 * counts["trainable"] / counts["total"],
            "inference_extra": method.inference_extra_params(model),
            "adapter_bytes": None,
        }
        train_data = [encode(e, tok, b["seq_len"]) for e in task.splits["train"]]
        val = [encode(e, tok, b["seq_len"]) for e in task.splits["validation"]]
        opt_name = cfg["train"]["optimizer"]
        if opt_name == "auto":
            opt_name = getattr(method, "optimizer_name", lambda d: "adamw")(device)
        meter = measure.MemoryMeter(device)
        meter.start(baseline=baseline if device == "cpu" else None)

        def on_step(step: int, m: dict[str, float]) -> None:
            meter.sample()
            if tracker:
                tracker.log_step(step, {**m, "memory_bytes": meter.samples[-1] - meter.baseline})

        lr = cfg["train"].get("lr") or mcfg["lr"]
        res = train(
            model,
            batch_stream(
                train_data, batch_size=b["batch_size"], seed=cfg["seed"], pad_id=tok.pad_token_id
            ),
            steps=b["steps"],
            lr=lr,
            grad_accum=b["grad_accum"],
            warmup_ratio=cfg["train"]["warmup_ratio"],
            weight_decay=cfg["train"]["weight_decay"],
            clip=cfg["train"]["clip"],
            precision=cfg["precision"],
            device=device,
            optimizer=opt_name,
            max_seconds=b.get("seconds") if b["kind"] == "time" else None,
            on_step=on_step,
            progress=cfg.get("progress", True),
        )
        mem = meter.summary()
        mem["breakdown"] = measure.memory_breakdown(model)
        rec["memory"] = mem
        rec["budget"]["tokens"] = res.tokens
        st = sorted(res.step_times)
        info = models.model_info(cfg["model"])
        flops = measure.train_flops_per_token(
            counts["total"], counts["trainable"], info.num_layers, info.hidden_size, b["seq_len"]
        )
        rec["train"] = {
            "steps": res.steps,
            "tokens": res.tokens,
            "padded_tokens": res.padded_tokens,
            "seconds": res.seconds,
            "tokens_per_s": res.tokens / res.seconds,
            "samples_per_s": res.steps * b["batch_size"] * b["grad_accum"] / res.seconds,
            "step_time_p50": st[len(st) // 2],
            "step_time_p90": st[min(len(st) - 1, int(0.9 * len(st)))],
            "flops_per_token": flops,
            "achieved_flops": flops * res.tokens / res.seconds,
            "loss_curve": res.loss_curve,
            "lr_curve": res.lr_curve,
            "final_loss": res.final_loss,
            "lr": lr,
            "optimizer": opt_name,
        }

        # ---- after
        after = _evaluate(model, tok, task, val, cfg, device)
        rec["timing"]["after_eval_s"] = after["seconds"]
        rec["timing"]["after_parts"] = after["parts"]
        rec["quality"] = {
            "metric": task.metric,
            "before": before["quality"]["score"],
            "after": after["quality"]["score"],
            "val_loss_before": before["val_loss"],
            "val_loss_after": after["val_loss"],
            "n_test": len(task.splits["test"]),
            "extra": {
                k: {"before": before["quality"].get(k), "after": after["quality"][k]}
                for k in (task.info.get("extra_scores") or {})
            },
            "examples_after": after["quality"]["examples"],
        }
        if before.get("general") and after.get("general"):
            from bench.metrics.general import forgetting_summary

            rec["forgetting"] = forgetting_summary(before["general"], after["general"])
            rec["repetition"] = {
                "before": before["general"].get("repetition"),
                "after": after["general"].get("repetition"),
            }
            rec["hallucination"] = {
                "before": before["general"].get("hallucination"),
                "after": after["general"].get("hallucination"),
            }
        if (cfg.get("eval") or {}).get("inference", {}).get("enabled", False):
            from bench.metrics.general import measure_inference

            t0 = time.perf_counter()
            rec["inference"] = measure_inference(model, tok, cfg["eval"])
            rec["timing"]["inference_s"] = time.perf_counter() - t0
        rec["params"]["adapter_bytes"] = method.save(model, tmp_adapter)
        rec["status"] = "success"
    except KeyboardInterrupt:
        rec["status"], rec["error"] = "cancelled", "KeyboardInterrupt"
        raise
    except Exception as e:  # a failure is a result: record it, never take the sweep down
        from bench.train import Diverged

        oom = isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
        rec["status"] = "diverged" if isinstance(e, Diverged) else "oom" if oom else "failed"
        rec["error"] = f"{type(e).__name__}: {e}"
        rec["traceback"] = traceback.format_exc(limit=20)
        print(f"[bench] {rid}: {rec['status']}: {rec['error']}", flush=True)
    finally:
        shutil.rmtree(tmp_adapter, ignore_errors=True)
        rec["finished_at"] = now()
        write_json_atomic(path, rec)
        if tracker:
            tracker.finish(rec)
        note_finished(cfg, rec, skipped=False)
    return rec


def _tracker(cfg: Mapping[str, Any], rid: str, sweep_dir: Path) -> Any:
    lg = cfg.get("logger") or {}
    if lg.get("mode", "none") == "none":
        return None
    from bench.tracking import Tracker

    t = Tracker()
    t.start(
        cfg,
        sweep=cfg["sweep_name"],
        run_id=rid,
        method=cfg["method"]["name"],
        model=cfg["model"]["name"],
        task=cfg["task"]["name"],
        seed=cfg["seed"],
        mode=lg["mode"],
        dir=sweep_dir,
        project=lg.get("project") or "ft-bench",
        entity=lg.get("entity"),
    )
    return t


def _child(cfg: dict[str, Any]) -> None:
    run_one(cfg)


def run_isolated(cfg_in: Any) -> dict[str, Any]:
    """Run `run_one` in a fresh process: memory is measured against a clean process (RSS does not
    shrink between runs of one process), and a crash (segfault, OOM kill) cannot take the sweep
    down: the parent then writes the record with status and error."""
    import multiprocessing as mp

    from bench.measure import resolve_precision
    from bench.results import empty_record, is_done, now, read_record, run_id, write_json_atomic
    from bench.sweep import note_finished

    cfg = _plain(cfg_in)
    validate(cfg)
    # resolved here, once, so parent and child agree on the run id
    cfg["precision"] = resolve_precision(cfg["precision"], _device(cfg))
    rid = run_id(cfg)
    path = Path(cfg["results_dir"]) / cfg["sweep_name"] / f"{rid}.json"
    if not cfg.get("force") and is_done(path):
        return run_one(cfg)  # cheap: notes the skip and returns the record
    t_start = time.time()
    import bench.run  # `_child` by its importable name, also when this file runs as __main__

    if mp.get_start_method(allow_none=True) not in (None, *mp.get_all_start_methods()):
        # Inside a joblib (loky) worker the default method is "loky"; a spawned child would
        # inherit that name and fail to start, so reset this worker's default first.
        mp.set_start_method("spawn", force=True)
    proc = mp.get_context("spawn").Process(target=bench.run._child, args=(cfg,), name=rid)
    proc.start()
    try:
        proc.join()
    except KeyboardInterrupt:
        proc.join(timeout=30)  # the child got the same SIGINT and records `cancelled`
        raise
    rec = read_record(path)
    fresh = rec is not None and path.stat().st_mtime >= t_start - 1
    if not fresh:  # the child died before writing its record
        rec = empty_record(cfg, rid)
        killed = proc.exitcode is not None and proc.exitcode < 0
        rec["status"] = "oom" if proc.exitcode == -9 else "failed"
        rec["error"] = (
            f"run process killed by signal {-proc.exitcode}"
            if killed
            else f"run process exited with code {proc.exitcode}"
        )
        rec["finished_at"] = now()
        write_json_atomic(path, rec)
        note_finished(cfg, rec, skipped=False)
        print(f"[bench] {rid}: {rec['status']}: {rec['error']}", flush=True)
    assert rec is not None
    return rec


def main() -> None:
    import hydra

    @hydra.main(
        version_base="1.3",
        config_path=str(Path(__file__).resolve().parent.parent / "conf"),
        config_name="config",
    )
    def _main(cfg: Any) -> float:
        rec = run_isolated(cfg) if cfg.get("isolate", True) else run_one(cfg)
        q = rec.get("quality") or {}
        print(
            f"[bench] {rec['run_id']}: {rec['status']}, "
            f"quality {q.get('before')} -> {q.get('after')}",
            flush=True,
        )
        return float(q.get("after") or 0.0)

    _main()


if __name__ == "__main__":
    main()
