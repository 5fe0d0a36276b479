"""Before/after evaluation of one model state, the base evaluation's cache, and the record blocks
built from the two.

A state is measured by: test-set generation scored by the task metric, validation loss, and the
general-ability metrics of `eval` (forgetting NLL and probes, repetition, hallucination). The
base model ("before") depends only on model, task, eval settings, precision and how the method
loads the base (`Method.base_key`), so it is computed once per cell and cached beside the records.

Each record carries an evaluation version (`eval_version`): a hash of the evaluation settings and
of the evaluation code. `python -m bench.evaluate --sweep NAME` (bench/reevaluate.py) re-evaluates
records whose version is stale from their kept trained state (bench/state.py), without retraining.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench import measure
from bench.config import Checked
from bench.methods import Method, load_base
from bench.results import config_hash, read_record, write_json_atomic
from bench.train import Encoded, autocast_ctx, encode

# What evaluation outputs depend on besides the settings: the files under bench/ that compute them
# (validation loss and encoding in train.py) and, of the tasks in data/, only the registry and
# the modules of the task evaluated (its scorer): adding or changing another task leaves this
# task's records current.
EVAL_CODE = ("evaluate.py", "generate.py", "train.py", "precision.py", "metrics", "probes")
BENCH = Path(__file__).resolve().parent


def task_modules(task: str) -> list[Path]:
    """The data/ files a task's builder runs: its module and the bench.data modules it uses."""
    import sys
    import types

    from bench import data

    data.names()  # imports every task module
    todo, seen = [data._REGISTRY[task].__module__], set()
    while todo:
        name = todo.pop()
        if name in seen or not name.startswith("bench.data"):
            continue
        seen.add(name)
        if name == "bench.data":  # the registry: its attributes include every task module
            continue
        for v in vars(sys.modules[name]).values():
            dep = v.__name__ if isinstance(v, types.ModuleType) else getattr(v, "__module__", None)
            if isinstance(dep, str) and dep.startswith("bench.data"):
                todo.append(dep)
    return sorted(Path(sys.modules[n].__file__ or "") for n in seen | {"bench.data"})


