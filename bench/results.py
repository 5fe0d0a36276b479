"""Results on disk: run ids, atomic writes, resume checks, and the environment block.

The record's schema is bench/record.py."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.precision import timing_flags

# Settings that do not change a run's result: where it is written and how it is logged.
NON_RESULT_KEYS = (
    "logger", "sweep_name", "results_dir", "progress", "force", "isolate", "hydra", "phases",
    "tag",
)  # fmt: skip
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "lm_eval",
    "wandb",
    "hydra-core",
    "pandas",
    "accelerate",
    "tokenizers",
    "gguf",
)


# What bench/train.py trains a config on: part of the run id (config key `train_version`), so a
# fix that changes training never meets records of the old code under the same id.
# 1 (records without the key): encode() cut prompts that fit in seq_len to their last
#   seq_len - len(answer) - len(prompt) tokens (arithmetic lost "Question:", squad_shifts ~45
#   context tokens in 71% of training examples), while test generation saw whole prompts.
# 2: prompts that fit are kept whole.
TRAIN_VERSION = 2


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# Settings that change only how a trained model is evaluated (its record's `eval_version`), not
# the training: a run id names a trained model, so new metrics re-evaluate it, never retrain it.
EVAL_KEYS = ("eval", "eval_scope", "state")
EVAL_TRAIN_KEYS = ("eval_batch_size",)  # keys of the `train` group that only evaluation reads


def config_hash(cfg: Mapping[str, Any], n: int = 10) -> str:
    kept = {k: v for k, v in cfg.items() if k not in NON_RESULT_KEYS}
    return hashlib.sha256(canonical(kept).encode()).hexdigest()[:n]


def training_view(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that decide the trained model (what a run id hashes)."""
    from bench import stream, vocab

    out = {k: v for k, v in cfg.items() if k not in EVAL_KEYS}
    if out.get("train_version") is None:  # records of version 1 hashed no such key
        out.pop("train_version", None)
    # neutral stream and vocabulary settings are left out: ids from before they existed hold
    for key, active in (("data", stream.active), ("vocab", vocab.active)):
        if key in out:
            out[key] = active(out[key])
            if not out[key]:
                del out[key]
    if isinstance(out.get("train"), Mapping):
        out["train"] = {k: v for k, v in out["train"].items() if k not in EVAL_TRAIN_KEYS}
    return out


def run_id(cfg: Mapping[str, Any]) -> str:
    """Readable prefix + hash of every training-affecting setting (stable across processes)."""
    names = (cfg["method"]["name"], cfg["model"]["name"], cfg["task"]["name"])
    return "__".join(names) + f"__s{cfg['seed']}__{config_hash(training_view(cfg))}"


def run_label(cfg: Mapping[str, Any]) -> str:
    """A record's label, its row in reports: the method's setting label, then the stream's when
    it is not the task's own (bench/stream.py, e.g. `lora[replay=0.1]`), then `tag` when given
    (`lora@lr/3`: what the label cannot show, such as a studied learning rate or step count),
    then a decoding other than greedy (`lora{penalty}`). A vocabulary expansion follows the
    method's label (`full+vocab5000`, bench/vocab.py)."""
    from bench import stream, vocab
    from bench.methods import get

    out = get(cfg["method"]["name"]).label(cfg["method"]) + vocab.label_suffix(cfg.get("vocab"))
    out += stream.label_suffix(cfg.get("data"))
    out += f"@{cfg['tag']}" if cfg.get("tag") else ""
    dec = ((cfg.get("eval") or {}).get("decoding") or {}).get("name", "greedy")
    return out + (f"{{{dec}}}" if dec != "greedy" else "")  # e.g. lora{penalty}


def write_json_atomic(path: Path, obj: Any) -> None:
    """temp file in the same folder + fsync + rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=False, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_done(path: Path) -> bool:
    """A successful record is at `path`. A file there that is no readable record (truncated,
    foreign) counts as missing, with a warning naming it: the run is redone and replaces it."""
    from bench.record import read

    rec = read(path)
    if rec is None and path.exists():
        warnings.warn(
            f"{path} is not a readable run record (truncated or foreign): treated as missing, "
            "the run is redone and replaces it",
            stacklevel=2,
        )
    return rec is not None and rec.status == "success"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict[str, Any]:
    import torch

    pkgs = {}
    for p in PACKAGES:
        try:
            pkgs[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pkgs[p] = None
    # code only: a sweep rewrites its own committed records (results/, reports/) as it goes
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--",
                 ":(top,exclude)results", ":(top,exclude)reports")  # fmt: skip
    dev = (
        torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    cpu = None
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": None if dirty is None else bool(dirty),
        "packages": pkgs,
        "python": platform.python_version(),
        "device": device,
        "device_name": dev,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_flags": timing_flags(),  # what decides bf16 speed on a CPU
        "hostname_hash": hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12],
    }
