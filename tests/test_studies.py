"""Settings studies (conf/sweep/study_*.yaml): the sweeps compose to the planned runs, every
setting has its own label, the new method settings are counted and validated, and the report's
study sections compute their paired differences and verdicts from the numbers.

Report numbers come from SYNTHETIC TEST FIXTURES under pytest's tmp_path: schema-valid,
invented, never to be copied into results/ or reports/.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from bench import methods, models
from bench.methods import ConfigError
from bench.report import build_report
from bench.report.frame import frame_of
from bench.report.prepare import prepare
from bench.report.sections import studies as S
from tests.conftest import CONF, compose, tiny_cfg
from tests.test_methods import KV_DIM, SHAPES, D, L, build, trainable
from tests.test_report import fixture_record, read_csv, write_folder

ROOT = CONF.parent

# --------------------------------------------------------------------------- the sweeps

# Each study sweep: its settings (labels) and the learning rate of each method, as planned in
# the YAML headers (3 seeds each, so runs = 3 x settings).
STUDIES: dict[str, list[str]] = {
    "study_lora": ["lora", "lora:targets=q+k", "lora:targets=q+k+v+o", "lora:targets=all-linear",
                   "lora:init=gaussian", "lora:dropout=0"],
    "study_lora_rank": ["lora", "lora:r=2", "lora:r=32", "lora:r=2,alpha=4",
                        "lora:r=32,alpha=64", "lora:r=2,rslora", "lora:rslora",
                        "lora:r=32,rslora"],
    "study_qlora": ["qlora", "qlora:targets=all-linear", "lora", "lora:targets=all-linear",
                    "qlora:quant=fp4", "qlora:no-dq", "qlora:compute=float32"],
    "study_prompts": ["prompt_tuning", "prompt_tuning:tokens=5", "prompt_tuning:tokens=50",
                      "prompt_tuning:init=text", "prompt_tuning:init=vocab"],
    "study_prompts_ptuning_v1": ["ptuning_v1", "ptuning_v1:tokens=5", "ptuning_v1:tokens=50",
                                 "ptuning_v1:encoder=lstm"],
    "study_prompts_prefix": ["prefix_tuning", "prefix_tuning:tokens=5",
                             "prefix_tuning:tokens=50", "ptuning_v2", "ptuning_v2:tokens=5",
                             "ptuning_v2:tokens=50"],
    "study_freeze": ["freeze:all-2", "freeze:all-4", "freeze:all-8", "freeze:all-first2",
                     "freeze:all-first4", "freeze:all-first8", "freeze:mlp-2",
                     "freeze:self_attn-2", "freeze:all-2+emb"],
}  # fmt: skip
# Studies of training data or of the model's vocabulary rather than of a method's settings:
# their own tests (tests/test_self_instruct.py, tests/test_vocab.py).
DATA_STUDIES = {"study_self_instruct", "study_vocab"}
# The default sweep's choice on SmolLM2-135M x arithmetic (seed 0, lowest validation loss).
STUDY_LR = {"lora": 1e-3, "qlora": 1e-3, "prompt_tuning": 0.3, "ptuning_v1": 0.01,
            "prefix_tuning": 0.01, "ptuning_v2": 0.03, "freeze": 3e-4}  # fmt: skip


def study_jobs(name: str, results_dir: Path, check_seed: int | None = None) -> list[Any]:
    """Every run of a study sweep's phases, composed and checked as bench.run would (with
    `check_seed`, only that seed's runs are checked: the others are the same settings; they are
    composed, with the `raw` and `lr` a check would give)."""
    import copy
    from types import SimpleNamespace

    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from bench import config as checks
    from bench.sweep import sweep_phases

    phases, workers, threads = sweep_phases(name)
    assert (workers, threads) == (2, 1), name  # the 2-core protocol the estimates assume
    out: list[Any] = []
    composed: dict[tuple[str, ...], Any] = {}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = hcompose(config_name="config", overrides=[f"+sweep={name}"],
                        return_hydra_config=True)  # fmt: skip
        params = [f"{k}={v}" for k, v in base.hydra.sweeper.params.items()]
        for phase in phases:
            assert phase != "evaluate", name  # fixed rates: no grid to choose from
            # Hydra's multirun first composes with the phase's single-value overrides alone,
            # before the sweeper adds its params (e.g. method=...): they must compose by
            # themselves, as a `method.key=value` on the default method may not. With none,
            # that composition is `base`'s.
            overrides = OverridesParser.create().parse_overrides(list(phase))
            if fixed := [o.input_line for o in overrides if not o.is_sweep_override()]:
                hcompose(config_name="config", overrides=[f"+sweep={name}", *fixed])
            parsed = OverridesParser.create().parse_overrides(params) + overrides
            for job in BasicSweeper.split_arguments(parsed, None)[0]:
                job = [f"+sweep={name}", *job, f"results_dir={results_dir}"]
                key = tuple(o for o in job if not o.startswith("seed="))
                if check_seed is not None and key in composed:  # another seed: same settings
                    seed = int(next(o for o in job if o.startswith("seed=")).split("=")[1])
                    cfg = {**copy.deepcopy(composed[key]), "seed": seed}
                else:
                    cfg = OmegaConf.to_container(hcompose(config_name="config", overrides=job),
                                                 resolve=True)  # fmt: skip
                    composed[key] = cfg
                assert isinstance(cfg, dict)
                if check_seed is None or cfg["seed"] == check_seed:
                    out.append(checks.check(cfg))
                else:
                    lr = float(cfg["train"]["lr"] or cfg["method"]["lr"])
                    out.append(SimpleNamespace(raw=cfg, lr=lr))
    return out


@pytest.mark.unit
def test_study_sweeps_compose_to_their_planned_runs(tmp_path: Path) -> None:
    from bench import results

    every = {p.stem for p in (CONF / "sweep").glob("study_*.yaml")}
    assert sorted(STUDIES) == sorted(every - REMEDY_STUDIES - DATA_STUDIES)
    for name, labels in STUDIES.items():
        jobs = study_jobs(name, tmp_path, check_seed=0)
        text = (CONF / "sweep" / f"{name}.yaml").read_text()
        stated = re.search(r"^# runs: (\d+) ", text, re.M)
        assert stated and int(stated.group(1)) == len(jobs) == 3 * len(labels), name
        got = Counter(methods.get(c.raw["method"]["name"]).label(c.raw["method"]) for c in jobs)
        assert got == dict.fromkeys(labels, 3), name  # each setting its own label, 3 seeds
        assert len({results.run_id(c.raw) for c in jobs}) == len(jobs), name
        for c in jobs:
            m = c.raw["method"]["name"]
            assert (c.raw["model"]["name"], c.raw["task"]["name"]) == ("smollm2-135m", "arithmetic")
            assert c.raw["seed"] in (0, 1, 2) and c.raw["sweep_name"] == name
            assert c.lr == STUDY_LR[m], (name, m)
            assert c.raw["eval_scope"] == "all" and c.raw["eval"]["enabled"], name
        # the reference of each method in the study is run: its default setting
        for m in {c.raw["method"]["name"] for c in jobs}:
            assert S.default_label(m) in labels, (name, m)


# Issue 16's studies: remedies (streams, rates, steps) around several methods on both tasks.
REMEDY_STUDIES = {"study_forgetting", "study_repetition"}
TAG_LR = {"lr/3": 1 / 3, "lrx3": 3.0}


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(REMEDY_STUDIES))
def test_remedy_sweeps_compose_to_their_planned_runs(name: str, tmp_path: Path) -> None:
    from bench import results

    jobs = study_jobs(name, tmp_path, check_seed=0)  # 210 checks would take ~25 s
    stated = re.search(r"^# runs: (\d+) ", (CONF / "sweep" / f"{name}.yaml").read_text(), re.M)
    assert stated and int(stated.group(1)) == len(jobs), name
    # every setting is its own report row, in 3 seeds; no two runs share an id
    rows = Counter((c.raw["task"]["name"], results.run_label(c.raw)) for c in jobs)
    assert set(rows.values()) == {3}, rows
    assert len({results.run_id(c.raw) for c in jobs}) == len(jobs)
    for c in jobs:
        m, task = c.raw["method"]["name"], c.raw["task"]["name"]
        chosen, n = _grid_choice(m, task)
        # the committed reference holds every grid point: a missing one fails, not skips
        assert n == len(methods.defaults(m)["lr_grid"]), (
            f"results/default lacks {m}'s grid on {task}"
        )
        want = chosen * TAG_LR.get(c.raw.get("tag") or "", 1.0)
        assert c.lr == pytest.approx(want, rel=1e-3), (m, task, c.raw.get("tag"))


def _grid_choice(method: str, task: str = "arithmetic") -> tuple[float | None, int]:
    """The rate the committed default sweep chose for `method` on smollm2-135m x `task`, and
    how many seed-0 grid points it has."""
    points = {}
    for p in (ROOT / "results" / "default").glob(f"{method}__smollm2-135m__{task}__s0__*"):
        r = json.loads(p.read_text())
        val = (r.get("validation") or {}).get("loss_after")
        if r["status"] == "success" and val is not None:
            points[r["config"]["lr_index"]] = (val, r["config"]["train"]["lr"])
    best = min(points.values())[1] if points else None
    return best, len(points)


@pytest.mark.unit
@pytest.mark.parametrize("method", sorted(STUDY_LR))
def test_study_rates_are_the_default_sweeps_choice(method: str) -> None:
    best, n = _grid_choice(method)
    grid = methods.defaults(method)["lr_grid"]
    assert n == len(grid), f"results/default holds {n} of {method}'s {len(grid)} seed-0 points"
    assert best == STUDY_LR[method]


# ------------------------------------------------------------------- labels and settings


@pytest.mark.unit
def test_defaults_are_hydras_and_label_bare() -> None:
    """methods.defaults composes conf/method/<name>.yaml as Hydra does (qlora includes lora's
    keys); the default setting's label is the method name (freeze and peft keep theirs)."""
    special = {"freeze": "freeze:all-2", "peft": "peft:IA3"}
    for name in methods.names():
        cfg = compose([f"method={name}"])["method"]
        assert methods.defaults(name) == cfg, name
        assert methods.get(name).label(cfg) == special.get(name, name)
    assert methods.defaults("qlora")["target_modules"] == ["q_proj", "v_proj"]


