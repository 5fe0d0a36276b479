"""Train once, evaluate again: bring finished runs up to the current evaluation from their kept
trained state (bench/state.py), without retraining.

`python -m bench.evaluate --sweep NAME [--override eval=tiny ...] [--dry-run]`:
- a fully evaluated record whose `eval_version` is stale is evaluated again;
- of an lr grid's points (records that differ only in `train.lr` / `lr_index`, trained with
  eval_scope=val), only the one with the lowest validation loss is fully evaluated;
- every rewrite is atomic; a record without a kept state is reported and left as it is.
A sweep that finds a finished record (bench/run.py) calls `bring_up_to_date` the same way.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.config import CONF, Checked


def lr_group(cfg: dict[str, Any]) -> str:
    """Runs that differ only in their learning rate (one lr grid, one seed)."""
    from bench.results import config_hash, training_view

    view = training_view(cfg)
    view.pop("lr_index", None)
    view["train"] = {k: v for k, v in view["train"].items() if k != "lr"}
    return config_hash(view, 16)


def chosen_point(cfg: dict[str, Any]) -> int:
    """The lr_index of the grid point with the lowest validation loss among this config's
    finished seed-0 runs (the same settings but the learning rate) in its results folder."""
    from bench.methods import ConfigError
    from bench.record import read

    folder = Path(cfg["results_dir"]) / cfg["sweep_name"]
    key = lr_group({**cfg, "seed": 0})
    points = []
    for p in sorted(folder.glob("*.json")):
        r = read(p)
        if r is not None and r.status == "success" and r.seed == 0 and lr_group(r.config) == key:
            points.append(r.dump())
    if not points:
        raise ConfigError(
            f"lr_index=chosen: no finished seed-0 grid point of this setting in {folder}; "
            "run the grid first (the sweep's first phase)"
        )
    best = min(points, key=_val_after)
    idx = best["config"].get("lr_index")
    if idx is None or _val_after(best) == float("inf"):
        raise ConfigError(f"lr_index=chosen: {best['run_id']} has no lr_index or validation loss")
    return int(idx)


def needs(rec: dict[str, Any], c: Checked, scope: str) -> str | None:
    """The evaluation ('all' or 'val') a finished record needs to reach `scope` under config `c`,
    or None when it is up to date. Records older than eval versions count as stale."""
    from bench.evaluate import eval_version

    have = rec.get("evaluated") or ("all" if rec.get("quality") else "val")
    want = "all" if "all" in (have, scope) else "val"
    if want != have or rec.get("eval_version") != eval_version(c):
        return want
    return None


def _state_file(path: Path, rec: dict[str, Any]) -> Path | None:
    """The kept state: `state.path` relative to the record's folder (a copy made by `--into`
    points into its source sweep), else where the run keeps it."""
    from bench.state import state_path

    st = rec.get("state") or {}
    f = path.parent / st["path"] if st.get("path") else state_path(path.parent, rec["run_id"])
    return f if st.get("kept") and f.exists() else None


def reevaluate_one(path: Path, rec: dict[str, Any], c: Checked) -> dict[str, Any]:
    """Rebuild the run's model, load its kept state, evaluate at `c.raw['eval_scope']`, rewrite."""
    import torch

    from bench import data, evaluate, measure, methods, record, results, state
    from bench.run import task_block

    f = _state_file(path, rec)
    if f is None:
        raise FileNotFoundError(f"{rec['run_id']}: no kept trained state (state.keep was off)")
    r = record.Record.model_validate(rec)
    method = methods.get(c.raw["method"]["name"])
    task = data.build(c.raw["task"])
    # the task as evaluated now: a changed test split must not keep the old fingerprint
    r.task_info = record.TaskInfo(**task_block(task))
    base, timing = evaluate.before(c, method, task, path.parent / ".cache")
    r.timing = record.Timing(**timing, reevaluated_at=results.now())
    torch.manual_seed(c.raw["seed"])  # parts a state does not hold are built as in the run
    model, tok, _ = methods.load_and_apply(
        c.model, c.raw["method"], device=c.device, precision=c.raw["precision"]
    )
    state.restore(model, f)
    evaluate.evaluate_into(r, c, task, model, tok, base)
    r.config, r.schema_version = c.raw, record.SCHEMA_VERSION
    if c.raw["sweep_name"] != rec["config"].get("sweep_name"):  # a copy made by `--into`
        r.label = results.run_label(c.raw)
    out = r.dump()
    results.write_json_atomic(path, out)
    del model
    measure.release_memory()
    return out


