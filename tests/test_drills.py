"""Reliability drills (issue 14): unreadable files, concurrent sweeps, determinism, safe
loading, secrets, preemption. Each injects its fault the way a real one arrives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.config import check
from bench.record import Record
from bench.results import run_id
from bench.run import run_one
from tests.conftest import tiny_cfg

TRUNCATED = '{"schema_version": 3, "run_id": "lora__tiny-random__tiny__s0__abc", "status": "succ'
FOREIGN = json.dumps({"_runtime": 3, "_step": 2})  # e.g. a W&B summary copied into the folder


@pytest.mark.parametrize("text", [TRUNCATED, FOREIGN], ids=["truncated", "foreign"])
def test_unreadable_record_is_redone_with_a_warning(tmp_path: Path, text: str) -> None:
    """A truncated or foreign JSON file at a run's record path counts as missing: the run is
    redone (never skipped, never a crash), the warning names the file, and the new record
    replaces it."""
    cfg = tiny_cfg("lora", tmp_path)
    path = tmp_path / "test" / f"{run_id(check(cfg).raw)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with pytest.warns(UserWarning, match=f"{path.name} is not a readable run record"):
        rec = run_one(cfg)
    assert rec["status"] == "success", rec["error"]
    on_disk = Record.model_validate(json.loads(path.read_text()))
    assert on_disk.train is not None and len(on_disk.train.loss_curve) == 3


@pytest.mark.unit
def test_report_lists_unreadable_files(tmp_path: Path) -> None:
    """The report is built from the readable records and names every file it left out."""
    from bench.report import build_report
    from tests.test_report import failed_only, write_folder

    results = write_folder(tmp_path / "r", failed_only(0))
    (results / "cut.json").write_text(TRUNCATED)
    (results / "foreign.json").write_text(FOREIGN)
    with pytest.warns(UserWarning, match="skipping"):
        out = build_report(results, tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "Unreadable files" in md and "cut.json" in md and "foreign.json" in md
    assert "2 JSON file(s)" in md
    clean = build_report(write_folder(tmp_path / "ok", failed_only(0)), tmp_path / "out2")
    assert "Unreadable files" not in (clean / "report.md").read_text()


def test_two_sweeps_on_one_folder_train_each_run_once(tmp_path: Path) -> None:
    """Two sweeps started together on one results folder: the per-run lock lets only one train
    a run; the other waits for it, then finds the record and skips. Every run trains exactly
    once, every record is valid, and each sweep's summary counts only its own runs."""
    import re

    from bench.sweep import PROGRESS
    from tests.test_sweep import records, sweep

    methods = "method=lora,prompt_tuning,freeze"
    procs = [sweep(tmp_path, methods, f"hydra.sweep.dir={tmp_path}/multirun{i}") for i in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    recs = records(tmp_path / "smoke")
    assert len(recs) == 3 and all(r["status"] == "success" for r in recs.values()), outs
    for r in recs.values():
        Record.model_validate(r)
    lines = [json.loads(x) for x in (tmp_path / "smoke" / PROGRESS).read_text().splitlines()]
    trained = sorted(d["run_id"] for d in lines if not d["skipped"])
    assert trained == sorted(recs), lines  # each run trained once, by one of the two sweeps
    assert len(lines) == 6 and len({d["sweep_id"] for d in lines}) == 2
    counts = [re.search(r"(\d+) done, (\d+) skipped, (\d+) failed", o) for o in outs]
    assert all(counts), outs
    done = [tuple(int(g) for g in m.groups()) for m in counts if m]
    assert sum(d[0] for d in done) == 3 and all(d[0] + d[1] == 3 and d[2] == 0 for d in done)
    assert not list((tmp_path / "smoke").glob("*.tmp"))  # no half-written record left behind


# Blocks that must not change between two runs of one config and seed (timings may).
SAME_BLOCKS = ("quality", "validation", "forgetting", "repetition", "hallucination", "params")


def test_same_config_and_seed_give_identical_results_in_two_processes(tmp_path: Path) -> None:
    """fp32, one thread, every evaluation part on: two processes, two results folders,
    bitwise-identical loss curves and metric blocks."""
    import os
    import subprocess
    import sys

    from tests.conftest import CONF

    args = ["method=lora", "budget=tiny", "eval=tiny", "logger=none", "task.n_train=64"]
    args += ["task.n_val=8", "task.n_test=8", "precision=fp32", "threads=1", "progress=false"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.run",
                *args,
                f"results_dir={tmp_path / d}",
                "sweep_name=det",
                f"hydra.run.dir={tmp_path / d}/hydra",
            ],
            cwd=CONF.parent,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for d in ("A", "B")
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    (a,) = [json.loads(p.read_text()) for p in (tmp_path / "A" / "det").glob("*.json")]
    (b,) = [json.loads(p.read_text()) for p in (tmp_path / "B" / "det").glob("*.json")]
    assert a["status"] == b["status"] == "success" and a["run_id"] == b["run_id"]
    assert a["train"]["loss_curve"] == b["train"]["loss_curve"]
    assert a["train"]["tokens"] == b["train"]["tokens"]
    for block in SAME_BLOCKS:
        assert a[block] is not None and a[block] == b[block], block


def _tiny_dir(out: Path, *, pickle: bool) -> dict[str, object]:
    """A random tiny Llama saved as a hub-style folder (safetensors or only a pickled .bin)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.models import char_tokenizer

    tok = char_tokenizer()
    shape = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    cfg = LlamaConfig(vocab_size=len(tok), num_attention_heads=2, num_key_value_heads=2, **shape)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=not pickle)
    tok.save_pretrained(out)
    return {"name": "local", "kind": "hub", "hub_id": str(out)}


def test_pickled_weights_are_refused_unless_the_config_opts_in(tmp_path: Path) -> None:
    import torch

    from bench import models

    cfg = _tiny_dir(tmp_path / "bin", pickle=True)
    assert (tmp_path / "bin" / "pytorch_model.bin").exists()
    assert not list((tmp_path / "bin").glob("*.safetensors"))
    with pytest.raises(OSError, match="safetensors"):
        models.load(cfg, dtype=torch.float32, device="cpu")
    model, _ = models.load({**cfg, "allow_pickle_weights": True}, dtype=torch.float32, device="cpu")
    assert model.config.num_hidden_layers == 1
    safe = _tiny_dir(tmp_path / "st", pickle=False)  # the default path: safetensors load
    assert models.load(safe, dtype=torch.float32, device="cpu")[0] is not None


def test_remote_code_is_never_run_unless_the_config_opts_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model folder whose config points at its own Python code loads with the built-in
    class and never runs that code; only `trust_remote_code: true` would hand it on."""
    import torch
    import transformers

    from bench import models

    cfg = _tiny_dir(tmp_path / "m", pickle=False)
    conf = json.loads((tmp_path / "m" / "config.json").read_text())
    conf["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.Evil"}
    (tmp_path / "m" / "config.json").write_text(json.dumps(conf))
    marker = tmp_path / "ran"
    (tmp_path / "m" / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    model, _ = models.load(cfg, dtype=torch.float32, device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and not marker.exists()

    seen: list[object] = []

    def spy(src: object, **kw: object) -> None:
        seen.append(kw["trust_remote_code"])
        raise RuntimeError("stop before loading")  # the opt-in is shown, the code not run

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    for opt_in in (False, True):
        with pytest.raises(RuntimeError, match="stop before"):
            models.load({**cfg, "trust_remote_code": opt_in}, dtype=torch.float32, device="cpu")
    assert seen == [False, True] and not marker.exists()


def test_tampered_cached_asset_is_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An extracted asset file that changed is extracted again from the verified archive; an
    archive whose sha256 changed is fetched again; a fetch with the wrong sha256 is refused.
    The fetch is a stand-in (no network)."""
    import hashlib
    import shutil
    import zipfile

    from bench import assets

    wheel = tmp_path / "src" / "toy-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("toy/data.txt", "the true data\n")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    toy = assets.Asset("toy", "pypi", "toy", "1.0", digest, wheel.name, "MIT", "test")
    monkeypatch.setitem(assets.ASSETS, "toy", toy)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    fetched: list[Path] = []

    def fake_download(asset: assets.Asset, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        fetched.append(Path(shutil.copy(wheel, dest / asset.filename)))
        return fetched[-1]

    monkeypatch.setattr(assets, "_download", fake_download)
    data = assets.ensure("toy") / "toy" / "data.txt"
    assert data.read_text() == "the true data\n" and len(fetched) == 1
    assert assets.ensure("toy") and len(fetched) == 1  # intact: used as is, not fetched

    data.write_text("the fake data\n")  # same size: caught by its mtime, then its hash
    with pytest.warns(UserWarning, match="no longer match their sha256"):
        assert (assets.ensure("toy") / "toy" / "data.txt").read_text() == "the true data\n"
    assert len(fetched) == 1  # the archive was intact: extracted again, not fetched

    archive = tmp_path / "cache" / "archives" / wheel.name
    archive.write_bytes(b"corrupt")
    data.write_text("tampered again\n")
    with pytest.warns(UserWarning, match="no longer match"):
        assert (assets.ensure("toy") / "toy" / "data.txt").read_text() == "the true data\n"
    assert len(fetched) == 2 and archive.read_bytes() == wheel.read_bytes()

    wheel.write_bytes(b"a different archive")  # the registry now serves something else
    archive.write_bytes(b"corrupt")
    data.write_text("tampered a third time\n")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="sha256 mismatch"):
        assets.ensure("toy")


SECRETS = {
    "WANDB_API_KEY": "fake-wandb-key-0123456789abcdef0123456789abcdef01234567",
    "HF_TOKEN": "hf_fakeTokenValue1234567890",
    "MY_SECRET": "fake-secret-value-4242",
    "SOME_KEY": "fake-some-key-value-1717",
}


def test_no_environment_secret_reaches_any_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fake secrets in the environment of a run (W&B offline, the default logger) and of the
    report: none appears in any file written (record, progress, W&B run files, Hydra's output
    folder, the report), text or binary."""
    import os
    import subprocess
    import sys

    from bench.report import build_report
    from tests.conftest import CONF

    args = ["method=lora", "budget=tiny", "eval=off", "logger=wandb_offline", "task.n_train=64"]
    args += ["task.n_val=8", "task.n_test=8", "precision=fp32", "threads=1", "progress=false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **SECRETS}
    cmd = [sys.executable, "-m", "bench.run", *args, f"results_dir={tmp_path / 'results'}"]
    cmd += ["sweep_name=sec", f"hydra.run.dir={tmp_path / 'hydra'}"]
    p = subprocess.run(cmd, cwd=CONF.parent, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert list((tmp_path / "results" / "sec" / "wandb").glob("offline-run-*/run-*.wandb"))
    for k, v in SECRETS.items():  # the report, built in this process, sees them too
        monkeypatch.setenv(k, v)
    build_report(tmp_path / "results" / "sec", tmp_path / "report")
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert len(files) > 10
    leaks = [
        f"{f.relative_to(tmp_path)}: {name}"
        for f in files
        for name, value in SECRETS.items()
        if value.encode() in f.read_bytes()
    ]
    assert not leaks, leaks


def test_sigterm_records_cancelled_and_a_rerun_redoes_the_run(tmp_path: Path) -> None:
    """SIGTERM to the run's process group mid-training (as a preemption sends it): the run
    process records `cancelled` instead of dying without a record, the command exits
    non-zero, and the same command again trains the run to success."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import CONF

    args = ["method=lora", "budget=time", "budget.seconds=6", "budget.batch_size=4"]
    args += ["eval=off", "logger=none", "task.n_train=64", "task.n_val=8"]
    args += ["task.n_test=8", "precision=fp32", "threads=1", "progress=false", "sweep_name=t"]
    cmd = [sys.executable, "-m", "bench.run", *args, f"results_dir={tmp_path}"]
    cmd += [f"hydra.run.dir={tmp_path}/hydra"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def start() -> subprocess.Popen:
        pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        return subprocess.Popen(cmd, cwd=CONF.parent, env=env, start_new_session=True, **pipe)

    p = start()
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "t" / ".cache").exists():
        time.sleep(0.2)  # the base evaluation is cached as training starts
    time.sleep(1.5)
    os.killpg(p.pid, signal.SIGTERM)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 143 and "recorded `cancelled`" in out, out
    (path,) = (tmp_path / "t").glob("*.json")
    rec = Record.model_validate(json.loads(path.read_text()))
    assert rec.status == "cancelled" and rec.error == "Terminated: SIGTERM", out

    p = start()
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out
    rec = Record.model_validate(json.loads(path.read_text()))
    assert rec.status == "success" and rec.train is not None and rec.train.steps > 0


def test_evaluation_failure_keeps_training_and_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception during evaluation, after training: status failed, with the training block
    and the kept trained state on disk."""
    from bench import evaluate, state

    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("injected evaluation failure")

    monkeypatch.setattr(evaluate, "evaluate_into", broken)
    rec = run_one(tiny_cfg("lora", tmp_path))
    assert rec["status"] == "failed" and "injected evaluation failure" in rec["error"]
    on_disk = Record.model_validate(
        json.loads((tmp_path / "test" / f"{rec['run_id']}.json").read_text())
    )
    assert on_disk.train is not None and len(on_disk.train.loss_curve) == 3
    assert on_disk.state is not None and on_disk.state.kept
    assert state.state_path(tmp_path / "test", rec["run_id"]).stat().st_size > 0


def test_seq_len_shorter_than_an_answer_is_refused(tmp_path: Path) -> None:
    """A budget.seq_len that cannot hold the task's answers fails before the base evaluation
    and training (it used to train on cut answers and 'diverge'), naming the key and bound."""
    rec = run_one(tiny_cfg("lora", tmp_path, "budget.seq_len=4"))
    assert rec["status"] == "failed" and "budget.seq_len: 4 cannot hold" in rec["error"]
    assert "must be >= " in rec["error"] and rec["train"] is None and rec["timing"] is None


@pytest.mark.unit
def test_drill_census_counts_only_valid_records(tmp_path: Path) -> None:
    """`make drill`'s counts: record files, valid records, successes, leftover temp files."""
    from bench.drill import _census
    from tests.test_report import fixture_record, write_folder

    ok = fixture_record("lora", "ladder-4m", "arith", 0)
    bad = fixture_record("lora", "ladder-4m", "arith", 1, status="failed", error="boom")
    folder = write_folder(tmp_path / "smoke", [ok, bad])
    (folder / "cut.json").write_text(TRUNCATED)
    (folder / ".x.json.abc.tmp").write_text("{")
    assert _census(folder) == (3, 2, 1, 1)
    assert "drill:" in (Path(__file__).parent.parent / "Makefile").read_text()
