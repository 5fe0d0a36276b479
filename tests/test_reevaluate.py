"""Train once, evaluate again: kept states, evaluation versions, `python -m bench.evaluate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import reevaluate
from bench.config import check
from bench.evaluate import eval_version
from bench.methods import swept
from bench.results import run_id
from bench.run import run_one
from tests.conftest import tiny_cfg

EVAL_BLOCKS = ("quality", "validation", "forgetting", "repetition", "hallucination")


def _read(tmp: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    return json.loads((tmp / "test" / f"{run_id(cfg)}.json").read_text())


def _stale(tmp: Path, cfg: dict[str, Any]) -> None:
    p = tmp / "test" / f"{run_id(cfg)}.json"
    rec = json.loads(p.read_text())
    rec["eval_version"] = "0" * 12  # as if the evaluation code had changed since
    p.write_text(json.dumps(rec))


def _cli(tmp: Path, *overrides: str) -> None:
    args = ["--sweep", "test", "--results-dir", str(tmp)]
    for o in ("eval=off", "logger=none", *overrides):
        args += ["--override", o]
    with pytest.raises(SystemExit) as e:
        reevaluate.main(args)
    assert e.value.code == 0


@pytest.mark.parametrize("method", swept())
def test_reevaluated_record_equals_the_fresh_evaluation(method: str, tmp_path: Path) -> None:
    """Every method's kept state restores the trained model exactly: the re-evaluated blocks are
    the fresh run's, number for number, and the training block is untouched."""
    cfg = tiny_cfg(method, tmp_path)
    fresh = run_one(cfg)
    assert fresh["status"] == "success", fresh.get("traceback")
    assert fresh["state"]["kept"] and fresh["evaluated"] == "all"
    assert reevaluate.needs(fresh, check(cfg), "all") is None  # up to date: nothing to do
    _stale(tmp_path, cfg)
    _cli(tmp_path)
    again = _read(tmp_path, cfg)
    assert again["timing"]["reevaluated_at"] is not None
    assert again["eval_version"] == fresh["eval_version"]
    for block in (*EVAL_BLOCKS, "train", "params"):
        assert again[block] == fresh[block], block


def test_general_metrics_reevaluate_identically(tmp_path: Path) -> None:
    cfg = tiny_cfg("lora", tmp_path, "eval=tiny")
    fresh = run_one(cfg)
    _stale(tmp_path, cfg)
    _cli(tmp_path, "eval=tiny")
    again = _read(tmp_path, cfg)
    for block in EVAL_BLOCKS:
        assert again[block] == fresh[block] and fresh[block] is not None, block


def test_new_eval_settings_reevaluate_instead_of_retraining(tmp_path: Path) -> None:
    """The run id names the trained model: a sweep with new eval settings finds the record stale
    and re-evaluates it from the kept state; training is not repeated."""
    old = run_one(tiny_cfg("lora", tmp_path))
    assert old["forgetting"] is None  # eval=off
    cfg = tiny_cfg("lora", tmp_path, "eval=tiny")
    assert run_id(cfg) == old["run_id"]
    assert reevaluate.needs(old, check(cfg), "all") == "all"
    new = run_one(cfg)
    assert new["train"] == old["train"] and new["started_at"] == old["started_at"]
    assert new["forgetting"] is not None and new["eval_version"] != old["eval_version"]
    assert new["eval_version"] == eval_version(check(cfg))


def test_without_a_kept_state_the_record_is_left_alone(tmp_path: Path, capsys: Any) -> None:
    old = run_one(tiny_cfg("lora", tmp_path, "state.keep=false"))
    assert old["state"] is None
    new = run_one(tiny_cfg("lora", tmp_path, "eval=tiny", "state.keep=false"))
    assert new == old
    assert "no trained state was kept" in capsys.readouterr().out


def test_state_over_the_size_cap_is_not_kept(tmp_path: Path) -> None:
    rec = run_one(tiny_cfg("full", tmp_path, "state.max_mb=0.001"))
    assert rec["state"]["kept"] is False and "max_mb" in rec["state"]["reason"]
    assert rec["state"]["bytes"] == 4 * rec["params"]["trainable"]  # fp32 masters, every weight
    assert not (tmp_path / "test" / ".state" / rec["run_id"]).exists()


def test_lr_grid_fully_evaluates_only_the_point_chosen_on_validation(tmp_path: Path) -> None:
    lrs = ("1e-5", "1e-3", "3e-2")
    cfgs = [tiny_cfg("lora", tmp_path, "eval_scope=val", f"train.lr={lr}") for lr in lrs]
    recs = [run_one(c) for c in cfgs]
    assert all(r["evaluated"] == "val" and r["quality"] is None for r in recs)
    assert all(r["validation"]["n"] == 8 for r in recs)
    _cli(tmp_path)
    after = [_read(tmp_path, c) for c in cfgs]
    best = min(range(3), key=lambda i: recs[i]["validation"]["loss_after"])
    for i, r in enumerate(after):
        assert r["evaluated"] == ("all" if i == best else "val"), (i, best)
        assert (r["quality"] is not None) == (i == best)
        assert r["validation"] == recs[i]["validation"]  # selection evidence is not rewritten


