"""Named sweeps through the real Hydra CLI: job counts, resume, failure isolation, kill -9."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from bench.sweep import PROGRESS
from tests.conftest import CONF

ROOT = CONF.parent
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


def grid_size(name: str) -> int:
    params = yaml.safe_load((CONF / "sweep" / f"{name}.yaml").read_text())["hydra"]["sweeper"][
        "params"
    ]
    return math.prod(len(str(v).split(",")) for v in params.values())


def test_named_sweeps_exist() -> None:
    assert {"smoke", "default", "paper"} <= set(SWEEPS)


@pytest.mark.parametrize("name", SWEEPS)
def test_job_count_equals_grid(name: str) -> None:
    """Hydra's own parser expands the sweep to exactly the product of its grid."""
    from hydra import compose, initialize_config_dir

    from bench.sweep import job_count

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    ov = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    expanded = math.prod(len(list(o.sweep_string_iterator())) for o in ov if o.is_sweep_override())
    assert expanded == grid_size(name) == job_count(cfg)


def sweep(
    tmp: Path, *extra: str, env: dict[str, str] | None = None, **kw: object
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "bench.run",
        "+sweep=smoke",
        "eval=off",
        "logger=none",
        f"results_dir={tmp}",
        "progress=false",
        f"hydra.sweep.dir={tmp}/multirun",
        *extra,
    ]
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def records(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def test_resume_and_failure_isolation(tmp_path: Path) -> None:
    methods = "method=lora,full,prompt_tuning"
    p = sweep(tmp_path, methods, env={"BENCH_METHOD_PLUGINS": "tests.fault_methods"})
    out, _ = p.communicate(timeout=600)
    recs = records(tmp_path / "smoke")
    assert len(recs) == 3, out
    status = {r["method"]: r["status"] for r in recs.values()}
    assert status == {"lora": "success", "full": "failed", "prompt_tuning": "success"}, out
    assert "injected failure" in recs[next(k for k in recs if k.startswith("full"))]["error"]
    assert "2 done, 0 skipped, 1 failed" in out and "full__tiny-random" in out
    assert p.returncode == 1, out  # a sweep with a failed cell exits non-zero, after its summary
    mtimes = {k: (tmp_path / "smoke" / f"{k}.json").stat().st_mtime for k in recs}

    p = sweep(tmp_path, methods)  # rerun: successes skipped, the failed cell runs again
    out, _ = p.communicate(timeout=600)
    assert "1 done, 2 skipped, 0 failed" in out, out
    assert p.returncode == 0, out
    recs2 = records(tmp_path / "smoke")
    assert all(r["status"] == "success" for r in recs2.values())
    for k, r in recs2.items():
        same = (tmp_path / "smoke" / f"{k}.json").stat().st_mtime == mtimes[k]
        assert same == (r["method"] != "full")  # finished records were not rewritten


def test_kill_leaves_no_partial_record(tmp_path: Path) -> None:
    p = sweep(tmp_path, "method=lora,prompt_tuning", "budget.steps=400")
    folder = tmp_path / "smoke"
    deadline = time.time() + 300
    while time.time() < deadline and not (folder / ".cache").exists():  # first run is training
        time.sleep(0.5)
    time.sleep(2.0)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    for f in folder.glob("*.json"):
        assert json.loads(f.read_text())["status"] in ("success", "failed", "cancelled")
    p = sweep(tmp_path, "method=lora,prompt_tuning", "budget.steps=20")
    out, _ = p.communicate(timeout=600)
    assert {r["status"] for r in records(folder).values()} == {"success"}, out
    assert len(records(folder)) == 2


def test_joblib_launcher_isolated_runs(tmp_path: Path) -> None:
    """Two joblib (loky) workers, each spawning its isolated run process (as `default` does)."""
    p = sweep(
        tmp_path, "method=lora,prompt_tuning", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
    )
    out, _ = p.communicate(timeout=600)
    recs = records(tmp_path / "smoke")
    assert sorted(r["method"] for r in recs.values()) == ["lora", "prompt_tuning"], out
    assert all(r["status"] == "success" for r in recs.values()), out
    assert "2 done, 0 skipped, 0 failed" in out


@pytest.mark.parametrize(("task", "batch"), [("arithmetic", 32), ("squad_shifts", 4)])
def test_default_budget_fixes_tokens_per_step(task: str, batch: int) -> None:
    """budget=default: batch_size = tokens_per_step // seq_len, so steps carry equal tokens."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["budget=default", f"task={task}"])
    assert cfg.budget.batch_size == batch
    assert cfg.budget.batch_size * cfg.budget.seq_len == cfg.budget.tokens_per_step == 1024


def test_submitit_local_launcher(tmp_path: Path) -> None:
    """The Slurm launcher's local twin: same plugin, jobs as submitit subprocesses."""
    p = sweep(
        tmp_path,
        "method=lora,ptuning_v2",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
    )
    out, _ = p.communicate(timeout=600)
    recs = records(tmp_path / "smoke")
    assert sorted(r["method"] for r in recs.values()) == ["lora", "ptuning_v2"], out
    assert all(r["status"] == "success" for r in recs.values()), out
    assert list((tmp_path / "multirun").rglob("*_submitted.pkl"))  # submitit really ran them


# --- run order and ETA (bench/estimate.py, bench.sweep.OrderedSweeper) ---


def rec(model: str, method: str, seconds: int, status: str = "success", **kw: object) -> dict:
    """A hand-made record: only the fields the estimates read."""
    return {
        "status": status,
        "model": model,
        "method": method,
        "task": "t",
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": f"2026-01-01T{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:"
        f"{seconds % 60:02d}+00:00",
        **kw,
    }


def write(folder: Path, name: str, r: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(r))


@pytest.mark.unit
def test_wall_seconds() -> None:
    from bench.estimate import wall_seconds

    parts = {"train": {"seconds": 30.0}, "timing": {"before_eval_s": 15, "after_eval_s": 4.5}}
    assert wall_seconds(rec("m", "lora", 60) | parts) == 60.0  # wall time covers the parts
    assert wall_seconds(rec("m", "lora", 0) | parts) == 49.5  # whole seconds: never below them
    assert wall_seconds({"train": {"seconds": 2.0}}) == 2.0
    assert wall_seconds({"started_at": "garbage", "finished_at": None}) is None


@pytest.mark.unit
def test_record_cell_shapes() -> None:
    from bench.estimate import cell_of_run_id, record_cell

    assert record_cell({"model": "m", "method": "lora", "task": "t"}) == ("m", "lora", "t")
    nested = {"model": {"name": "m"}, "method": {"name": "lora"}, "config": {"task": {"name": "t"}}}
    assert record_cell(nested) == ("m", "lora", "t")
    assert record_cell({"model": "m"}) is None
    assert cell_of_run_id("lora__smollm2-135m__arithmetic__s0__abc") == (
        "smollm2-135m",
        "lora",
        "arithmetic",
    )
    assert cell_of_run_id("odd") == ("", "odd", "")


@pytest.mark.unit
def test_estimates_from_records(tmp_path: Path) -> None:
    """This sweep's records, else other sweeps', else known cells scaled by size; failed
    records never count."""
    from bench.estimate import SIZE_EXP, Estimate, estimates

    size = {"model_info": {"total_params": 1e6}}
    write(tmp_path / "sw", "a", rec("m1", "lora", 100, **size))
    write(tmp_path / "sw", "b", rec("m1", "lora", 120, **size))
    write(tmp_path / "sw", "c", rec("m1", "full", 999, status="failed"))
    write(tmp_path / "old", "a", rec("m1", "lora", 500))  # this sweep's own records win
    write(tmp_path / "old", "b", rec("m1", "full", 300))
    write(tmp_path / "old", "c", rec("m2", "full", 1000, model_info={"total_params": 8e6}))
    write(tmp_path / ".hidden", "x", rec("m1", "prefix", 7))  # not a sweep folder
    cells = [("m1", "lora", "t"), ("m1", "full", "t"), ("m2", "lora", "t"), ("m3", "prefix", "t")]
    est = estimates(cells, tmp_path, "sw", conf_dir=tmp_path)
    assert est[("m1", "lora", "t")] == Estimate(110.0, "sweep")
    assert est[("m1", "full", "t")] == Estimate(300.0, "history")
    # no record: the same method on the other model, scaled by (8e6 / 1e6) ** SIZE_EXP
    assert est[("m2", "lora", "t")].source == "scaled"
    assert est[("m2", "lora", "t")].seconds == pytest.approx(110 * 8**SIZE_EXP)
    # no record of the method, a model of unknown size: the mean of all known cells, unscaled
    assert est[("m3", "prefix", "t")] == Estimate(pytest.approx((110 + 300 + 1000) / 3), "scaled")


@pytest.mark.unit
def test_estimates_prior_without_records(tmp_path: Path) -> None:
    from bench.estimate import SIZE_EXP, conf_params, estimates

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "small.yaml").write_text("hidden_size: 64\nnum_layers: 2\n")
    assert conf_params("small", tmp_path) == pytest.approx(2 * 12 * 64 * 64)
    est = estimates([("small", "lora", "t"), ("nope", "lora", "t")], tmp_path, "sw", tmp_path)
    assert est[("small", "lora", "t")].seconds == pytest.approx((2 * 12 * 64 * 64) ** SIZE_EXP)
    assert est[("nope", "lora", "t")].seconds == 1.0
    assert {e.source for e in est.values()} == {"prior"}
    real = conf_params("smollm2-135m")  # the repo's conf: 30 layers x 576 + 49152 vocab
    assert real is not None and 1.0e8 < real < 1.7e8


def toy_plan(seconds: dict[str, float], done: set[int] | None = None, n: int = 1):
    """A Plan over methods `seconds` (model m, task t), each repeated n times."""
    from bench.estimate import Plan, Planned

    jobs = [Planned(("m", k, "t"), s) for k, s in seconds.items() for _ in range(n)]
    jobs = [Planned(j.cell, 0.0, True) if i in (done or ()) else j for i, j in enumerate(jobs)]
    return Plan(jobs, calibrated=True)


@pytest.mark.unit
def test_plan_order_longest_first_ties_in_order() -> None:
    p = toy_plan({"a": 5, "b": 50, "c": 5, "d": 0, "e": 50}, done={3})
    assert p.order() == [1, 4, 0, 2, 3]
    assert p.order() == toy_plan({"a": 5, "b": 50, "c": 5, "d": 0, "e": 50}, done={3}).order()


@pytest.mark.unit
def test_ordered_sweeper_orders_and_batches(capsys: pytest.CaptureFixture[str]) -> None:
    """Longest first, then `max_batch_size` chunks of that order; deterministic."""
    from types import SimpleNamespace

    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from bench.sweep import OrderedSweeper, SweepProgress

    parsed = OverridesParser.create().parse_overrides(["method=a,b,c", "seed=0,1", "eval=off"])
    jobs = BasicSweeper.split_arguments(parsed, None)[0]
    cb = SweepProgress.__new__(SweepProgress)  # as after on_multirun_start, without Hydra
    cb.jobs, cb.plan = jobs, toy_plan({"a": 1, "b": 3, "c": 2}, n=2)

    def batches(max_batch_size: int | None, callbacks: list) -> list:
        s = OrderedSweeper(max_batch_size=max_batch_size)
        s.hydra_context = SimpleNamespace(  # type: ignore[assignment]
            callbacks=SimpleNamespace(callbacks=callbacks), config_loader=None
        )
        return s.split_arguments(parsed, max_batch_size)

    got = batches(2, [cb])
    want = [[f"method={m}", f"seed={s}", "eval=off"] for m in "bca" for s in "01"]
    assert got == [want[0:2], want[2:4], want[4:6]]
    assert batches(2, [cb]) == got and batches(None, [cb]) == [want]
    assert "runs longest-expected first" in capsys.readouterr().out
    # estimating fails (no config here): Hydra's order, and one warning line
    assert batches(4, []) == [jobs[:4], jobs[4:]]
    warnings = [x for x in capsys.readouterr().out.splitlines() if "warning" in x]
    assert len(warnings) == 1 and "Hydra's order" in warnings[0]


@pytest.mark.unit
def test_sweeper_plugin_is_discovered() -> None:
    """Hydra instantiates sweepers only from classes its plugin scan finds in `hydra_plugins`."""
    from hydra._internal.utils import _locate
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    from bench.sweep import OrderedSweeper

    target = yaml.safe_load((CONF / "hydra" / "sweeper" / "ordered.yaml").read_text())["_target_"]
    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Sweeper)}
    assert target in found
    assert issubclass(_locate(target), OrderedSweeper)
    for name in SWEEPS:
        text = (CONF / "sweep" / f"{name}.yaml").read_text()
        assert "override /hydra/sweeper: ordered" in text, name