@pytest.mark.unit
def test_labels_name_what_differs_from_the_defaults() -> None:
    lora = methods.get("lora")
    cfg = methods.defaults("lora") | {"target_modules": ["q_proj", "k_proj"], "r": 2,
                                      "alpha": 4.0, "rslora": True}  # fmt: skip
    assert lora.label(cfg) == "lora:targets=q+k,r=2,alpha=4,rslora"
    # a tuple and a list of the same targets are one setting; alpha 16.0 is alpha 16
    assert lora.label(methods.defaults("lora") | {"target_modules": ("q_proj", "v_proj"),
                                                  "alpha": 16.0}) == "lora"  # fmt: skip
    qlora = methods.get("qlora")
    assert qlora.label(methods.defaults("qlora") | {"double_quant": False}) == "qlora:no-dq"
    pt = methods.get("prompt_tuning")
    base = methods.defaults("prompt_tuning")
    assert pt.label(base | {"init": "text"}) == "prompt_tuning:init=text"  # the YAML's text
    other = pt.label(base | {"init": "text", "init_text": "Add the two numbers and answer."})
    assert re.fullmatch(r"prompt_tuning:init=text,init_text=#[0-9a-f]{6}", other)
    # init_text does not matter (and does not label) unless the prompt starts from it
    assert pt.label(base | {"init_text": "Add the two numbers and answer."}) == "prompt_tuning"
    freeze = methods.get("freeze")
    assert freeze.label(methods.defaults("freeze") | {"trainable_layers": -8}) == (
        "freeze:all-first8"
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("method", "override", "key", "choices"),
    [
        ("prompt_tuning", "method.init=sampled", "method.init", "'random', 'text' or 'vocab'"),
        ("qlora", "method.quant_type=nf8", "method.quant_type", "'nf4' or 'fp4'"),
        ("qlora", "method.compute_dtype=float8", "method.compute_dtype", "'float32'"),
        ("qlora", "method.double_quant=sometimes", "method.double_quant", "boolean"),
        ("ptuning_v1", "method.encoder=gru", "method.encoder", "'mlp' or 'lstm'"),
        ("freeze", "method.trainable_modules=attention", "method.trainable_modules",
         "'all', 'mlp' or 'self_attn'"),
        ("lora", "method.init=xavier", "method.init", "'kaiming' or 'gaussian'"),
        ("lora", "method.rslora=maybe", "method.rslora", "boolean"),
    ],
)  # fmt: skip
def test_setting_errors_name_the_key_and_choices(
    tmp_path: Path, method: str, override: str, key: str, choices: str
) -> None:
    from bench import config as checks

    with pytest.raises(ConfigError) as e:
        checks.check(tiny_cfg(method, tmp_path, override))
    assert key in str(e.value) and choices in str(e.value), str(e.value)


