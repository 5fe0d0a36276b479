"""Sweep bookkeeping as a Hydra callback: k/N progress with elapsed time and ETA, and one summary
line at the end (done / skipped / failed, failures named); and the ordered sweeper, which
launches the runs longest-expected first so that parallel workers finish together.

Works across launchers (basic, joblib, submitit): every finished run appends one line to
`<results_dir>/<sweep>/.progress.jsonl`, and the callback reads that file, so it needs no shared
memory with the workers. Expected seconds per run come from bench/estimate.py.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.experimental.callback import Callback
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict

from bench import estimate
from bench.estimate import Cell, Plan

PROGRESS = ".progress.jsonl"
CONF = Path(__file__).resolve().parent.parent / "conf"
SWEEP_ID_ENV = "BENCH_SWEEP_ID"
GROUPS = ("model", "method", "task")  # the order of estimate.Cell


def progress_file(cfg: Any) -> Path:
    return Path(cfg["results_dir"]) / cfg["sweep_name"] / PROGRESS


def note_finished(cfg: Any, rec: dict[str, Any], skipped: bool) -> None:
    path = progress_file(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "run_id": rec["run_id"],
        "status": rec["status"],
        "skipped": skipped,
        "error": rec.get("error"),
        "t": time.time(),
        "sweep_id": os.environ.get(SWEEP_ID_ENV),  # two sweeps may share one folder's file
        "s": None if skipped else estimate.wall_seconds(rec),  # calibrates the ETA
    }
    with open(path, "a") as f:  # O_APPEND: small lines from several processes do not interleave
        f.write(json.dumps(line) + "\n")


def expand_jobs(config: Any, loader: Any = None) -> list[list[str]]:
    """The override list of every job, in the basic sweeper's order: Hydra's own expansion of
    a named sweep's `hydra.sweeper.params` followed by the command line (`method=a,b`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(overrides)
    return BasicSweeper.split_arguments(parsed, None)[0]


def job_count(config: Any) -> int:
    """Jobs of a basic-sweeper grid: the product of the choices of every sweep override."""
    return len(expand_jobs(config))


def job_cell(overrides: Sequence[str], defaults: Cell) -> Cell:
    """(model, method, task) of a job: its `model=..` style overrides, else the config's (an
    option's file name is its `name`, as in every conf/ group)."""
    got = dict(zip(GROUPS, defaults, strict=True))
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+") in got and value:
            got[key.lstrip("+")] = value
    return tuple(got[g] for g in GROUPS)  # type: ignore[return-value]


def _will_skip(config: Any, jobs: list[list[str]], cells: list[Cell], loader: Any) -> list[bool]:
    """Which jobs a successful record turns into a skip: bench.isolate's own test (check the
    composed job config, then its run id), composed only for jobs whose cell has a record."""
    folder = Path(config.results_dir) / config.sweep_name
    have = {estimate.cell_of_run_id(p.stem) for p in folder.glob("*.json")}
    if loader is None or not have:
        return [False] * len(jobs)
    from bench import config as checks
    from bench import results

    out = []
    for job, cell in zip(jobs, cells, strict=True):
        done = False
        if cell in have:
            try:
                cfg = loader.load_sweep_config(master_config=config, sweep_overrides=list(job))
                with open_dict(cfg):  # the hydra node is incomplete until launch (job.num)
                    del cfg["hydra"]
                c = checks.check(cfg)
                path = folder / f"{results.run_id(c.raw)}.json"
                done = not c.raw["force"] and results.is_done(path)
            except Exception:  # a job that does not compose fails when it runs, not here
                done = False
        out.append(done)
    return out


def plan(config: Any, jobs: list[list[str]], loader: Any = None) -> Plan:
    """Expected seconds of every job (bench/estimate.py); one uniform plan (Hydra's order, an
    ETA from finished runs only) and one warning line if anything goes wrong."""
    try:
        defaults: Cell = tuple(str(config[g].name) for g in GROUPS)  # type: ignore[assignment]
        cells = [job_cell(j, defaults) for j in jobs]
    except Exception as e:
        cells = [("?", "?", "?")] * len(jobs)
        return _failed(cells, e)
    try:
        done = _will_skip(config, jobs, cells, loader)
        return estimate.make_plan(cells, done, Path(config.results_dir), str(config.sweep_name))
    except Exception as e:
        return _failed(cells, e)


def _failed(cells: list[Cell], e: Exception) -> Plan:
    msg = f"{type(e).__name__}: {e}"
    print(f"[sweep] warning: no run-time estimates ({msg}); Hydra's order, plain eta", flush=True)
    return estimate.uniform_plan(cells, msg)


