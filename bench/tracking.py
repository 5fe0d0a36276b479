"""Weights & Biases mirror of the run records (the results folder stays the source of truth).

Modes: ``offline`` (default: run files under ``<sweep results>/wandb/``, no account, no network;
upload later with ``wandb sync``), ``online``, ``none`` (nothing is logged, wandb is not imported).
A tracking error never fails a run: every public method catches, warns and carries on.
"""

from __future__ import annotations

import math
import os
import re
import struct
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

Mode = Literal["offline", "online", "none"]
MODES: tuple[str, ...] = ("offline", "online", "none")
DEFAULT_PROJECT = "ft-bench"

# Record blocks left out of the W&B summary: the config is the run config already, the curves
# are the step history already (and lists of pairs are not summary material).
_SUMMARY_SKIP = ("config", "train/loss_curve", "train/lr_curve")


def flatten(obj: Mapping[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> flat ``{"a/b": v}``; lists are kept as values."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, sep, name))
        else:
            out[name] = value
    return out


def summary_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened record as logged to the W&B summary ("/"-separated keys, W&B's sections)."""
    out: dict[str, Any] = {}
    for key, value in flatten(record).items():
        skipped = any(key == s or key.startswith(s + "/") for s in _SUMMARY_SKIP)
        if skipped or value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # W&B's JSON cannot carry nan/inf
        out[key] = value
    return out


def _tags(model: str, task: str, seed: int) -> list[str]:
    # W&B caps tags at 64 characters.
    return [t[:64] for t in (f"model:{model}", f"task:{task}", f"seed:{seed}")]


def _warn(what: str, exc: BaseException) -> None:
    warnings.warn(f"W&B {what} failed, run continues: {type(exc).__name__}: {exc}", stacklevel=3)


def _enabled(mode: str) -> bool:
    """False for `none` and (with a warning) for an unknown mode: logging is then skipped."""
    if mode not in MODES:
        warnings.warn(f"logger.mode={mode!r} is not one of {MODES}; not logging", stacklevel=3)
        return False
    return mode != "none"


def _init(
    mode: str, *, project: str, entity: str | None, dir: Path, **kwargs: Any
) -> Any:  # a wandb Run
    os.environ.setdefault("WANDB_SILENT", "true")
    if mode == "offline":
        # wandb's process-wide settings follow $WANDB_MODE, not init(mode=...): left "online",
        # an offline run still probes api.forge.coreweave.com for telemetry.
        os.environ["WANDB_MODE"] = "offline"
    import wandb  # lazily: `logger=none` never imports it

    Path(dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        mode=mode,  # this run's mode, whatever $WANDB_MODE says
        project=project,
        entity=entity,
        dir=str(dir),
        reinit="finish_previous",  # a run left open by a crash must not swallow the next one
        # console="off": Hydra keeps the run's log; wrapping stdout fights pytest and joblib.
        settings=wandb.Settings(console="off"),
        **kwargs,
    )


class Tracker:
    """One W&B run per benchmark run: ``start`` -> ``log_step``* -> ``finish``.

    Step metrics are logged under the keys given (e.g. ``loss``, ``lr``, ``tokens_per_s``,
    ``memory_bytes``) and kept out of the summary, which holds the flattened record.
    """

    def __init__(self) -> None:
        self._run: Any = None
        self.run_dir: Path | None = None  # the wandb run folder, once started

    @property
    def active(self) -> bool:
        return self._run is not None

    def start(
        self,
        cfg_dict: Mapping[str, Any],
        *,
        sweep: str,
        run_id: str,
        method: str,
        model: str,
        task: str,
        seed: int,
        mode: Mode | str = "offline",
        dir: Path,
        project: str = DEFAULT_PROJECT,
        entity: str | None = None,
    ) -> None:
        if not _enabled(mode):
            return
        try:
            self._run = _init(
                mode,
                project=project,
                entity=entity,
                dir=dir,
                # run_id is the name, not the W&B id: a retried run must not collide on sync.
                name=run_id,
                group=sweep,
                job_type=method,
                tags=_tags(model, task, seed),
                config=dict(cfg_dict),
            )
            # Step metrics stay out of the summary: W&B would otherwise overwrite record values
            # of the same name (e.g. train/tokens_per_s) with the last step's value at exit.
            self._run.define_metric("*", summary="none")
            self.run_dir = Path(self._run.dir).parent  # .dir is <run folder>/files
        except Exception as exc:
            self._run = None
            _warn("init", exc)

    def log_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self._run is None:
            return
        try:
            self._run.log(dict(metrics), step=int(step))
        except Exception as exc:
            _warn("log", exc)

    def finish(self, record: Mapping[str, Any] | None) -> None:
        """Log the flattened record as summary and close the run (always, even on error)."""
        if self._run is None:
            return
        run, self._run = self._run, None
        failed = True
        try:
            if record is not None:
                run.summary.update(summary_of(record))
                failed = record.get("status") != "success"
        except Exception as exc:
            _warn("summary", exc)
        finally:
            try:
                run.finish(exit_code=1 if failed else 0)  # W&B shows failed runs as failed
            except Exception as exc:
                _warn("finish", exc)


def for_run(cfg: Mapping[str, Any], run_id: str, sweep_dir: Path) -> Tracker | None:
    """The run's tracker per its `logger` config (None for `logger=none`)."""
    lg = cfg["logger"]
    if lg["mode"] == "none":
        return None
    t = Tracker()
    t.start(
        cfg,
        sweep=cfg["sweep_name"],
        run_id=run_id,
        method=cfg["method"]["name"],
        model=cfg["model"]["name"],
        task=cfg["task"]["name"],
        seed=cfg["seed"],
        mode=lg["mode"],
        dir=sweep_dir,
        project=lg["project"],
        entity=lg["entity"],
    )
    return t


def log_report_artifact(
    report_dir: Path,
    sweep: str,
    mode: Mode | str,
    dir: Path,
    *,
    project: str = DEFAULT_PROJECT,
    entity: str | None = None,
) -> None:
    """Log ``reports/<sweep>/`` as a ``report`` artifact from a short run in the sweep's group."""
    if not _enabled(mode):
        return
    try:
        import wandb

        run = _init(
            mode,
            project=project,
            entity=entity,
            dir=dir,
            name=f"report-{sweep}",
            group=sweep,
            job_type="report",
        )
    except Exception as exc:
        _warn("init", exc)
        return
    try:
        art = wandb.Artifact(re.sub(r"[^A-Za-z0-9._-]", "-", f"report-{sweep}"), type="report")
        art.add_dir(str(report_dir))
        run.log_artifact(art)
    except Exception as exc:
        _warn("artifact", exc)
    finally:
        try:
            run.finish()
        except Exception as exc:
            _warn("finish", exc)


# ---------------------------------------------------------------- reading offline run files
# wandb 0.31 ships no Python reader for its ``.wandb`` transaction log (the old
# ``wandb.sdk.internal.datastore`` is gone); the framing is LevelDB's log format with a
# ":W&B" header, and each record is a ``wandb.proto.wandb_internal_pb2.Record``.

_BLOCK = 32768
_HEADER = 7  # checksum u32, length u16, type u8
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_run_file(path: Path) -> Iterator[Any]:
    """Yield the protobuf ``Record``s of an offline ``run-<id>.wandb`` file, CRC-checked.

    ``finish()`` returns before wandb-core has flushed the file: it is complete once it holds
    the ``exit`` record (or once the process has ended).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B" or struct.unpack("<H", data[4:6])[0] != 0xBEE1:
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER:  # block trailer padding
            pos += room
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0:
            break  # zero padding at the end of the last block
        if pos + _HEADER + length > len(data):
            break  # torn tail: the writer is still running, or crashed mid-record
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: checksum mismatch at byte {pos}")
        pos += _HEADER + length
        if kind in (_FULL, _FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (_FULL, _LAST):
            rec = pb.Record()
            rec.ParseFromString(pending)
            yield rec