@lru_cache(maxsize=16)
def code_hash(task: str) -> str:
    h = hashlib.sha256()
    files = [
        f
        for e in EVAL_CODE
        for f in ([BENCH / e] if (BENCH / e).is_file() else sorted((BENCH / e).rglob("*")))
    ]
    for f in [*files, *task_modules(task)]:
        if f.is_file() and f.suffix in (".py", ".yaml"):
            h.update(str(f.relative_to(BENCH)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def eval_version(c: Checked) -> str:
    """Hash of everything an evaluation's numbers depend on except the trained weights."""
    key = {
        "eval": c.raw["eval"],
        "eval_batch_size": c.train.eval_batch_size,
        "precision": c.raw["precision"],
        "task": c.raw["task"],
        "code": code_hash(c.raw["task"]["name"]),
    }
    return config_hash(key, 12)


def encoded(task: Any, tok: Any, split: str, seq_len: int) -> list[Encoded]:
    return [encode(e, tok, seq_len) for e in task.splits[split]]


PRED_CHARS = 200  # a prediction kept per example is cut here: records stay bounded


def _quality(model: Any, tok: Any, task: Any, c: Checked) -> dict[str, Any]:
    """Test-split generation scored by the task metric, and the reference answers' bits per byte,
    with per-example scores and predictions (for paired statistics and for reading)."""
    from bench.generate import generate_text
    from bench.metrics import answers

    test = task.splits["test"]
    dec = c.eval.decoding
    k = dec.num_samples if dec.do_sample else 1  # samples per example, scored one by one
    samples = generate_text(
        model,
        tok,
        [e.prompt for e in test for _ in range(k)],
        max_new_tokens=task.max_new_tokens,
        batch_size=c.train.eval_batch_size,
        precision=c.raw["precision"],
        device=c.device,
        stop_at_newline=True,
        decoding=dec,
        seed=c.eval.seed,
    )
    refs = [getattr(e, "references", None) or e.answer for e in test]  # multi-reference QA
    preds = samples[::k]  # the first sample is the one kept and shown

    def mean_score(fn: Any) -> list[float]:
        return [sum(float(fn(p, r)) for p in samples[i * k : (i + 1) * k]) / k
                for i, r in enumerate(refs)]  # fmt: skip

    scores = mean_score(task.score)
    nll = _answer_nll(model, tok, encoded(task, tok, "test", c.budget.seq_len), c)
    n_ans = [len(tok(" " + e.answer, add_special_tokens=False)["input_ids"]) for e in test]
    bits = [answers.answer_bits(x, k) for x, k in zip(nll, n_ans, strict=True)]
    nbytes = [len(e.answer.encode("utf-8")) for e in test]
    per: dict[str, Any] = {"score": scores, "bits": [round(b, 4) for b in bits], "bytes": nbytes}
    out: dict[str, Any] = {"score": sum(scores) / len(scores), "examples": preds[:5]}
    for name, fn in (task.info.get("extra_scores") or {}).items():
        per[name] = mean_score(fn)
        out[name] = sum(per[name]) / len(test)
    per["pred"] = [p[:PRED_CHARS] for p in preds]
    out["answer_bpb"], out["per_example"] = answers.bits_per_byte(bits, nbytes), per
    return out


def evaluate_state(
    model: Any, tok: Any, task: Any, val: Sequence[Encoded], c: Checked
) -> dict[str, Any]:
    """Everything measured on one state of the model, with wall seconds per part."""
    from bench.metrics.general import evaluate_general

    t0 = time.perf_counter()
    q = _quality(model, tok, task, c)
    t1 = time.perf_counter()
    vl = _val_loss(model, tok, val, c)
    t2 = time.perf_counter()
    # in the run's compute precision, as training and generation: under bf16 autocast frozen
    # weights are bf16 and trained ones fp32, which only autocast's matmuls combine
    with autocast_ctx(c.raw["precision"], c.device):
        general = evaluate_general(model, tok, c.raw["eval"]) if c.eval.enabled else None
        t3 = time.perf_counter()
        text = _text(model, tok, task, c)
    t4 = time.perf_counter()
    parts: dict[str, Any] = {"quality_s": t1 - t0, "val_loss_s": t2 - t1, "general_s": t3 - t2}
    if general:
        parts["general"] = general.get("timing")
    if text is not None:
        parts["text_s"] = t4 - t3
    end = t4 if text is not None else t3  # the parts add up to the total
    return {"quality": q, "val_loss": vl, "general": general, "text": text, "seconds": end - t0,
            "parts": parts}  # fmt: skip


def _text(model: Any, tok: Any, task: Any, c: Checked) -> dict[str, Any] | None:
    """Per-character figures on the task's held-out text, for tasks that define it (issue 17:
    tokenizers compared on one axis)."""
    spec = task.info.get("text_eval")
    if not spec:
        return None
    from bench.metrics.per_char import evaluate_text

    return evaluate_text(model, tok, spec, batch_size=c.train.eval_batch_size)


def before_key(c: Checked, method: Method) -> str:
    """What the base model's measurements depend on - not the method otherwise."""
    cfg = c.raw
    key = {
        "model": c.model,  # with a vocabulary expansion: the expanded model is the base
        "task": cfg["task"],
        "eval": cfg["eval"],
        "precision": cfg["precision"],
        "quant": method.base_key(cfg["method"]),
        "eval_batch_size": c.train.eval_batch_size,
        "seq_len": c.budget.seq_len,
        "code": code_hash(cfg["task"]["name"]),
    }
    return config_hash(key, 16)


def before(
    c: Checked, method: Method, task: Any, cache: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The base model's evaluation (from the cache, or measured now and cached) and the record's
    timing block that says which it was. Measured in a child process when runs are isolated, so
    no run's training memory holds what the base evaluation left behind; a lock per key makes
    parallel runs of one cell wait for one measurement instead of repeating it."""
    from filelock import FileLock

    key = before_key(c, method)
    path = cache / f"before-{key}.json"
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        base = read_record(path)
        cached = base is not None
        if base is None:
            if c.raw["isolate"]:
                _in_child(_measure_base, c.raw, str(path))
            else:
                _measure_base(c.raw, str(path))
            base = read_record(path)
            if base is None:
                raise RuntimeError(f"the base evaluation wrote no readable {path}")
    timing = {
        "before_eval_s": base["seconds"],
        "before_cached": cached,
        "before_key": key,  # runs with one key share one base evaluation
        "before_parts": base.get("parts"),
    }
    return base, timing


def _measure_base(raw: dict[str, Any], path: str) -> None:
    from bench import config, data

    c = config.check(raw)
    task = data.build(raw["task"])
    if raw["threads"]:
        import torch

        torch.set_num_threads(raw["threads"])
    model, tok = load_base(
        c.model, raw["method"], device=c.device, precision=raw["precision"], frozen=True
    )
    val = encoded(task, tok, "validation", c.budget.seq_len)
    write_json_atomic(Path(path), evaluate_state(model, tok, task, val, c))
    del model
    measure.release_memory()


def _in_child(fn: Any, *args: Any) -> None:
    """Run `fn(*args)` in a fresh spawned process; raise if it does not exit cleanly."""
    import multiprocessing as mp

    proc = mp.get_context("spawn").Process(target=fn, args=args, name=fn.__name__)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{fn.__name__} process exited with code {proc.exitcode}")


def quality_block(b: Mapping[str, Any], a: Mapping[str, Any], task: Any) -> dict[str, Any]:
    bq, aq = b["quality"], a["quality"]
    return {
        "metric": task.metric,
        "before": bq["score"],
        "after": aq["score"],
        "val_loss_before": b["val_loss"],
        "val_loss_after": a["val_loss"],
        "n_test": len(task.splits["test"]),
        "extra": {
            k: {"before": bq.get(k), "after": aq[k]} for k in (task.info.get("extra_scores") or {})
        },
        "examples_after": aq["examples"],
        "answer_bpb_before": bq.get("answer_bpb"),
        "answer_bpb_after": aq["answer_bpb"],
        "per_example": {"before": bq.get("per_example"), "after": aq["per_example"]},
    }


def general_blocks(b: Mapping[str, Any], a: Mapping[str, Any]) -> dict[str, Any]:
    """The record's forgetting / repetition / hallucination blocks (empty without general eval)."""
    bg, ag = b.get("general"), a.get("general")
    if not (bg and ag):
        return {}
    from bench.metrics.general import forgetting_summary

    return {
        "forgetting": forgetting_summary(bg, ag),
        "repetition": {"before": bg.get("repetition"), "after": ag.get("repetition")},
        "hallucination": {"before": bg.get("hallucination"), "after": ag.get("hallucination")},
    }


def inference(model: Any, tok: Any, c: Checked) -> tuple[dict[str, Any] | None, float | None]:
    """Inference cost of the trained model (None when `eval.inference` is off)."""
    if not c.eval.inference.enabled:
        return None, None
    from bench.metrics.general import measure_inference

    t0 = time.perf_counter()
    with autocast_ctx(c.raw["precision"], c.device):
        out = measure_inference(model, tok, c.eval)
    return out, time.perf_counter() - t0


def evaluate_into(rec: Any, c: Checked, task: Any, model: Any, tok: Any, base: Any) -> None:
    """Measure the trained model into the record: validation loss always; with eval_scope=full
    also quality, the general blocks and inference cost. Used by a run and by re-evaluation."""
    from bench import record

    val = encoded(task, tok, "validation", c.budget.seq_len)
    if c.raw["eval_scope"] == "val":  # an lr grid point: only what the choice between points needs
        t0 = time.perf_counter()
        vl = _val_loss(model, tok, val, c)
        rec.timing.after_eval_s, rec.timing.after_parts = time.perf_counter() - t0, None
        after: dict[str, Any] = {"val_loss": vl}
        rec.quality = rec.forgetting = rec.repetition = rec.hallucination = rec.inference = None
        rec.text = None
        rec.timing.inference_s = None
    else:
        after = evaluate_state(model, tok, task, val, c)
        rec.timing.after_eval_s, rec.timing.after_parts = after["seconds"], after["parts"]
        rec.quality = record.Quality(**quality_block(base, after, task))
        for name, block in general_blocks(base, after).items():
            setattr(rec, name, block)
        if after.get("text") is not None:
            rec.text = {"before": base.get("text"), "after": after["text"]}
        rec.inference, rec.timing.inference_s = inference(model, tok, c)
    rec.validation = record.Validation(
        loss_before=base["val_loss"], loss_after=after["val_loss"], n=len(val)
    )
    rec.evaluated, rec.eval_version = c.raw["eval_scope"], eval_version(c)
    from bench.flags import learning_flags

    rec.flags = learning_flags(rec.train.loss_curve, base["val_loss"], after["val_loss"])


def _answer_nll(model: Any, tok: Any, data: Sequence[Encoded], c: Checked) -> list[list[float]]:
    from bench.metrics.answers import answer_nll

    return answer_nll(
        model,
        data,
        batch_size=c.train.eval_batch_size,
        pad_id=tok.pad_token_id,
        precision=c.raw["precision"],
        device=c.device,
    )


def _val_loss(model: Any, tok: Any, val: Sequence[Encoded], c: Checked) -> float:
    from bench.metrics.answers import mean_loss

    return mean_loss(_answer_nll(model, tok, val, c))


if __name__ == "__main__":  # `python -m bench.evaluate --sweep NAME`
    from bench.reevaluate import main

    main()