def workers(config: Any) -> int:
    """Runs at a time: hydra.launcher.n_jobs (joblib: -1 all cores, -2 all but one), else 1."""
    n = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
    try:
        n = int(n)
    except (TypeError, ValueError):
        return 1
    return max(1, n if n > 0 else (os.cpu_count() or 1) + 1 + n)


def _lines_since(path: Path, t0: float, sweep_id: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by kill -9; the run itself is redone on resume
        # a line without an id (a launcher that drops the environment) counts as this sweep's
        if d.get("t", 0) >= t0 and d.get("sweep_id") in (None, sweep_id):
            out.append(d)
    return out


def _fmt(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _loader() -> Any:
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    return gh.config_loader() if gh.is_initialized() else None


class SweepProgress(Callback):
    any_failed = False  # read by bench.run.main: a sweep with a failed cell exits non-zero

    def on_multirun_start(self, config: DictConfig, **kw: Any) -> None:
        self.t0 = time.time()
        # this sweep's runs (child processes inherit it) tag their progress lines with it
        self.sweep_id = os.environ[SWEEP_ID_ENV] = f"{os.getpid()}-{self.t0:.6f}"
        loader = _loader()
        self.jobs = expand_jobs(config, loader)
        self.n = len(self.jobs)
        self.workers = workers(config)
        self.path = progress_file(config)
        print(f"[sweep] {config.sweep_name}: {self.n} runs -> {self.path.parent}", flush=True)
        self.plan = plan(config, self.jobs, loader)  # the ordered sweeper reuses it

    def on_job_start(self, config: DictConfig, **kw: Any) -> None:
        t0 = getattr(self, "t0", None)
        if t0 is None:  # a copy of the callback that on_multirun_start never set up
            return
        done = _lines_since(self.path, t0, self.sweep_id)
        el = time.time() - t0
        eta = estimate.remaining_seconds(self.plan, done, self.workers)
        eta_s = _fmt(eta) if math.isfinite(eta) else "?"
        # "k/N done" rather than "run k+1": with parallel workers several runs start at once
        print(
            f"[sweep] {len(done)}/{self.n} done, starting one  elapsed {_fmt(el)}  eta {eta_s}",
            flush=True,
        )

    def on_multirun_end(self, config: DictConfig, **kw: Any) -> None:
        done = _lines_since(self.path, self.t0, self.sweep_id)
        ok = [d for d in done if d["status"] == "success" and not d["skipped"]]
        skipped = [d for d in done if d["skipped"]]
        bad = [d for d in done if d["status"] != "success"]
        missing = self.n - len(done)
        names = "; ".join(f"{d['run_id']} ({d['status']}: {d['error']})" for d in bad)
        print(
            f"[sweep] {config.sweep_name} finished in {_fmt(time.time() - self.t0)}: "
            f"{len(ok)} done, "
            f"{len(skipped)} skipped, {len(bad)} failed"
            + (f", {missing} did not report" if missing else "")
            + (f" -- failures: {names}" if bad else ""),
            flush=True,
        )
        SweepProgress.any_failed = bool(bad or missing)


class OrderedSweeper(BasicSweeper):
    """The basic sweeper (same grid, same `max_batch_size` batches), with the jobs launched
    longest-expected first, so parallel workers do not end with one long run alone. Jobs that
    a finished record turns into skips expect 0 s and go last; ties keep Hydra's order."""

    def __init__(self, max_batch_size: int | None, params: dict[str, str] | None = None) -> None:
        # BasicSweeper.__init__ calls super(BasicSweeper, self) by its module's global name,
        # and each Hydra plugin scan re-executes that module (a new BasicSweeper class): after
        # a rescan that call fails for a subclass of the old one. So: its attributes, here.
        Sweeper.__init__(self)
        self.overrides: Any = None
        self.batch_index = 0
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.hydra_context: Any = None
        self.config: Any = None
        self.launcher: Any = None

    def split_arguments(  # type: ignore[override]  # BasicSweeper.sweep calls it via self
        self, overrides: list[Any], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        p = self._plan(jobs)
        if p.error is None:  # else its one warning line is out already
            src = ", ".join(f"{n} {k}" for k, n in sorted(p.sources.items()))
            print(f"[sweep] runs longest-expected first (estimates: {src})", flush=True)
        jobs = [jobs[i] for i in p.order()]
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))

    def _plan(self, jobs: list[list[str]]) -> Plan:
        ctx = self.hydra_context
        for cb in getattr(ctx and ctx.callbacks, "callbacks", []):
            if isinstance(cb, SweepProgress) and getattr(cb, "jobs", None) == jobs:
                return cb.plan  # planned once, at on_multirun_start
        return plan(self.config, jobs, ctx and ctx.config_loader)


def sweep_configs(name: str, group: str) -> list[dict[str, Any]]:
    """The `group` (model, task) configs a named sweep's grid uses (its choices, else the
    default)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
        choices = str((cfg.hydra.sweeper.get("params") or {}).get(group) or cfg[group].name)
        out = []
        for m in choices.split(","):
            c = compose(config_name="config", overrides=[f"+sweep={name}", f"{group}={m.strip()}"])
            out.append(OmegaConf.to_container(c[group], resolve=True))
    return out  # type: ignore[return-value]


def sweep_folder(name: str) -> Path:
    """Where a named sweep's records go: <results_dir>/<sweep_name>."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"])
    return Path(str(cfg.results_dir)) / str(cfg.sweep_name)


def write_references(name: str, folder: Path | None = None) -> list[Path]:
    """Each task's reference measurements (bench.data.reference) into the sweep's results
    folder (or `folder`), `reference/<task>.json`; rewritten only when what was measured
    changes, so a rerun at a later commit leaves a committed file alone."""
    from bench import data
    from bench.results import environment, write_json_atomic

    written, folder = [], folder or sweep_folder(name)
    for task in sweep_configs(name, "task"):
        ref = data.reference_of(task)
        if ref is None:
            continue
        path = folder / "reference" / f"{task['name']}.json"
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}  # none yet, or unreadable: measured again
        if not isinstance(old, dict) or {k: v for k, v in old.items() if k != "env"} != ref:
            env = environment("cpu")
            ref["env"] = {k: env[k] for k in ("git_sha", "git_dirty", "packages", "python")}
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, ref)
        written.append(path)
    return written