# ------------------------------------------------ parameter counts and storage (tiny model)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("targets", "r"),
    [(["q_proj", "k_proj"], 8), (["q_proj", "v_proj"], 8),
     (["q_proj", "k_proj", "v_proj", "o_proj"], 2), ("all-linear", 32)],
)  # fmt: skip
def test_lora_study_counts(targets: list[str] | str, r: int) -> None:
    """r (in + out) per adapted linear per layer. k and v have the same (D, KV_DIM) shape under
    GQA, so {q,k} and {q,v} train exactly as many parameters: the study compares placement."""
    names = list(SHAPES) if targets == "all-linear" else targets
    expected = L * sum(r * sum(SHAPES[t]) for t in names)
    assert trainable(build("lora", r=r, target_modules=targets)) == expected
    # rsLoRA and alpha change the scale, not the count
    assert trainable(build("lora", r=r, target_modules=targets, rslora=True, alpha=4)) == expected


@pytest.mark.integration
def test_qk_and_qv_counts_are_equal_by_formula() -> None:
    qk = L * 8 * (sum(SHAPES["q_proj"]) + sum(SHAPES["k_proj"]))
    assert qk == L * 8 * (2 * D + D + KV_DIM)
    assert trainable(build("lora", target_modules=["q_proj", "k_proj"])) == qk
    assert trainable(build("lora", target_modules=["q_proj", "v_proj"])) == qk


