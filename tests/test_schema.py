"""One recipe, one schema: method labels, precision from hardware, sweeps equal to the registry,
and the run record as the writer writes it and the report reads it."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import methods
from bench.config import check
from bench.methods import ConfigError
from bench.precision import resolve_precision
from bench.record import Record
from bench.results import run_id
from tests.conftest import CONF, compose, tiny_cfg

ROOT = CONF.parent


def test_precision_auto_follows_cpu_flags_not_timing() -> None:
    assert resolve_precision("auto", "cpu", flags={"avx2", "avx512f"}) == "fp32"
    assert resolve_precision("auto", "cpu", flags={"avx2", "avx512_bf16"}) == "bf16-autocast"
    assert resolve_precision("auto", "cpu", flags={"amx_bf16", "amx_tile"}) == "bf16-autocast"
    assert resolve_precision("fp32", "cpu", flags={"avx512_bf16"}) == "fp32"


def test_run_id_is_stable_under_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old rule timed a matmul; a slow matmul must no longer change the run id."""
    import torch

    a = check(tiny_cfg("lora", tmp_path, "precision=auto"))
    slow = torch.matmul

    def busy(*args: Any, **kw: Any) -> Any:
        import time

        time.sleep(0.01)
        return slow(*args, **kw)

    monkeypatch.setattr(torch, "matmul", busy)
    b = check(tiny_cfg("lora", tmp_path, "precision=auto"))
    assert a.raw["precision"] == b.raw["precision"] and run_id(a.raw) == run_id(b.raw)


def test_committed_run_ids_reproduce_from_their_configs() -> None:
    """Every committed record's id is the id rule applied to the config it stores (a change to
    the rule would make resume retrain finished runs), and the rule ignores evaluation-only
    settings, so a new evaluation re-evaluates instead of retraining."""
    paths = sorted((ROOT / "results").glob("*/*.json"))
    recs = [r for p in paths if "run_id" in (r := json.loads(p.read_text()))]
    assert len(recs) >= 8  # results/smollm2-arithmetic at least; results/default as it lands
    for r in recs:
        assert run_id(r["config"]) == r["run_id"], r["run_id"]
        cfg = {**r["config"], "eval": {"enabled": False}, "eval_scope": "val"}
        cfg["train"] = {**cfg["train"], "eval_batch_size": 1}
        assert run_id(cfg) == r["run_id"]


def test_sweep_method_lists_equal_the_registry() -> None:
    # method sweeps list every swept method; a settings study (study_*) varies one method's own
    # settings and has its own test (tests/test_studies.py)
    for p in sorted((CONF / "sweep").glob("*.yaml")):
        if p.stem.startswith("study_"):
            continue
        grid = yaml.safe_load(p.read_text())["hydra"]["sweeper"]["params"]
        assert sorted(grid["method"].split(",")) == sorted(methods.swept()), p.name
    assert "peft" not in methods.swept() and len(methods.swept()) == 8


def test_variant_labels() -> None:
    freeze = compose(["method=freeze", "method.trainable_modules=mlp"])["method"]
    assert methods.get("freeze").label(freeze) == "freeze:mlp-2"
    freeze.update(trainable_layers=-4, trainable_modules="all", train_embeddings=True)
    assert methods.get("freeze").label(freeze) == "freeze:all-first4+emb"
    peft = compose(["method=peft", "method.peft_type=LoHa"])["method"]
    assert methods.get("peft").label(peft) == "peft:LoHa"
    assert methods.get("lora").label(compose(["method=lora"])["method"]) == "lora"


def test_qlora_composes_lora_settings() -> None:
    """QLoRA is LoRA's settings (targets and rank included) on a 4-bit base: their difference in
    a report is the quantization alone."""
    lora, qlora = compose(["method=lora"])["method"], compose(["method=qlora"])["method"]
    shared = {k: v for k, v in lora.items() if k != "name"}
    assert {k: qlora[k] for k in shared} == shared
    assert qlora["target_modules"] == lora["target_modules"] and qlora["quant_type"] == "nf4"


