"""Every shipped config composes; bad values fail before any model is loaded, naming the key and
the valid choices."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bench import data, methods
from bench.config import check as validate
from bench.methods import ConfigError
from bench.run import run_one
from tests.conftest import CONF, METHODS, compose, tiny_cfg

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


def test_registries_match_configs() -> None:
    assert methods.names() == METHODS
    assert data.names() == TASKS


def test_every_combination_composes_and_validates() -> None:
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    # every method with every model, and every method with every task: the checks that relate
    # two groups are method x model (shapes) and method x task (sequence lengths); the full
    # product (567 compositions) took 40 s
    combos = {(m, mo, "tiny") for m, mo in itertools.product(METHODS, MODELS)}
    combos |= {(m, "tiny-random", t) for m, t in itertools.product(METHODS, TASKS)}
    n = 0
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for m, mo, t in sorted(combos):
            c = hcompose(
                config_name="config", overrides=[f"method={m}", f"model={mo}", f"task={t}"]
            )
            cfg = OmegaConf.to_container(c, resolve=True)
            assert (cfg["method"]["name"], cfg["model"]["name"], cfg["task"]["name"]) == (m, mo, t)
            validate(cfg)  # every model config declares its architecture: no weights needed
            n += 1
    # (m, tiny-random, tiny) is in both sets, once
    assert n == len(combos) == len(METHODS) * (len(MODELS) + len(TASKS) - 1)


@pytest.mark.parametrize(
    ("group", "value"), [("method", "lorax"), ("model", "gpt5"), ("task", "nonexistent")]
)
def test_unknown_option_names_choices(group: str, value: str) -> None:
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as e:
        compose([f"{group}={value}"])
    msg = str(e.value)
    assert value in msg and group in msg
    valid = {"method": METHODS, "model": MODELS, "task": TASKS}[group]
    assert all(v in msg for v in valid)


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load weights fails the test: validation must come first."""
    from bench import models

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a model was loaded before the config was validated")

    monkeypatch.setattr(models, "load", boom)


@pytest.mark.parametrize(
    ("method", "override", "key", "choices"),
    [
        ("lora", "method.r=0", "method.r", "> 0"),
        ("lora", "method.r=-4", "method.r", "> 0"),
        ("qlora", "method.r=0", "method.r", "> 0"),
        ("freeze", "method.trainable_layers=5", "method.trainable_layers", "1..4"),
        ("freeze", "method.trainable_layers=-9", "method.trainable_layers", "1..4"),
        ("freeze", "method.trainable_modules=ffn", "method.trainable_modules", "self_attn"),
        ("lora", "method.target_modules=[q_proj,wq]", "method.target_modules", "v_proj"),
        ("qlora", "method.quant_type=int3", "method.quant_type", "nf4"),
        ("ptuning_v1", "method.encoder=gru", "method.encoder", "lstm"),
        ("prompt_tuning", "method.num_virtual_tokens=0", "method.num_virtual_tokens", "> 0"),
        ("peft", "method.peft_type=Nope", "method.peft_type", "IA3"),
        ("lora", "precision=fp8", "precision", "bf16-autocast"),
        ("lora", "budget.steps=0", "budget.steps", "> 0"),
    ],
)
def test_bad_values_fail_early(
    no_loading: None, tmp_path: Path, method: str, override: str, key: str, choices: str
) -> None:
    cfg = tiny_cfg(method, tmp_path, override)
    with pytest.raises(ConfigError) as e:
        run_one(cfg)
    assert key in str(e.value) and choices in str(e.value)
    assert not list(tmp_path.rglob("*.json"))  # nothing ran, nothing written


def test_unknown_names_in_plain_dicts(no_loading: None, tmp_path: Path) -> None:
    cfg = tiny_cfg("lora", tmp_path)
    cfg["method"]["name"] = "dora"
    with pytest.raises(ConfigError, match=r"method.name.*valid: \[.*lora.*\]"):
        run_one(cfg)
    cfg = tiny_cfg("lora", tmp_path)
    cfg["task"]["name"] = "glue"
    with pytest.raises(ConfigError, match=r"task.name.*valid: \[.*tiny.*\]"):
        run_one(cfg)
