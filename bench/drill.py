"""Kill-and-resume drill: `python -m bench.drill --kills N` (`make drill`).

Starts a named sweep (smoke by default) in a fresh results folder, kills its whole process
group with SIGKILL at N random moments (a new sweep each time, resuming the last), then lets a
final resume finish. It prints how many record files exist, how many are valid run records,
how many succeeded, and whether the grid is complete (every run has a valid record, whatever
its status); it exits non-zero unless every record is valid and the grid complete. A kill -9
cannot be caught, so this checks what atomic record writes, the per-run lock and resume
promise: no lost or corrupt result.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _start(sweep: str, results: Path, extra: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench.run", f"+sweep={sweep}", f"results_dir={results}"]
    cmd += ["progress=false", f"hydra.sweep.dir={results}/multirun", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "a") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _census(folder: Path) -> tuple[int, int, int, int]:
    """(record files, valid records, successes, leftover temp files) in a sweep folder."""
    from bench.record import read

    files = sorted(folder.glob("*.json"))
    recs = [r for r in (read(p) for p in files) if r is not None]
    tmps = len(list(folder.glob(".*.tmp")))
    return len(files), len(recs), sum(r.status == "success" for r in recs), tmps


def drill(
    kills: int, sweep: str, results: Path, extra: list[str], lo: float, hi: float, seed: int
) -> bool:
    rng = random.Random(seed)
    folder, log = results / sweep, results / "drill.log"
    results.mkdir(parents=True, exist_ok=True)
    print(f"[drill] {sweep}: {kills} kill -9 at random moments ({lo}-{hi} s), then a resume")
    print(f"[drill] results in {folder}, sweep output in {log}", flush=True)
    for i in range(kills):
        p = _start(sweep, results, extra, log)
        wait = rng.uniform(lo, hi)
        try:
            p.wait(timeout=wait)
            print(f"[drill] kill {i + 1}/{kills}: the sweep finished before {wait:.1f} s")
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the sweep, its run process, everything
            p.wait()
            n, valid, ok, tmps = _census(folder)
            print(f"[drill] kill {i + 1}/{kills} at {wait:.1f} s: {n} records, {valid} valid, "
                  f"{ok} success, {tmps} temp files", flush=True)  # fmt: skip
    start = log.stat().st_size if log.exists() else 0
    p = _start(sweep, results, extra, log)
    rc = p.wait()
    out = log.read_bytes()[start:].decode(errors="replace")  # a byte offset: tqdm bars
    grid = re.search(r"\[sweep\] \S+: (\d+) runs", out)
    size = int(grid.group(1)) if grid else -1
    n, valid, ok, tmps = _census(folder)
    complete = valid == size  # every run of the grid has its record (a failure is a result)
    print(f"[drill] final resume exited {rc}: {n} records, {valid} valid, {ok} success, "
          f"{valid - ok} other statuses, of a {size}-run grid; grid "
          f"{'complete' if complete else 'INCOMPLETE'}; {tmps} leftover temp files",
          flush=True)  # fmt: skip
    return complete and valid == n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=5, help="kill -9s before the final resume")
    p.add_argument("--sweep", default="smoke", help="named sweep (conf/sweep/)")
    p.add_argument("--results-dir", type=Path, default=None, help="default: a fresh temp dir")
    p.add_argument("--min-s", type=float, default=4.0, help="earliest kill after a start")
    p.add_argument("--max-s", type=float, default=25.0, help="latest kill after a start")
    p.add_argument("--seed", type=int, default=None, help="seed of the kill moments")
    p.add_argument("overrides", nargs="*", help="extra overrides, e.g. eval=off method=lora")
    a = p.parse_args(argv)
    results = a.results_dir or Path(tempfile.mkdtemp(prefix="bench-drill-"))
    seed = a.seed if a.seed is not None else int(time.time())
    print(f"[drill] seed {seed}", flush=True)
    ok = drill(a.kills, a.sweep, results, a.overrides, a.min_s, a.max_s, seed)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