# (override, key the message names, the valid choices or range it states): every config group
BAD_INPUTS = [
    ("method.name=bogus", "method.name", "'lora'"),
    ("method.r=0", "method.r", "> 0"),
    ("method.lr=-1", "method.lr", "> 0"),
    ("method.dropout=1.5", "method.dropout", "[0, 1)"),
    ("method.target_modules=[nope]", "method.target_modules", "q_proj"),
    ("+method.rank=8", "method.rank", "valid keys"),
    ("model.kind=weird", "model.kind", "'hub'"),
    ("model.num_layers=0", "model.num_layers", "> 0"),
    ("model.hidden_size=abc", "model.hidden_size", "valid integer"),
    ("+model.trust_remote_code=maybe", "model.trust_remote_code", "valid boolean"),
    ("+model.bogus=1", "model.bogus", "valid keys"),
    ("task.name=nope", "task.name", "'arithmetic'"),
    ("task.n_train=0", "task.n_train", "> 0"),
    ("task.max_new_tokens=0", "task.max_new_tokens", "> 0"),
    ("+task.bogus=1", "task.bogus", "valid keys"),
    ("budget.kind=epochs", "budget.kind", "'steps' or 'time'"),
    ("budget.steps=0", "budget.steps", "> 0"),
    ("budget.batch_size=-2", "budget.batch_size", "> 0"),
    ("budget.kind=time", "budget.seconds", "required"),
    ("+budget.bogus=1", "budget.bogus", "valid keys"),
    ("eval.enabled=maybe", "eval.enabled", "true or false"),
    ("eval.batch_size=0", "eval.batch_size", ">= 1"),
    ("eval.probes.tasks=[nope]", "eval.probes.tasks", "general_knowledge"),
    ("eval.repetition.windows=[0]", "eval.repetition.windows", "positive integer"),
    ("eval.decoding.top_p=2", "eval.decoding.top_p", "in (0, 1]"),
    ("eval.decoding.num_samples=4", "eval.decoding.num_samples", "do_sample=true"),
    ("data.replay_share=1.5", "data.replay_share", "< 1"),
    ("data.replay_source=wiki", "data.replay_source", "'brown'"),
    ("data.epochs=0", "data.epochs", "> 0"),
    ("tag='a b'", "tag", "pattern"),
    ("+eval.bogus=1", "eval", "valid: ['batch_size'"),
    ("train.lr=-1", "train.lr", "> 0"),
    ("train.clip=-1", "train.clip", ">= 0"),
    ("train.warmup_ratio=1.5", "train.warmup_ratio", "< 1"),
    ("train.weight_decay=-0.1", "train.weight_decay", ">= 0"),
    ("train.optimizer=sgd", "train.optimizer", "paged_adamw_32bit"),
    ("train.eval_batch_size=0", "train.eval_batch_size", "> 0"),
    ("logger.mode=cloud", "logger.mode", "offline"),
    ("+logger.bogus=1", "logger.bogus", "valid keys"),
    ("precision=fp16", "precision", "'bf16-autocast'"),
    ("device=tpu", "device", "auto|cpu|cuda"),
    ("device=cuda:99", "device", "valid: ['auto', 'cpu'"),
    ("threads=0", "threads", "> 0"),
    ("threads=abc", "threads", "valid integer"),
    ("seed=abc", "seed", "valid integer"),
    ("seed=-1", "seed", ">= 0"),
    ("seed=1.5", "seed", "valid integer"),
    ("results_dir=", "results_dir", "at least 1 character"),
    ("sweep_name=a/b", "sweep_name", "pattern"),
    ("eval_scope=test", "eval_scope", "'all' or 'val'"),
    ("lr_index=-1", "lr_index", ">= 0"),
    ("state.max_mb=0", "state.max_mb", "> 0"),
    ("+unknown_key=1", "unknown_key", "valid keys"),
]


@pytest.mark.parametrize(("override", "key", "says"), BAD_INPUTS)
def test_bad_input_fails_in_check_naming_key_and_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: str, key: str, says: str
) -> None:
    """Each bad input fails in config.check, before any model is built or loaded, naming the key
    and what it may be."""
    from bench import models

    def no_model(*a: Any, **kw: Any) -> Any:
        raise AssertionError("a model was touched before the config was checked")

    monkeypatch.setattr(models, "load", no_model)
    monkeypatch.setattr(models, "model_dir", no_model)
    with pytest.raises(ConfigError) as e:
        check(tiny_cfg("lora", tmp_path, override))
    assert f"{key}:" in str(e.value) or f"{key}=" in str(e.value), str(e.value)
    assert says in str(e.value), str(e.value)


def test_bad_input_table_covers_every_group() -> None:
    groups = {o.lstrip("+").split("=")[0].split(".")[0] for o, _, _ in BAD_INPUTS}
    need = {"method", "model", "task", "budget", "eval", "train", "logger", "precision"}
    need |= {"device", "threads", "seed", "results_dir", "sweep_name", "unknown_key"}
    assert len(BAD_INPUTS) >= 30 and need <= groups, need - groups


def test_functions_and_modules_stay_small() -> None:
    """The architecture limit: no function over ~80 lines, no module over ~400 (bench/)."""
    long_fn, long_mod = [], []
    for p in sorted((ROOT / "bench").rglob("*.py")):
        text = p.read_text()
        if len(text.splitlines()) > 420:
            long_mod.append(p.name)
        for n in ast.walk(ast.parse(text)):
            if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 85:  # type: ignore[operator]
                long_fn.append(f"{p.name}:{n.name}")
    assert not long_fn and not long_mod, (long_fn, long_mod)


def test_no_method_names_outside_methods() -> None:
    """Method quirks stay in bench/methods: no other module names a method or a peft type."""
    # "peft" is also the package's name (bench/results.py lists package versions)
    names = [*methods.swept(), "PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "LORA"]
    hits = []
    for p in sorted((ROOT / "bench").rglob("*.py")):
        if "methods" in p.parts:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                hits.append(f"{p.relative_to(ROOT)}: {node.value!r}")
    assert not hits, hits


def test_unwritable_results_folder_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="results_dir: cannot write records"):
        check(tiny_cfg("lora", tmp_path, f"results_dir={blocker}"))


@pytest.mark.integration
def test_contract_run_one_records_feed_the_report(tmp_path: Path) -> None:
    """The writer's records parse with the one schema, carry their label, and build a report
    in which two variants of one method in one cell are distinct rows."""
    from bench.report import build_report
    from bench.run import run_one

    recs = [
        run_one(tiny_cfg("freeze", tmp_path, "method.trainable_modules=mlp")),
        run_one(tiny_cfg("freeze", tmp_path, "method.trainable_layers=4")),
        run_one(tiny_cfg("lora", tmp_path)),
    ]
    assert [r["status"] for r in recs] == ["success"] * 3, [r["error"] for r in recs]
    for r in recs:
        Record.model_validate(r)
    assert [r["label"] for r in recs] == ["freeze:mlp-2", "freeze:all-4", "lora"]
    out = build_report(tmp_path / "test", tmp_path / "report")
    rows = (out / "tables" / "runs.csv").read_text()
    assert "freeze:mlp-2" in rows and "freeze:all-4" in rows and "lora" in rows
