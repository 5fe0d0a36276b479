"""Each run in its own process: memory is measured against a clean process (RSS does not shrink
between runs of one process), and a crash (segfault, OOM kill) cannot take the sweep down: the
parent then writes the record with its status and error."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any


def _child(cfg: dict[str, Any]) -> None:
    from bench.run import run_one, sigterm_cancels

    sigterm_cancels()
    run_one(cfg)


def _died(c: Any, rid: str, exitcode: int | None) -> dict[str, Any]:
    """The record of a run process that ended before writing its own."""
    from bench import results
    from bench.record import new_record

    rec = new_record(c.raw, rid, results.run_label(c.raw), results.now())
    killed = exitcode is not None and exitcode < 0
    rec.status = "oom" if exitcode == -9 else "failed"
    rec.error = (
        f"run process killed by signal {-exitcode}"
        if killed
        else f"run process exited with code {exitcode}"
    )
    rec.finished_at = results.now()
    return rec.dump()


def run_lock(record_path: Path) -> Any:
    """The run's lock, `.<run_id>.lock` beside its record: two sweeps on one results folder
    never train the same run at once; the later one waits, then finds the record and skips.
    An flock: the OS releases it when its holder dies, so a kill -9 leaves no stale lock."""
    from filelock import FileLock

    record_path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(record_path.parent / f".{record_path.stem}.lock")


def run_in_process(cfg_in: Any) -> dict[str, Any]:
    """`isolate=false`: run_one in this process, under the same per-run lock."""
    from bench import config, results
    from bench.run import run_one

    c = config.check(cfg_in)
    path = Path(c.raw["results_dir"]) / c.raw["sweep_name"] / f"{results.run_id(c.raw)}.json"
    with run_lock(path):
        return run_one(c.raw)


def run_isolated(cfg_in: Any) -> dict[str, Any]:
    from bench import config, results

    c = config.check(cfg_in)  # here, once, so parent and child agree on the run id
    rid = results.run_id(c.raw)
    path = Path(c.raw["results_dir"]) / c.raw["sweep_name"] / f"{rid}.json"
    with run_lock(path):  # is_done is asked only under the lock: a finished run is never redone
        return _isolated(c, rid, path)


def _isolated(c: Any, rid: str, path: Path) -> dict[str, Any]:
    from bench import results
    from bench.run import run_one
    from bench.sweep import note_finished

    if not c.raw["force"] and results.is_done(path):
        return run_one(c.raw)  # cheap: notes the skip and returns the record
    t_start = time.time()
    if mp.get_start_method(allow_none=True) not in (None, *mp.get_all_start_methods()):
        # Inside a joblib (loky) worker the default method is "loky"; a spawned child would
        # inherit that name and fail to start, so reset this worker's default first.
        mp.set_start_method("spawn", force=True)
    proc = mp.get_context("spawn").Process(target=_child, args=(c.raw,), name=rid)
    proc.start()
    try:
        proc.join()
    except KeyboardInterrupt as e:
        from bench.run import Terminated

        if isinstance(e, Terminated) and proc.is_alive():
            proc.terminate()  # a SIGTERM sent to this process alone: the child records it too
        proc.join(timeout=30)  # the child got the same SIGINT and records `cancelled`
        raise
    rec = results.read_record(path)
    if rec is not None and path.stat().st_mtime >= t_start - 1:
        return rec
    rec = _died(c, rid, proc.exitcode)
    results.write_json_atomic(path, rec)
    note_finished(c.raw, rec, skipped=False)
    print(f"[bench] {rid}: {rec['status']}: {rec['error']}", flush=True)
    return rec