@pytest.mark.unit
def test_eta_hand_worked() -> None:
    """Two workers; a: 2 runs x 100 s, b: 1 x 50 s, c: finished (a skip, 0 s)."""
    from bench.estimate import Plan, Planned, remaining_seconds, uniform_plan

    a, b, c = (("m", k, "t") for k in "abc")
    p = Plan([Planned(a, 100), Planned(a, 100), Planned(b, 50), Planned(c, 0, True)], True)
    line = {"status": "success", "skipped": False}
    assert remaining_seconds(p, [], 2) == 125.0  # (100 + 100 + 50) / 2
    # one a took 120 s (x1.2 of its estimate) and c was skipped: max(150 / 2, 100) x 1.2
    done = [line | {"run_id": "a__m__t__s0__h", "s": 120.0}]
    done += [{"run_id": "c__m__t__s0__h", "status": "success", "skipped": True, "s": None}]
    assert remaining_seconds(p, done, 2) == pytest.approx(120.0)
    done += [line | {"run_id": "b__m__t__s0__h", "s": 60.0}]  # ratio (120 + 60) / 150
    assert remaining_seconds(p, done, 2) == pytest.approx(120.0)
    four = toy_plan({"a": 100}, n=4)
    assert remaining_seconds(four, [], 2) == 200.0 and remaining_seconds(four, [], 1) == 400.0
    assert remaining_seconds(four, [line | {"run_id": "a__m__t", "s": 50.0}] * 4, 2) == 0.0
    # a failed run does not calibrate; an uncalibrated plan has no eta until a run finishes
    failed = [line | {"run_id": "a__m__t", "s": 1.0, "status": "failed"}]
    assert remaining_seconds(four, failed, 2) == 150.0
    # no estimates (every job 1.0, uncalibrated): no eta until a run finishes, then its time
    # per job for the 3 left: max(3 / 2, 1) x 10 s
    four = uniform_plan([a] * 4, "no records")
    assert math.isnan(remaining_seconds(four, [], 2))
    assert remaining_seconds(four, [line | {"run_id": "a__m__t", "s": 10.0}], 2) == 15.0


