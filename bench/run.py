"""Entry point: `python -m bench.run method=lora model=smollm2-135m task=arithmetic`.

`main` (Hydra) runs each job in its own process (bench/isolate.py) around `run_one`, the recipe:
check config -> evaluate the base (cached) -> load and apply the method -> train -> evaluate ->
save -> write the record. Every stage is a function in the module named for it.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default path never touches a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _stages(c: Any, method: Any, rec: Any, tracker: Any, cache: Path, scratch: Path) -> None:
    """The recipe: base evaluation (cached per cell) -> load + apply -> train -> evaluate ->
    save. Each stage fills its own block of the typed record once."""
    import torch

    from bench import data, evaluate, fit, measure, methods, models, record, state

    baseline_rss = measure.rss_bytes()
    task = data.build(c.raw["task"])
    rec.task_info = record.TaskInfo(**task_block(task))
    _check_fits(task, c)
    base, timing = evaluate.before(c, method, task, cache)
    rec.timing = record.Timing(**timing)

    random.seed(c.raw["seed"])
    torch.manual_seed(c.raw["seed"])  # adapter init; the data order has its own seeded stream
    sizes: dict[str, int] = {}
    model, tok, _ = methods.load_and_apply(
        c.model,
        c.raw["method"],
        device=c.device,
        precision=c.raw["precision"],
        before_apply=lambda m: sizes.update(fit.base_sizes(m)),
    )
    rec.model_info = record.ModelInfo(**models.describe(c.raw["model"]), **sizes)
    rec.params = record.Params(**fit.param_block(model, method))
    fitted = fit.fit(
        model, tok, task, c, method, baseline_rss=baseline_rss, on_step=tracker and tracker.log_step
    )
    rec.memory, rec.train = fitted.memory, record.Train(**fitted.train)
    rec.budget.tokens = fitted.result.tokens
    if c.raw["state"]["keep"]:  # before evaluating: a failed evaluation keeps the training
        kept = state.keep(model, cache.parent, rec.run_id, c.raw["state"]["max_mb"])
        rec.state = record.State(**kept)
    evaluate.evaluate_into(rec, c, task, model, tok, base)
    rec.params.adapter_bytes = method.save(model, scratch)


def _check_fits(task: Any, c: Any) -> None:
    """A budget.seq_len that cannot hold every answer (EOS included) and one prompt token is
    refused before any model is loaded or trained (cut answers would train on nothing useful)."""
    from transformers import AutoTokenizer

    from bench import methods, models

    model_cfg = c.model
    tok = AutoTokenizer.from_pretrained(
        models.model_dir(model_cfg), trust_remote_code=bool(model_cfg.get("trust_remote_code"))
    )
    answers = {e.answer for split in task.splits.values() for e in split}
    longest = max(len(tok(" " + a, add_special_tokens=False)["input_ids"]) for a in answers)
    need = longest + 2 + int(bool(getattr(tok, "add_bos_token", False)))  # EOS, a prompt token
    if c.budget.seq_len < need:
        raise methods.ConfigError(
            f"budget.seq_len: {c.budget.seq_len} cannot hold the longest answer of task "
            f"{task.name} ({longest} tokens + EOS) and a prompt token; must be >= {need}"
        )
    if c.budget.whole_examples:  # equal characters across tokenizers: nothing may be cut
        from bench.train import encode

        full = max(len(encode(e, tok, 1 << 30).input_ids) for e in task.splits["train"])
        if c.budget.seq_len < full:
            raise methods.ConfigError(
                f"budget.seq_len: {c.budget.seq_len} cuts training examples of task {task.name} "
                f"(the longest is {full} tokens with this tokenizer), and budget.whole_examples "
                f"trains every arm on the same characters; must be >= {full}"
            )


def split_sha256(examples: Any) -> str:
    """A split's fingerprint: every prompt with all its references, in order."""
    import hashlib
    import json

    rows = [[e.prompt, list(getattr(e, "references", None) or [e.answer])] for e in examples]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def task_block(task: Any) -> dict[str, Any]:
    splits = {f"n_{k}": len(v) for k, v in task.splits.items()}
    dataset = task.info.get("dataset")  # a generated training set's summary, if the task has one
    return {"name": task.name, "metric": task.metric, "source": task.source,
            "license": task.license, **splits, "test_sha256": split_sha256(task.splits["test"]),
            "dataset": dataset if isinstance(dataset, dict) else None}  # fmt: skip


