"""Sweep bookkeeping as a Hydra callback: k/N progress with elapsed time and ETA, and one summary
line at the end (done / skipped / failed, failures named).

Works across launchers (basic, joblib, submitit): every finished run appends one line to
`<results_dir>/<sweep>/.progress.jsonl`, and the callback reads that file, so it needs no shared
memory with the workers.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

PROGRESS = ".progress.jsonl"


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
    }
    with open(path, "a") as f:  # O_APPEND: small lines from several processes do not interleave
        f.write(json.dumps(line) + "\n")


def job_count(config: Any) -> int:
    """Jobs of a basic-sweeper grid: the product of the choices of every sweep override, from
    the command line (`method=a,b`) and from a named sweep's `hydra.sweeper.params`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()]
    keys = {o.split("=", 1)[0].lstrip("+~") for o in config.hydra.overrides.task}
    overrides = [o for o in overrides if o.split("=", 1)[0] not in keys]  # the CLI wins
    overrides += list(config.hydra.overrides.task)
    n = 1
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            n *= len(list(o.sweep_string_iterator()))
    return n


def _lines_since(path: Path, t0: float) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by kill -9; the run itself is redone on resume
        if d.get("t", 0) >= t0:
            out.append(d)
    return out


def _fmt(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class SweepProgress(Callback):
    any_failed = False  # read by bench.run.main: a sweep with a failed cell exits non-zero

    def on_multirun_start(self, config: DictConfig, **kw: Any) -> None:
        self.t0 = time.time()
        self.n = job_count(config)
        self.path = progress_file(config)
        print(f"[sweep] {config.sweep_name}: {self.n} runs -> {self.path.parent}", flush=True)

    def on_job_start(self, config: DictConfig, **kw: Any) -> None:
        t0 = getattr(self, "t0", None)
        if t0 is None:  # worker process (joblib/submitit): no multirun state here
            return
        done = _lines_since(self.path, t0)
        k = len(done)
        ran = [d for d in done if not d["skipped"]]
        el = time.time() - t0
        eta = el / len(ran) * (self.n - k) if ran else math.nan
        eta_s = _fmt(eta) if math.isfinite(eta) else "?"
        # "k/N done" rather than "run k+1": with parallel workers several runs start at once
        print(
            f"[sweep] {k}/{self.n} done, starting one  elapsed {_fmt(el)}  eta {eta_s}", flush=True
        )

    def on_multirun_end(self, config: DictConfig, **kw: Any) -> None:
        done = _lines_since(self.path, self.t0)
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


def sweep_models(name: str) -> list[dict[str, Any]]:
    """The model configs a named sweep's grid uses (its `model` choices, else the default)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
        choices = str((cfg.hydra.sweeper.get("params") or {}).get("model") or cfg.model.name)
        out = []
        for m in choices.split(","):
            c = compose(config_name="config", overrides=[f"+sweep={name}", f"model={m.strip()}"])
            out.append(OmegaConf.to_container(c.model, resolve=True))
    return out  # type: ignore[return-value]


def prepare(name: str) -> None:
    """Materialise (convert, or pretrain for ladder rungs) only the models of sweep `name`."""
    from bench import models

    for cfg in sweep_models(name):
        print(f"[sweep] {name}: model {cfg['name']} -> {models.model_dir(cfg)}", flush=True)


if __name__ == "__main__":  # `python -m bench.sweep prepare NAME`
    import argparse
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description="sweep helpers")
    ap.add_argument("action", choices=["prepare"])
    ap.add_argument("sweep")
    a = ap.parse_args()
    prepare(a.sweep)