@pytest.mark.unit
def test_job_cell_and_workers() -> None:
    from omegaconf import OmegaConf

    from bench.sweep import job_cell, workers

    defaults = ("tiny-random", "lora", "tiny")
    assert job_cell(["method=full", "+sweep=smoke", "seed=0"], defaults) == (
        "tiny-random",
        "full",
        "tiny",
    )
    assert job_cell(["model=m", "task=t"], defaults) == ("m", "lora", "t")
    assert workers(OmegaConf.create({"hydra": {"launcher": {"n_jobs": 2}}})) == 2
    assert workers(OmegaConf.create({"hydra": {"launcher": {}}})) == 1
    assert workers(OmegaConf.create({"hydra": {"launcher": {"n_jobs": -1}}})) == os.cpu_count()


def test_ordered_sweep_runs_longest_first(tmp_path: Path) -> None:
    """Earlier records say prompt_tuning takes 50 s and lora 5 s: prompt_tuning starts first,
    eta 55 s on one worker; on a rerun the finished runs go last, behind the new one."""
    for method, s in (("lora", 5), ("prompt_tuning", 50)):
        write(tmp_path / "old", method, rec("tiny-random", method, s) | {"task": "tiny"})
    p = sweep(tmp_path, "method=lora,prompt_tuning")
    out, _ = p.communicate(timeout=300)
    order = [
        json.loads(x)["run_id"] for x in (tmp_path / "smoke" / PROGRESS).read_text().splitlines()
    ]
    assert [r.split("__")[0] for r in order] == ["prompt_tuning", "lora"], out
    assert "runs longest-expected first (estimates: 2 history)" in out, out
    assert "0/2 done, starting one" in out and "eta 0:00:55" in out, out
    p = sweep(tmp_path, "method=lora,prompt_tuning,freeze")
    out, _ = p.communicate(timeout=300)
    assert "1 done, 2 skipped, 0 failed" in out, out
    lines = (tmp_path / "smoke" / PROGRESS).read_text().splitlines()[2:]
    assert [json.loads(x)["skipped"] for x in lines] == [False, True, True], out
    assert json.loads(lines[0])["run_id"].startswith("freeze__"), out