def run_one(cfg_in: Any) -> dict[str, Any]:
    """Run one (method, model, task, seed) and return its record; the record is always written."""
    import torch

    from bench import config, fit, methods, record, results, tracking
    from bench.sweep import note_finished

    c = config.check(cfg_in)  # before any expensive work
    if c.raw.get("train_version") != results.TRAIN_VERSION:  # the id names what this trains
        raise methods.ConfigError(
            f"train_version: {c.raw.get('train_version')!r}; this code trains version "
            f"{results.TRAIN_VERSION} (conf/config.yaml), the only valid value for a new run"
        )
    rid = results.run_id(c.raw)
    sweep_dir = Path(c.raw["results_dir"]) / c.raw["sweep_name"]
    path = sweep_dir / f"{rid}.json"
    if not c.raw["force"] and results.is_done(path):
        from bench import reevaluate

        done = reevaluate.bring_up_to_date(path, c)  # re-evaluated from its state if stale
        note_finished(c.raw, done, skipped=True)
        return done
    if c.raw["threads"]:
        torch.set_num_threads(c.raw["threads"])
    method = methods.get(c.raw["method"]["name"])
    rec = record.new_record(c.raw, rid, results.run_label(c.raw), results.now())
    rec.env = results.environment(c.device)
    rec.budget = record.Budget(**fit.budget_block(c))
    tracker = tracking.for_run(c.raw, rid, sweep_dir)
    scratch = Path(tempfile.mkdtemp(prefix="bench-adapter-"))
    try:
        _stages(c, method, rec, tracker, sweep_dir / ".cache", scratch)
        rec.status = "success"
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (a preemption) via Terminated
        rec.status, rec.error = "cancelled", f"{type(e).__name__}: {e}".rstrip(": ")
        raise
    except Exception as e:  # a failure is a result: record it, never take the sweep down
        failure(rec, e)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        rec.finished_at = results.now()
        out = rec.dump()
        results.write_json_atomic(path, out)
        if tracker:
            tracker.finish(out)
        note_finished(c.raw, out, skipped=False)
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM, as a cluster's preemption sends it: taken down the Ctrl-C path, so the run
    records `cancelled` (and a rerun redoes it) instead of dying without a record."""


def _on_sigterm(signum: int, frame: Any) -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the record write
    raise Terminated("SIGTERM")


def sigterm_cancels() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():  # signals reach only that one
        signal.signal(signal.SIGTERM, _on_sigterm)


def failure(rec: Any, e: Exception) -> None:
    import torch

    from bench.train import Diverged

    # CUDA's error, and a CPU allocation refused under a memory limit (MemoryError, or torch's
    # "can't allocate memory")
    msg = str(e).lower()
    oom = isinstance(e, torch.OutOfMemoryError | MemoryError) or any(
        k in msg for k in ("out of memory", "can't allocate memory")
    )
    rec.status = "diverged" if isinstance(e, Diverged) else "oom" if oom else "failed"
    rec.error = f"{type(e).__name__}: {e}"
    rec.traceback = traceback.format_exc(limit=20)
    print(f"[bench] {rec.run_id}: {rec.status}: {rec.error}", flush=True)


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from bench.isolate import run_in_process, run_isolated

    @hydra.main(
        version_base="1.3",
        config_path=str(Path(__file__).resolve().parent.parent / "conf"),
        config_name="config",
    )
    def _main(cfg: Any) -> float:
        rec = run_isolated(cfg) if cfg.isolate else run_in_process(cfg)
        q = rec.get("quality") or {}
        print(
            f"[bench] {rec['run_id']}: {rec['status']}, "
            f"quality {q.get('before')} -> {q.get('after')}",
            flush=True,
        )
        if rec["status"] != "success" and HydraConfig.get().mode == RunMode.RUN:
            sys.exit(1)  # a single run that failed says so; a sweep reports at its end
        return float(q.get("after") or 0.0)

    sigterm_cancels()
    try:
        _main()
    except Terminated:
        print("[bench] SIGTERM: the run in progress recorded `cancelled`; rerun to redo it")
        sys.exit(143)  # 128 + SIGTERM, as a shell reports a process ended by it
    from bench.sweep import SweepProgress

    if SweepProgress.any_failed:
        sys.exit(1)  # after the sweep's summary line: scripts can tell a sweep had failures


if __name__ == "__main__":
    main()