def _stored_bytes(n: int, double_quant: bool) -> int:
    """bitsandbytes' 4-bit layout for one weight of n parameters (blocks of 64): packed n/2
    bytes, a 16-entry float32 code; absmax per block in float32, or (double quantization) in
    uint8 plus a float32 offset, a float32 absmax per 256 blocks and a 256-entry float32 code."""
    blocks = -(-n // 64)
    if not double_quant:
        return n // 2 + 4 * blocks + 16 * 4
    return n // 2 + blocks + 16 * 4 + 4 + 4 * -(-blocks // 256) + 256 * 4


@pytest.mark.integration
@pytest.mark.parametrize("double_quant", [True, False])
def test_qlora_records_the_stored_bits_per_parameter(double_quant: bool) -> None:
    """memory.base_storage: every linear of every block stored 4-bit; bytes by the layout's
    formula. (The nested code is per weight, so on this tiny model double quantization costs
    bytes; on SmolLM2's 576 x 1536 weights it saves ~0.37 bit/param, as in the QLoRA paper.)"""
    model = build("qlora", double_quant=double_quant)
    got = methods.get("qlora").base_storage(model)
    assert got is not None
    n = [i * o for i, o in SHAPES.values()] * L
    stored = sum(_stored_bytes(k, double_quant) for k in n)
    assert got["n_linear4bit"] == L * len(SHAPES) and got["logical_params"] == sum(n)
    assert got["packed_bytes"] == sum(n) // 2
    assert got["packed_bytes"] + got["quant_state_bytes"] == stored
    assert got["bits_per_param"] == pytest.approx(8 * stored / sum(n))
    assert methods.get("lora").base_storage(build("lora")) is None  # a plain base: nothing


@pytest.mark.integration
def test_a_qlora_record_carries_its_label_and_stored_bits(tmp_path: Path) -> None:
    """Three tiny steps in process: the record's label names the setting, and its memory block
    the measured storage of the 4-bit base (the report's 'Base bits/param')."""
    from bench.run import run_one

    rec = run_one(tiny_cfg("qlora", tmp_path, "method.double_quant=false"))
    assert rec["status"] == "success", rec.get("traceback")
    assert rec["label"] == "qlora:no-dq"
    n = sum(i * o for i, o in SHAPES.values()) * L
    bits = 8 * sum(_stored_bytes(i * o, False) for i, o in SHAPES.values()) * L / n
    assert rec["memory"]["base_storage"]["bits_per_param"] == pytest.approx(bits)
    row = frame_of([rec]).iloc[0]
    assert row["memory.base_storage.bits_per_param"] == pytest.approx(bits)


@pytest.mark.integration
def test_prompt_tuning_vocab_init_rows_are_vocabulary_embeddings() -> None:
    torch.manual_seed(0)
    model = build("prompt_tuning", num_virtual_tokens=12, init="vocab")
    assert trainable(model) == 12 * D
    prompt = model.prompt_encoder["default"].embedding.weight.detach()
    vocab = model.get_input_embeddings().weight.detach()

    def copies(rows: torch.Tensor) -> torch.Tensor:  # per row: equal to some token's embedding
        return (rows[:, None, :] == vocab[None, :, :]).all(-1).any(-1)

    assert copies(prompt).all()
    random_rows = build("prompt_tuning", num_virtual_tokens=12, init="random")
    assert not copies(random_rows.prompt_encoder["default"].embedding.weight.detach()).any()


@pytest.mark.integration
def test_ptuning_v1_lstm_count() -> None:
    """peft's LSTM encoder: a 2-layer bidirectional LSTM (D -> h, then 2h -> h; per direction
    4h(in + h) weights and two 4h biases), then Linear(2h, 2h) and Linear(2h, D)."""
    n, h = 6, 16
    m = build("ptuning_v1", num_virtual_tokens=n, encoder="lstm", encoder_hidden_size=h)
    lstm = 2 * (4 * h * (D + h) + 8 * h) + 2 * (4 * h * (2 * h + h) + 8 * h)
    mlp = (2 * h * 2 * h + 2 * h) + (2 * h * D + D)
    assert trainable(m) == n * D + lstm + mlp
    assert methods.get("ptuning_v1").inference_extra_params(m) == n * D


@pytest.mark.integration
def test_prefix_text_init_repeats_a_short_text() -> None:
    """50 virtual tokens from a shorter init_text: its tokens repeated to length (peft's rule
    for prompt tuning), so the prefix is the frozen model's keys and values of that repetition
    (the tiny tokenizer is per character: repeating the text repeats its ids)."""
    from bench.methods.prefix_tuning import real_token_kv

    text, n = "abc def", 17
    model = build("ptuning_v2", num_virtual_tokens=n, init="text", init_text=text)
    served = model.prompt_encoder["default"](model.prompt_tokens["default"][None, :n])[0]
    tok_dir = str(models.model_dir(yaml.safe_load((CONF / "model" / "tiny-random.yaml").open())))
    assert torch.allclose(served, real_token_kv(model, tok_dir, text * 3, n), atol=1e-5)


# ------------------------------------------------------------------ the report's sections


def study_record(
    cfg: dict[str, Any],
    seed: int,
    after: list[float],
    *,
    bits: list[float] | None = None,
    before: list[float] | None = None,
) -> dict[str, Any]:
    """A SYNTHETIC record of one method setting with per-example test scores (after), answer
    bits (each answer 2 bytes) and a base model at `before` (default: all wrong)."""
    name = cfg["name"]
    label = methods.get(name).label(cfg)
    n = len(after)
    bits = bits or [2.0] * n
    before = before or [0.0] * n
    rec = fixture_record(name, "smollm2-135m", "arith", seed, lr=1e-3, label=label)
    rec["run_id"] = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{label}-s{seed}")
    rec["config"] = {"method": cfg, "train": {"lr": 1e-3}, "seed": seed}
    q = rec["quality"]
    side = {"before": (before, [4.0] * n), "after": (after, bits)}
    q["per_example"] = {k: {"score": s, "bits": b, "bytes": [2] * n, "pred": ["x"] * n}
                        for k, (s, b) in side.items()}  # fmt: skip
    q |= {"before": sum(before) / n, "after": sum(after) / n, "n_test": n,
          "answer_bpb_before": 2.0, "answer_bpb_after": sum(bits) / (2 * n)}  # fmt: skip
    return rec


LORA = methods.defaults("lora")
QK = LORA | {"target_modules": ["q_proj", "k_proj"]}
# 10 test examples, 2 seeds: the reference gets 4 then 3 right, q+k 6 then 5
REF = {0: [1, 1, 1, 1, 0, 0, 0, 0, 0, 0], 1: [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]}
VAR = {0: [1, 1, 1, 1, 1, 1, 0, 0, 0, 0], 1: [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]}


def _effects(records: list[dict[str, Any]]) -> list[S.Effect]:
    ok = prepare(frame_of(records)).ok
    found, _ = S.comparisons(ok)
    return [S.effect(c, ok, "exact_match") for c in found]


def _pair(ref: dict[int, list[int]], var: dict[int, list[int]]) -> list[dict[str, Any]]:
    return [study_record(LORA, s, [float(x) for x in ref[s]]) for s in ref] + [
        study_record(QK, s, [float(x) for x in var[s]]) for s in var
    ]


@pytest.mark.unit
def test_paired_difference_and_verdict_hand_worked() -> None:
    """Per-example means over the 2 seeds: reference (1,1,1,.5,0,...), q+k (1,1,1,1,1,.5,0,...);
    d = (0,0,0,.5,1,.5,0,0,0,0), mean 0.2 (= 11/20 - 7/20). Exact sign-flip test over the 3
    nonzero differences: |sum| >= 2 in 2 of 8 sign patterns, p = 0.25. Both means beat the
    base's 0/10 Wilson bound (3.84 / 13.84 = 0.278), so the verdict is on exact match."""
    (e,) = _effects(_pair(REF, VAR))
    assert (e.comparison.reference, e.comparison.variant) == ("lora", "lora:targets=q+k")
    assert e.comparison.changed == (("target_modules", ["q_proj", "v_proj"],
                                     ["q_proj", "k_proj"]),)  # fmt: skip
    assert e.comparison.knob == "lora: target_modules"
    assert e.quality is not None and e.quality.diff == pytest.approx(0.2)
    assert e.quality.p == pytest.approx(0.25) and e.quality.low <= 0.2 <= e.quality.high
    assert e.base_high == pytest.approx(3.8415 / 13.8415, rel=1e-3) and e.signal
    text = S.verdict(e)
    assert text.startswith("lora:targets=q+k vs lora: Δ exact_match +0.200 [")
    assert text.endswith("], not distinguishable (p=0.25, n=2 seeds × 10 examples).")


@pytest.mark.unit
def test_verdict_changes_with_the_numbers() -> None:
    """q+k right on every example, the reference on none: every d = 1, so the bootstrap
    interval is [1, 1] and the exact sign-flip p is 2 / 2^10."""
    all_right = {s: [1] * 10 for s in (0, 1)}
    none_right = {s: [0] * 10 for s in (0, 1)}
    (e,) = _effects(_pair(none_right, all_right))
    assert S.verdict(e) == ("lora:targets=q+k vs lora: Δ exact_match +1.000 [+1.000, +1.000], "
                            "better (p=0.002, n=2 seeds × 10 examples).")  # fmt: skip
    (worse,) = _effects(_pair(all_right, none_right))
    assert S.verdict(worse).startswith("lora:targets=q+k vs lora: Δ exact_match -1.000 ")
    assert ", worse (p=0.002," in S.verdict(worse)
    (same,) = _effects(_pair(REF, VAR))
    assert len({S.verdict(e), S.verdict(worse), S.verdict(same)}) == 3


@pytest.mark.unit
def test_verdict_falls_back_to_bits_per_byte_at_the_floor() -> None:
    """Neither setting gets an answer right (the base's bound is 0.278): the verdict is on
    answer bits per byte. Reference 2 bits per 2-byte answer = 1.0 bit/byte, q+k 1 bit = 0.5:
    Δ -0.5 on every example, interval [-0.5, -0.5], p = 2 / 2^10; lower is better."""
    zeros = [0.0] * 10
    recs = [study_record(LORA, s, zeros, bits=[2.0] * 10) for s in (0, 1)]
    recs += [study_record(QK, s, zeros, bits=[1.0] * 10) for s in (0, 1)]
    (e,) = _effects(recs)
    assert e.bpb is not None and e.bpb.diff == pytest.approx(-0.5) and not e.signal
    assert S.verdict(e) == (
        "lora:targets=q+k vs lora: neither beats the base model's exact_match beyond its 95% "
        "interval (upper end 0.278), so by answer bits per byte: Δ -0.500 [-0.500, -0.500], "
        "better (p=0.002, n=2 seeds × 10 examples)."
    )


@pytest.mark.unit
def test_bits_per_byte_difference_is_the_records_difference() -> None:
    """The per-example bpb terms average to the record's answer_bpb_after, so the paired Δ is
    exactly the difference of the records' answer bits per byte (means over seeds)."""
    recs = [study_record(LORA, s, [0.0] * 4, bits=[1.0, 2.0, 3.0, 6.0 + s]) for s in (0, 1)]
    recs += [study_record(QK, s, [0.0] * 4, bits=[1.0, 1.0, 1.0, 1.0]) for s in (0, 1)]
    (e,) = _effects(recs)
    ref = sum(r["quality"]["answer_bpb_after"] for r in recs[:2]) / 2  # 12/8, 13/8
    var = sum(r["quality"]["answer_bpb_after"] for r in recs[2:]) / 2  # 4/8
    assert e.bpb is not None and e.bpb.diff == pytest.approx(var - ref) == pytest.approx(-1.0625)


@pytest.mark.unit
def test_variants_of_another_method_pair_at_equal_settings() -> None:
    """QLoRA vs LoRA where targets and rank agree and QLoRA's own settings are its defaults;
    QLoRA's fp4 setting is compared with QLoRA's default only."""
    scores = [1.0] * 5 + [0.0] * 5
    qlora = methods.defaults("qlora")
    cfgs = [LORA, LORA | {"target_modules": "all-linear"}, qlora,
            qlora | {"target_modules": "all-linear"}, qlora | {"quant_type": "fp4"}]  # fmt: skip
    recs = [study_record(c, s, scores) for c in cfgs for s in (0, 1)]
    found, notes = S.comparisons(prepare(frame_of(recs)).ok)
    pairs = {(c.knob, c.reference, c.variant) for c in found}
    knob = "qlora vs lora: 4-bit quantized base"
    assert (knob, "lora", "qlora") in pairs
    assert (knob, "lora:targets=all-linear", "qlora:targets=all-linear") in pairs
    assert ("qlora: quant_type", "qlora", "qlora:quant=fp4") in pairs
    assert ("lora: target_modules", "lora", "lora:targets=all-linear") in pairs
    assert not any(v == "qlora:quant=fp4" and r.startswith("lora") for _, r, v in pairs)
    assert len(pairs) == 5 and not notes
    no_default = [r for r in recs if r["label"] != "qlora"]
    _, notes = S.comparisons(prepare(frame_of(no_default)).ok)
    assert notes == ["qlora: no run of its default setting (qlora) here, so its 2 settings "
                     "are not compared."]  # fmt: skip


@pytest.mark.unit
def test_report_has_a_knob_section_only_for_studies(tmp_path: Path) -> None:
    recs = _pair(REF, VAR)
    out = build_report(write_folder(tmp_path / "study", recs), tmp_path / "study_report")
    md = (out / "report.md").read_text()
    assert "## Settings studies" in md and "### lora: target_modules" in md
    # one note per method: the default's, with its other settings listed, never one per label
    assert ("- lora (runs labelled lora:targets=q+k: the method's default below with what each "
            "label names changed): LoRA (Hu et al., 2021)") in md  # fmt: skip
    assert "- lora:targets=q+k: LoRA" not in md
    assert "- lora:targets=q+k vs lora: Δ exact_match +0.200 [" in md
    (table,) = [p for p in (out / "tables").glob("study-*.csv")]
    rows = {r["setting"]: r for r in read_csv(table)}
    assert set(rows) == {"lora", "lora:targets=q+k"} and rows["lora"]["reference"] == "lora"
    assert float(rows["lora:targets=q+k"]["diff_quality"]) == pytest.approx(0.2)
    assert float(rows["lora:targets=q+k"]["quality_after_mean"]) == pytest.approx(0.55)
    assert float(rows["lora"]["quality_after_mean"]) == pytest.approx(0.35)
    assert (out / "figures" / f"{table.stem}.png").exists()  # 2 seeds each: intervals exist
    # one setting per method (a method sweep): no study section
    plain = [study_record(LORA, s, REF[s]) for s in (0, 1)]
    plain += [study_record(methods.defaults("prompt_tuning"), s, VAR[s]) for s in (0, 1)]
    out = build_report(write_folder(tmp_path / "plain", plain), tmp_path / "plain_report")
    assert "Settings studies" not in (out / "report.md").read_text()


@pytest.mark.unit
def test_settings_run_on_two_cpus_say_their_speed_does_not_compare(tmp_path: Path) -> None:
    """A study resumed on another machine: the knob section and the leaderboard name each CPU
    and its settings; on one CPU neither says anything."""
    intel, amd = ("Intel Xeon", "avx2 amx_bf16"), ("AMD EPYC", "avx2 avx512_bf16")
    recs = _pair(REF, VAR)
    for r in recs:
        r["env"]["cpu"], r["env"]["cpu_flags"] = intel if r["label"] == "lora" else amd
    md = build_report(write_folder(tmp_path / "two", recs), tmp_path / "r2") / "report.md"
    text = md.read_text()
    line = ("These runs ran on different CPUs: AMD EPYC (avx2 avx512_bf16): lora:targets=q+k; "
            "Intel Xeon (avx2 amx_bf16): lora. Train tok/s compares only between settings run "
            "on one CPU.")  # fmt: skip
    assert text.count(line) == 2  # the leaderboard and the target_modules knob
    assert "The runs span more than one machine: tokens/s compares only" in text
    for r in recs:
        r["env"]["cpu"], r["env"]["cpu_flags"] = intel
    del recs[0]["env"]["cpu_flags"]  # a run without flags counts as its CPU model's machine
    md = build_report(write_folder(tmp_path / "one", recs), tmp_path / "r1") / "report.md"
    assert "ran on different CPUs" not in md.read_text()
    assert "span more than one machine" not in md.read_text()  # Limitations: the same machines


# --------------------------------------------------------------------------- remedies (issue 16)


def remedy_record(cfg: dict[str, Any], seed: int, after: list[int], forget: float,
                  *, replay: float = 0.0, tag: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A SYNTHETIC record of a setting with a training stream / tag, and its forgetting."""
    from bench import results

    rec = study_record(cfg, seed, [float(x) for x in after])
    data = {"replay_share": replay, "replay_source": "brown", "duplicate_share": 0.0,
            "duplicate_pool": 16, "epochs": None}  # fmt: skip
    rec["config"] |= {"data": data, "tag": tag}
    rec["label"] = results.run_label(rec["config"])
    rec["run_id"] = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{rec['label']}-s{seed}")
    rec["forgetting"]["nll_bpb_delta"] = forget
    return rec


@pytest.mark.unit
def test_front_moves_from_the_two_intervals() -> None:
    from bench.report.sections.remedies import front_move
    from bench.report.stats import mean_ci

    less = mean_ci([-0.08, -0.09])  # t(0.975, 1) = 12.71: [-0.149, -0.021], below 0
    flat = mean_ci([-0.05, 0.05])
    assert less.high < 0 < flat.high and flat.low < 0
    assert front_move((-0.01, 0.02), less) == (
        "moves the front: less forgetting, no measurable change in quality"
    )
    assert (
        front_move((-0.2, -0.1), less) == "moves along the front: less forgetting for lower quality"
    )
    assert front_move((0.1, 0.2), flat) == (
        "moves the front: higher quality, no measurable change in forgetting"
    )
    assert front_move(None, flat) == "no measurable move"


@pytest.mark.unit
def test_remedies_pair_with_their_bare_setting_and_draw_a_front(tmp_path: Path) -> None:
    """Replay leaves every answer as it was (Δ exact match 0) and lowers forgetting by 0.08 and
    0.09 bits/byte on the two seeds: it moves the front. Full fine-tuning learns as much as LoRA
    but forgets ~0.4 more, beyond both intervals."""
    recs = [remedy_record(LORA, s, REF[s], f) for s, f in ((0, 0.10), (1, 0.12))]
    recs += [remedy_record(LORA, s, REF[s], f, replay=0.3) for s, f in ((0, 0.02), (1, 0.03))]
    full = methods.defaults("full")
    recs += [remedy_record(full, s, REF[s], f) for s, f in ((0, 0.50), (1, 0.51))]
    effects = [e for e in _effects(recs) if e.comparison.variant == "lora[replay=0.3]"]
    (e,) = effects
    assert e.comparison.reference == "lora"
    assert e.comparison.knob == "lora: data.replay_share, data.replay_source"
    assert e.quality is not None and e.quality.diff == pytest.approx(0.0)
    out = build_report(write_folder(tmp_path / "rem", recs), tmp_path / "rem_report")
    md = (out / "report.md").read_text()
    assert "### Learning and forgetting: smollm2-135m × arith" in md
    assert (
        "- lora[replay=0.3] vs lora: Δ exact_match +0.000 [+0.000, +0.000]; Δ general "
        "bits/byte -0.085 [-0.149, -0.021] (n=2 seeds): moves the front: less forgetting, "
        "no measurable change in quality."
    ) in md
    assert (
        "At equal quality gain (full +0.350 ± 0.635 vs lora +0.350 ± 0.635), full forgets "
        "more than lora: general bits/byte +0.505 ± 0.064 vs +0.110 ± 0.127" in md
    )
    assert (out / "figures" / "front-smollm2-135m-arith.png").exists()
    opening = md[md.index("## Answers") : md.index("## Summary")]  # what the report opens with
    assert "- smollm2-135m × arith, forgetting: moves the front: lora[replay=0.3]." in opening
    assert "At equal quality gain (full +0.350 ± 0.635 vs lora +0.350 ± 0.635)" in opening


def repetition_record(seed: int, rep: float, loop: float, base: float, *, dup: float = 0.0,
                      decoding: str = "greedy") -> dict[str, Any]:  # fmt: skip
    """A SYNTHETIC LoRA record with a duplicated stream and/or a decoding, and its repetition:
    seq-rep-4 and loop share of the fine-tuned model, seq-rep-4 of the base (same decoding)."""
    from bench import results

    rec = remedy_record(LORA, seed, REF[seed % 2], 0.05)
    rec["config"]["data"]["duplicate_share"] = dup
    rec["config"]["eval"] = {"decoding": {"name": decoding}}
    rec["label"] = results.run_label(rec["config"])
    rec["run_id"] = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{rec['label']}-s{seed}")
    rec["repetition"] = {"before": {"seq_rep_4": base, "loop_share": 0.0},
                         "after": {"seq_rep_4": rep, "loop_share": loop}}  # fmt: skip
    return rec


@pytest.mark.unit
def test_repetition_study_opens_with_its_answers(tmp_path: Path) -> None:
    """Duplicates raise seq-rep-4 by 0.20, 0.23, 0.21 (mean 0.2133, sd 0.01528, half-width
    t(0.975, 2) x sd / sqrt(3) = 4.303 x 0.00882 = 0.0380: [+0.175, +0.251]): repeats more. The
    penalty lowers it by 0.20, 0.19, 0.20 ([-0.211, -0.182]) and the base's by 0.25 on every
    seed (one base model, a deterministic decoding: no interval). Duplicates + penalty are
    paired with duplicates under greedy decoding, not with plain LoRA."""
    recs = []
    for s, (plain, dup, pen, dup_pen) in enumerate(
        [(0.30, 0.50, 0.10, 0.45), (0.32, 0.55, 0.13, 0.40), (0.31, 0.52, 0.11, 0.60)]
    ):
        recs += [repetition_record(s, plain, 0.1, 0.40),
                 repetition_record(s, dup, 0.3, 0.40, dup=0.5),
                 repetition_record(s, pen, 0.0, 0.15, decoding="penalty"),
                 repetition_record(s, dup_pen, 0.3, 0.15, dup=0.5, decoding="penalty")]  # fmt: skip
    out = build_report(write_folder(tmp_path / "rep", recs), tmp_path / "rep_report")
    md = (out / "report.md").read_text()
    assert md.index("## Answers") < md.index("## Summary")  # the report opens with them
    assert (
        "- lora[dup=0.5x16] vs lora: fine-tuned seq-rep-4 Δ +0.213 [+0.175, +0.251], loop share "
        "Δ +0.200 on all 3 seeds (n=3 seeds): repeats more; Δ exact_match +0.000 [+0.000, "
        "+0.000], not distinguishable (p=1)."
    ) in md
    assert (
        "- lora{penalty} vs lora: fine-tuned seq-rep-4 Δ -0.197 [-0.211, -0.182], loop share "
        "Δ -0.100 on all 3 seeds (n=3 seeds): repeats less; the base model under the same "
        "decoding: seq-rep-4 Δ -0.250 on all 3 seeds;"
    ) in md
    # -0.05, -0.15, +0.08 against duplicates under greedy decoding: the interval covers 0
    assert "- lora[dup=0.5x16]{penalty} vs lora[dup=0.5x16]: fine-tuned seq-rep-4 Δ -0.040" in md
    assert (
        "repetition of the fine-tuned model: repeats more: lora[dup=0.5x16]; repeats less: "
        "lora{penalty}; no measurable change in repetition: lora[dup=0.5x16]{penalty}."
    ) in md
    # the numbers change, the answer changes: duplicates that do not raise repetition
    for r in recs:
        if r["label"] == "lora[dup=0.5x16]":
            r["repetition"]["after"]["seq_rep_4"] = 0.31 + 0.02 * (r["seed"] - 1)
    md = build_report(write_folder(tmp_path / "rep2", recs), tmp_path / "r2") / "report.md"
    assert "no measurable change in repetition: lora[dup=0.5x16]," in md.read_text()


@pytest.mark.unit
def test_remedy_and_vocabulary_labels_sort_and_note_as_their_method() -> None:
    for label in ("lora[replay=0.1]", "lora@lr/3", "lora{penalty}", "lora+vocab5000"):
        assert methods.rank(label)[0] == methods.rank("lora")[0] < 1000, label
        assert methods.note(label) == methods.note("lora"), label


# --------------------------------------------------------------------------- per character (17)


def vocab_record(cfg: dict[str, Any], seed: int, k: int, bits: float, speed: tuple[float, float],
                 english: float) -> dict[str, Any]:  # fmt: skip
    """A SYNTHETIC poem-task record: expansion k, held-out bits per character after (before:
    6.0), training / generation characters per second, English forgetting."""
    from bench import results

    rec = study_record(cfg, seed, [float(x) for x in REF[seed]])
    vocab = {"k": k, "source": "chars", "corpus": "zh", "init": "mean", "seed": 0}
    rec["config"] |= {"vocab": vocab}
    rec["label"] = results.run_label(rec["config"])
    rec["run_id"] = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{rec['label']}-s{seed}")
    src = {"ci": {"bits_per_char": bits, "tokens_per_char": 2.0 if k == 0 else 1.2}}
    before = {"bits_per_char": 6.0, "tokens_per_char": 2.0 if k == 0 else 1.2, "n_chars": 300,
              "n_passages": 5}  # fmt: skip
    rec["text"] = {"before": {"sources": {"ci": before}},
                   "after": {"sources": src, "generation": {"chars_per_s": speed[1]}}}  # fmt: skip
    rec["train"] |= {"chars": 1000, "chars_per_s": speed[0]}
    rec["forgetting"]["nll_bpb_delta"] = english
    return rec


@pytest.mark.unit
def test_expansion_verdict_per_character(tmp_path: Path) -> None:
    """+1,000 tokens: the same answers (Δ 0), bits/char -1.0 and -1.1 on the two seeds (t(0.975,
    1) = 12.706: half-width 0.635), 1.6x training and 1.5x generation characters per second,
    English forgetting +0.01 / -0.01 (no change beyond its interval): it pays."""
    full = methods.defaults("full")
    recs = [vocab_record(full, 0, 0, 5.0, (100, 10), 0.01),
            vocab_record(full, 1, 0, 5.2, (100, 10), 0.02),
            vocab_record(full, 0, 1000, 4.0, (160, 15), 0.02),
            vocab_record(full, 1, 1000, 4.1, (160, 15), 0.01)]  # fmt: skip
    out = build_report(write_folder(tmp_path / "zh", recs), tmp_path / "zh_report")
    md = (out / "report.md").read_text()
    assert "## Per character: smollm2-135m × arith" in md
    # the report opens with the verdict, before the summary
    opening = md[md.index("## Answers") : md.index("## Summary")]
    assert "- smollm2-135m × arith: full+vocab1000 vs full (+1000 tokens): Δ exact_match" in opening
    assert (
        "- full+vocab1000 vs full (+1000 tokens): Δ exact_match +0.000 [+0.000, +0.000], "
        "not distinguishable (p=1); bits/char on ci -1.050 [-1.685, -0.415]; training "
        "characters/s ×1.60, generation ×1.50; English general bits/byte +0.000 [-0.127, "
        "+0.127] (n=2 seeds): it pays at this scale: training and generation faster per "
        "character, with better bits/char on ci, English kept."
    ) in md
    rows = {r["setting"]: r for r in read_csv(out / "tables" / "per-char-smollm2-135m-arith.csv")}
    assert float(rows["full+vocab1000"]["tokens_per_char_ci"]) == pytest.approx(1.2)
    assert float(rows["full"]["bits_per_char_ci"]) == pytest.approx(5.1)
    # the verdict follows the numbers (bits/char after on the two seeds; ref 5.0, 5.2):
    # the same bits and speed: no gain; more English forgotten: says so; bits/char +1.0, +1.1
    # ([+0.415, +1.685]): a cost, even at 1.6x the speed
    fast, slow = (160, 15), (100, 10)
    for name, (bits, speed, eng), says in (
        ("same", ((5.0, 5.2), slow, (0.01, 0.02)), "(n=2 seeds): no measurable gain."),
        ("forgets", ((4.0, 4.1), fast, (0.50, 0.52)), "it forgets more English."),
        ("costs", ((6.0, 6.3), fast, (0.01, 0.02)), "it costs quality per character (bits/char "
         "on ci worse), though training and generation faster per character."),
    ):  # fmt: skip
        again = recs[:2] + [vocab_record(full, s, 1000, b, speed, e)
                            for s, b, e in zip((0, 1), bits, eng, strict=True)]  # fmt: skip
        out = build_report(write_folder(tmp_path / name, again), tmp_path / f"{name}_report")
        assert says in (out / "report.md").read_text(), name


@pytest.mark.unit
def test_reference_tokenizers_are_shown_only_on_the_runs_passages(tmp_path: Path) -> None:
    """reference/<task>.json (bench.sweep.write_references) puts a Chinese-capable tokenizer
    beside the runs' own: 2.0 and 1.2 tokens per character against 0.8 is 1.50x for the +1,000
    expansion; its sources join the provenance (jieba only where a run segments words).
    Measured on other passages (301 characters, the runs' 300): no comparison is made."""
    full = methods.defaults("full")
    recs = [vocab_record(full, s, k, 5.0, (100, 10), 0.01) for s in (0, 1) for k in (0, 1000)]
    folder = write_folder(tmp_path / "zh", recs)
    src = {"license": "GPL", "sha256": "211c5ddee59d0ae7", "use": "held-out text"}
    ref = {"text": {"ci": {"n_passages": 5, "n_chars": 300}},
           "tokenizers": [{"name": "qwen", "label": "Qwen 1-2.5", "vocabulary": 151643,
                           "tokens_per_char": {"ci": 0.8}}],
           "sources": [{"asset": "fortunes_zh", "source": "Debian fortunes-zh 2.98", **src},
                       {"asset": "jieba", "source": "PyPI jieba 0.42.1", **src}],
           "env": {"git_sha": "abcdef0123", "git_dirty": False}}  # fmt: skip
    (folder / "reference").mkdir()
    (folder / "reference" / "arith.json").write_text(json.dumps(ref))
    md = (build_report(folder, tmp_path / "r") / "report.md").read_text()
    opening = md[md.index("## Answers") : md.index("## Summary")]
    assert (
        "- smollm2-135m × arith: Tokens per character of the held-out ci passages: smollm2-135m "
        "2.00; smollm2-135m +1,000 (chars) 1.20; reference Qwen 1-2.5 (vocabulary 151,643) "
        "0.80. The finest expansion, smollm2-135m +1,000 (chars), still needs 1.50× as many "
        "tokens per character as Qwen 1-2.5."
    ) in opening
    rows = read_csv(tmp_path / "r" / "tables" / "tokenizers-smollm2-135m-arith.csv")
    assert [(r["tokenizer"], float(r["tokens_per_char_ci"])) for r in rows] == [
        ("smollm2-135m", 2.0),
        ("smollm2-135m +1,000 (chars)", 1.2),
        ("Qwen 1-2.5 (reference)", 0.8),
    ]
    assert "reference measurements (reference/<task>.json: arith at git abcdef0)" in md
    row = "| arith | Debian fortunes-zh 2.98 | GPL | 211c5ddee59d | held-out text |"
    assert row in md and "PyPI jieba" not in md  # every run's candidates are characters
    assert "Vocabulary expansions in these runs: 1,000 new tokens, candidates from " \
        "vocab.source = chars, counted on the zh corpus's training split only." in md  # fmt: skip

    ref["text"]["ci"]["n_chars"] = 301
    (folder / "reference" / "arith.json").write_text(json.dumps(ref))
    md = (build_report(folder, tmp_path / "r2") / "report.md").read_text()
    assert "Tokens per character of the held-out" not in md and "(reference)" not in md
    assert row in md  # the sources do not depend on the passages


@pytest.mark.unit
def test_a_plus_inside_a_setting_is_no_remedy() -> None:
    from bench.report.sections.remedies import base_label, is_remedy

    assert not is_remedy("lora:targets=q+k") and not is_remedy("freeze:all-2+emb")
    assert base_label("lora:targets=q+k+vocab1000") == "lora:targets=q+k"
    assert base_label("full+vocab5000:noise_init") == "full"