def prepare(name: str) -> None:
    """Materialise (convert, or pretrain for ladder rungs) only the models of sweep `name`, and
    write its tasks' reference measurements."""
    from bench import models

    for cfg in sweep_configs(name, "model"):
        print(f"[sweep] {name}: model {cfg['name']} -> {models.model_dir(cfg)}", flush=True)
    for path in write_references(name):
        print(f"[sweep] {name}: reference -> {path}", flush=True)


def sweep_phases(name: str) -> tuple[list[Any], int, int | None]:
    """A named sweep's `phases` (multirun override lists, or "evaluate"; one plain multirun when
    it declares none), its parallel workers and its torch threads per run."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    phases = OmegaConf.to_container(cfg, resolve=False).get("phases")  # type: ignore[union-attr]
    jobs = int(OmegaConf.select(cfg, "hydra.launcher.n_jobs", default=1) or 1)
    return (list(phases) if phases else [[]]), max(jobs, 1), cfg.get("threads")


def run_phases(name: str, extra: list[str]) -> int:
    """`make sweep`: each phase in order, all of them even after a failed run (a failure is a
    result); the exit status is 1 when any phase reported a failure."""
    import subprocess
    import sys

    status = 0
    phases, jobs, threads = sweep_phases(name)
    for k, phase in enumerate(phases, 1):
        if phase == "evaluate":  # as many at a time, on as many threads, as the runs use
            par = ["--jobs", str(jobs), *(["--threads", str(threads)] if threads else [])]
            par += _eval_args(extra)
            cmd = [sys.executable, "-m", "bench.evaluate", "--sweep", name, *par]
        else:
            cmd = [sys.executable, "-m", "bench.run", "-m", f"+sweep={name}", *phase, *extra]
        print(f"[sweep] {name}: phase {k}/{len(phases)}: {' '.join(cmd[2:])}", flush=True)
        status |= subprocess.call(cmd) != 0
    return int(status)


def _eval_args(extra: list[str]) -> list[str]:
    """Command-line overrides a re-evaluation needs too (where results live, eval settings)."""
    keep = ("eval=", "eval.", "train.eval_batch_size=")
    out: list[str] = []
    for o in extra:
        if o.startswith("results_dir="):
            out += ["--results-dir", o.split("=", 1)[1]]
        elif o.startswith(keep):
            out += ["--override", o]
    return out


if __name__ == "__main__":  # `python -m bench.sweep prepare|run NAME [overrides]`
    import argparse
    import os
    import sys

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description="sweep helpers")
    ap.add_argument("action", choices=["prepare", "run"])
    ap.add_argument("sweep")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every phase (run)")
    a = ap.parse_args()
    if a.action == "prepare":
        prepare(a.sweep)
    else:
        sys.exit(run_phases(a.sweep, a.overrides))