def test_lr_index_chosen_is_seed_zeros_best_grid_point(tmp_path: Path) -> None:
    """Phase 3 of the default protocol: other seeds train at the point seed 0 chose on
    validation loss; without a finished grid the config check says what to run first."""
    from bench.methods import ConfigError
    from bench.sweep import sweep_phases

    # precision=auto: the check resolves it before it looks the grid up (records store it resolved)
    grid, g = [1e-5, 1e-3, 3e-2], "method.lr_grid=[1e-5,1e-3,3e-2]"
    recs = [
        run_one(
            tiny_cfg(
                "lora",
                tmp_path,
                "eval_scope=val",
                g,
                "precision=auto",
                f"lr_index={i}",
                f"train.lr={lr}",
            )
        )
        for i, lr in enumerate(grid)
    ]
    best = min(range(3), key=lambda i: recs[i]["validation"]["loss_after"])
    c = check(tiny_cfg("lora", tmp_path, "seed=1", "lr_index=chosen", g, "precision=auto"))
    assert c.raw["lr_index"] == best and c.raw["train"]["lr"] == grid[best] == c.lr
    with pytest.raises(ConfigError, match="lr_index=chosen: no finished seed-0"):
        check(tiny_cfg("lora", tmp_path, "lr_index=chosen", "sweep_name=empty"))
    phases, jobs, threads = sweep_phases("default")
    assert phases[1] == "evaluate" and "lr_index=chosen" in phases[2] and len(phases) == 3
    assert (jobs, threads) == (2, 1)  # the evaluate phase runs as the runs do
    assert sweep_phases("smoke")[0] == [[]]


@pytest.mark.unit
def test_eval_version_hashes_only_the_tasks_own_data_code() -> None:
    from bench.evaluate import BENCH, task_modules

    def rel(task: str) -> set[str]:
        return {str(p.relative_to(BENCH / "data")) for p in task_modules(task)}

    assert rel("arithmetic") == {"__init__.py", "arithmetic.py"}
    assert rel("tiny") == {"__init__.py", "tiny.py"}
    # a task built on another task's module hashes that one too
    assert rel("self_instruct") >= {"__init__.py", "self_instruct.py", "natural_instructions.py"}
    assert "arithmetic.py" not in rel("self_instruct")


@pytest.mark.unit
def test_decoding_settings_map_to_transformers_options() -> None:
    from bench.generate import decoding_options
    from bench.methods import ConfigError
    from bench.metrics.settings import DecodingSettings, parse

    assert decoding_options(None) == decoding_options(DecodingSettings())  # greedy
    assert decoding_options(None)["do_sample"] is False
    pen = decoding_options(DecodingSettings(repetition_penalty=1.2, no_repeat_ngram_size=3))
    assert (pen["repetition_penalty"], pen["no_repeat_ngram_size"]) == (1.2, 3)
    smp = decoding_options(DecodingSettings(do_sample=True, temperature=0.7, top_p=0.9))
    assert (smp["do_sample"], smp["temperature"], smp["top_p"], smp["top_k"]) == (True, 0.7, 0.9, 0)
    for bad, key in (({"num_samples": 3}, "num_samples"), ({"top_p": 1.5}, "top_p"),
                     ({"repetition_penalty": 0}, "repetition_penalty")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"eval.decoding.{key}"):
            parse({"decoding": bad})


def _bigrams(s: str) -> list[str]:
    return [s[i : i + 2] for i in range(len(s) - 1)]


def test_other_decodings_evaluate_into_a_folder_without_retraining(tmp_path: Path) -> None:
    """`--into` writes a copy per decoding from the kept state; the source record is untouched.
    n-gram blocking holds (char tokenizer: a token is a character), sampling is seeded."""
    cfg = tiny_cfg("lora", tmp_path, "state.keep=true", "task.max_new_tokens=12")
    fresh = run_one(cfg)
    assert fresh["status"] == "success", fresh.get("traceback")
    src = (tmp_path / "test" / f"{fresh['run_id']}.json").read_bytes()
    ngram = ["eval.decoding.name=ngram2", "eval.decoding.no_repeat_ngram_size=2"]
    args = ["--sweep", "test", "--results-dir", str(tmp_path), "--into", "dec"]
    for o in ("eval=off", "logger=none", *ngram):
        args += ["--override", o]
    with pytest.raises(SystemExit) as e:
        reevaluate.main(args)
    assert e.value.code == 0
    assert (tmp_path / "test" / f"{fresh['run_id']}.json").read_bytes() == src
    copy = json.loads((tmp_path / "dec" / f"{fresh['run_id']}--ngram2.json").read_text())
    assert copy["label"] == "lora{ngram2}" and copy["train"] == fresh["train"]
    preds = copy["quality"]["per_example"]["after"]["pred"]
    assert all(len(set(_bigrams(p))) == len(_bigrams(p)) for p in preds)
    greedy = fresh["quality"]["per_example"]["after"]["pred"]
    assert any(len(set(_bigrams(p))) < len(_bigrams(p)) for p in greedy), "greedy repeats"

    sample = ["eval.decoding.name=s", "eval.decoding.do_sample=true", "eval.decoding.num_samples=3"]
    for _ in range(2):  # twice: the second finds its copy up to date
        args = ["--sweep", "test", "--results-dir", str(tmp_path), "--into", "dec"]
        for o in ("eval=off", "logger=none", *sample):
            args += ["--override", o]
        with pytest.raises(SystemExit):
            reevaluate.main(args)
    s = json.loads((tmp_path / "dec" / f"{fresh['run_id']}--s.json").read_text())
    scores = s["quality"]["per_example"]["after"]["score"]
    assert all(v in (0, 1 / 3, 2 / 3, 1) for v in scores)  # the mean of 3 samples' 0/1 scores