def bring_up_to_date(path: Path, c: Checked) -> dict[str, Any]:
    """A run whose finished record exists: re-evaluate it if its evaluation is stale (or only
    validation when this config asks for a full one), else return it unchanged."""
    from bench.results import read_record

    rec = read_record(path) or {}
    need = needs(rec, c, c.raw["eval_scope"])
    if need is None:
        print(f"[bench] skip {rec['run_id']}: finished record is up to date", flush=True)
        return rec
    if _state_file(path, rec) is None:
        print(f"[bench] skip {rec['run_id']}: evaluation is stale but no trained state was kept; "
              "force=true retrains", flush=True)  # fmt: skip
        return rec
    print(f"[bench] {rec['run_id']}: re-evaluating ({need}) from the kept state", flush=True)
    return reevaluate_one(path, rec, _with_scope(c, need))


def _with_scope(c: Checked, scope: str) -> Checked:
    import dataclasses

    return dataclasses.replace(c, raw={**c.raw, "eval_scope": scope})


def composed_now(sweep: str, overrides: list[str]) -> dict[str, Any]:
    """The sweep's config as its YAML (plus `overrides`) says today."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    named = [f"+sweep={sweep}"] if (CONF / "sweep" / f"{sweep}.yaml").exists() else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        now = OmegaConf.to_container(compose("config", [*named, *overrides]), resolve=True)
    assert isinstance(now, dict)
    now.pop("hydra", None)
    return now


def current_config(
    rec_cfg: dict[str, Any], now: dict[str, Any], sweep: str, results_dir: str
) -> dict[str, Any]:
    """The record's training settings with the evaluation settings its sweep has now (`now`,
    from `composed_now`)."""
    from bench.results import EVAL_KEYS, EVAL_TRAIN_KEYS

    cfg = {**rec_cfg, **{k: now[k] for k in EVAL_KEYS}}
    cfg["train"] = {**rec_cfg["train"], **{k: now["train"][k] for k in EVAL_TRAIN_KEYS}}
    for k, v in now.items():  # keys newer than the record take today's defaults
        if k != "train_version":  # what trained the record, not what would train it today
            cfg.setdefault(k, v)
    cfg.pop("hydra", None)
    return {**cfg, "results_dir": results_dir, "sweep_name": sweep, "progress": False}


def copy_into(path: Path, rec: dict[str, Any], into: str, results_dir: str, c: Checked) -> tuple:
    """`--into`: where a fully evaluated record's copy under today's settings `c` goes (its run id
    gets the decoding's name, so several decodings of one run share a folder), and the copy as
    it stands: the existing one, else the source with its kept state pointed to."""
    import dataclasses
    import os

    from bench.results import read_record

    dec = c.eval.decoding.name
    rid = f"{rec['run_id']}--{dec}"
    dst = Path(results_dir) / into / f"{rid}.json"
    raw = {**c.raw, "sweep_name": into}
    have = read_record(dst)
    if have is None:
        have = {**rec, "run_id": rid, "eval_version": None}
        st = dict(rec.get("state") or {})
        if st.get("path"):
            st["path"] = os.path.relpath(path.parent / st["path"], dst.parent)
        have["state"] = st
    return dst, have, dataclasses.replace(c, raw=raw)


def plan(
    folder: Path, sweep: str, results_dir: str, overrides: list[str], into: str | None = None
) -> list[tuple]:
    """(path, record, checked config, scope) of every record that needs evaluating; with
    `into`, of the copies in that folder of the records fully evaluated here."""
    from bench import config
    from bench.record import read

    now = composed_now(sweep, overrides)  # once: the same for every record
    rows = []
    for p in sorted(folder.glob("*.json")):
        r = read(p)
        if r is None or r.status != "success":
            continue
        rec = r.dump()
        c = config.check(current_config(rec["config"], now, sweep, results_dir))
        if into is None:
            rows.append((p, rec, c))
        elif rec.get("evaluated") == "all":  # copies: only the points chosen on validation
            dst, copy, c2 = copy_into(p, rec, into, results_dir, c)
            if needs(copy, c2, "all"):
                rows.append((dst, copy, _with_scope(c2, "all")))
    if into is not None:
        (Path(results_dir) / into).mkdir(parents=True, exist_ok=True)
        return [(p, rec, c, "all") for p, rec, c in rows]
    groups: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        groups[lr_group(row[2].raw)].append(row)
    out = []
    for members in groups.values():
        chosen = min(members, key=lambda row: _val_after(row[1]))
        for p, rec, c in members:
            need = needs(rec, c, "all" if p == chosen[0] else "val")
            if need:
                out.append((p, rec, _with_scope(c, need), need))
    return out


def _val_after(rec: dict[str, Any]) -> float:
    v = (rec.get("validation") or {}).get("loss_after")
    if v is None:
        v = (rec.get("quality") or {}).get("val_loss_after")
    return float("inf") if v is None or v != v else float(v)  # NaN never wins


def main(argv: list[str] | None = None) -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description="re-evaluate a sweep's finished runs")
    ap.add_argument("--sweep", required=True)
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--override", action="append", default=[], help="Hydra override, repeatable")
    ap.add_argument("--dry-run", action="store_true", help="list what would be evaluated")
    ap.add_argument("--into", default=None, help="write re-evaluated copies of the fully "
                    "evaluated records to this sweep folder (e.g. other decodings), run id + "
                    "'--<eval.decoding.name>'; the source records stay as they are")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=1, help="records evaluated in parallel processes")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per evaluation")
    a = ap.parse_args(argv)
    folder = Path(a.results_dir) / a.sweep
    if not folder.is_dir():
        sys.exit(f"--sweep: no results folder {folder}")
    todo = plan(folder, a.sweep, a.results_dir, a.override, a.into)
    print(f"[evaluate] {a.sweep}: {len(todo)} record(s) to evaluate", flush=True)
    if a.dry_run:
        for p, _, _, need in todo:
            print(f"  {need:4s} {p.name}")
        return
    failed = _run(todo, max(1, a.jobs), a.threads)
    sys.exit(1 if failed else 0)


def _one(path: str, rec: dict[str, Any], raw: dict[str, Any], threads: int | None) -> None:
    """One re-evaluation in a worker process (its own memory, its own thread count)."""
    import torch

    from bench import config

    if threads:
        torch.set_num_threads(threads)
    reevaluate_one(Path(path), rec, config.check(raw))


def _run(todo: list[tuple], jobs: int, threads: int | None) -> int:
    """Evaluate every planned record, `jobs` at a time, each in a fresh process; one failure
    never stops the others. Returns the number that failed."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    t0, failed, done = time.time(), 0, 0

    def report(p: Path, need: str, err: BaseException | None) -> None:
        nonlocal failed, done
        done += 1
        failed += err is not None
        status = "ok" if err is None else f"{type(err).__name__}: {err}"
        el = time.time() - t0
        eta = el / done * (len(todo) - done)  # completions already reflect `jobs`
        print(f"[evaluate] {done}/{len(todo)} {need} {p.stem}: {status}  elapsed {el:.0f}s  "
              f"eta {eta:.0f}s", flush=True)  # fmt: skip

    if jobs == 1:  # in this process: no start-up cost per record
        for p, rec, c, need in todo:
            try:
                _one(str(p), rec, c.raw, threads)
                report(p, need, None)
            except Exception as e:  # a failed record is reported, the others go on
                report(p, need, e)
    else:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures = {pool.submit(_one, str(p), rec, c.raw, threads): (p, need)
                       for p, rec, c, need in todo}  # fmt: skip
            for fut in as_completed(futures):
                err = fut.exception()
                report(*futures[fut], err)
    print(f"[evaluate] done in {time.time() - t0:.0f}s: {len(todo) - failed} evaluated, "
          f"{failed} failed", flush=True)  # fmt: skip
    return failed
