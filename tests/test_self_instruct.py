"""Self-Instruct (issue 18): the filters on hand-worked strings, the fixed seed / held-out split,
config errors, the pipeline end to end on tiny-random (deterministic, counts that add up), the
two instruction tasks and the study sweep.

The module's tier is integration (tiny-random generates); tests that load no model are marked
unit themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from bench import instruct as si
from bench import models
from bench import self_instruct as pipeline
from bench.data import natural_instructions as ni
from bench.data import self_instruct as store
from bench.methods import ConfigError
from tests.conftest import CONF

TINY = ("self_instruct=tiny", "model=tiny-random", "device=cpu", "threads=1", "progress=false")


def pipeline_cfg(*overrides: str) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="self_instruct_run", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def task_cfg(name: str, **overrides: Any) -> dict[str, Any]:
    return {**yaml.safe_load((CONF / "task" / f"{name}.yaml").read_text()), **overrides}


# ----------------------------------------------------------------------------- filters


@pytest.mark.unit
def test_rouge_filter_rejects_a_near_duplicate_and_keeps_a_novel_instruction() -> None:
    pool = si.Pool(0.7)
    pool.add("Write a question about the story.", generated=False)
    # rouge_score lower-cases and keeps [a-z0-9] tokens: "write a question about the passage"
    # against "write a question about the story": LCS = write a question about the (5 of 6
    # tokens each), P = R = 5/6, F1 = 5/6 = 0.833 >= 0.7: rejected.
    assert pool.rouge("Write a question about the passage.") == pytest.approx(5 / 6)
    assert pool.novel("Write a question about the passage.") == "rouge"
    # "translate the sentence into french" (5 tokens): LCS = "the" (1), P = 1/5, R = 1/6,
    # F1 = 2 (1/5)(1/6) / (1/5 + 1/6) = 2/11 = 0.182 < 0.7: kept.
    assert pool.rouge("Translate the sentence into French.") == pytest.approx(2 / 11)
    assert pool.novel("Translate the sentence into French.") is None
    pool.add("Translate the sentence into French.", generated=True)
    # the pool grows: the kept instruction now rejects its own near-copy (LCS 5 of 5 and 6
    # tokens: P = 5/6, R = 1, F1 = 10/11 = 0.909)
    assert pool.rouge("Translate the sentence into French, please.") == pytest.approx(10 / 11)
    assert pool.novel("translate  the sentence into french.") == "duplicate"  # case, spacing
    assert pool.generated == ["Translate the sentence into French."]


@pytest.mark.unit
def test_validity_checks_and_candidate_parsing() -> None:
    f = pipeline.check(pipeline_cfg())[1].filters  # the default settings: 3..150 words
    assert si.invalid("", f) == "empty"
    assert si.invalid("Summarize it.", f) == "length"  # 2 words
    assert si.invalid("Draw a cat with five legs.", f) == "keyword"
    assert si.invalid("Go to the store and buy milk.", f) == "keyword"  # a two-word keyword
    assert si.invalid("Describe the mapping of keys to values.", f) is None  # "map" as a word only
    assert si.invalid("- List three fruits.", f) == "start"
    assert si.invalid("¿Qué hora es ahora?", f) == "start"
    assert si.invalid("List three fruits.", f) is None
    text = " List three fruits.\nTask 10: Write a poem about rain.\n\nTask 11: Summar"
    assert si.parse_instructions(text, finished=False) == [
        ("List three fruits.", False),
        ("Write a poem about rain.", False),
        ("Summar", True),  # cut by max_new_tokens
    ]
    assert si.parse_instructions(text + "ize it.\n", finished=True)[-1] == ("Summarize it.", False)
    assert si.parse_instructions("\n \n", finished=True) == [("", False)]


@pytest.mark.unit
def test_seed_and_heldout_subtasks_are_disjoint_fixed_and_split_by_source() -> None:
    seeds, heldout = ni.subtask_split()
    names = ni.subtask_names()
    assert len(names) == 61 and len(seeds) >= 50 and len(seeds) + len(heldout) == 61
    assert not set(seeds) & set(heldout) and set(seeds) | set(heldout) == set(names)
    assert not {ni.source_of(n) for n in seeds} & {ni.source_of(n) for n in heldout}
    # fixed by SPLIT_SEED: a change here changes every dataset key and every held-out score
    assert {ni.source_of(n) for n in heldout} == {
        "quoref", "drop", "essential", "miscellaenous", "ropes",
    }  # fmt: skip
    assert len(heldout) == 11
    sub = ni.load_subtask(seeds[0])
    assert sub.instruction == 'Ask a question on "event duration" based on the provided sentence.'


@pytest.mark.unit
@pytest.mark.parametrize(
    ("override", "key", "valid"),
    [
        ("self_instruct.precision=auto", "self_instruct.precision", "'fp32'"),
        ("self_instruct.filters.min_words=200", "self_instruct.filters.min_words", "max_words"),
        ("self_instruct.instructions.top_p=0", "self_instruct.instructions.top_p", "> 0"),
        ("self_instruct.batch_size=0", "self_instruct.batch_size", "> 0"),
        ("self_instruct.seed_demos=60", "self_instruct.seed_demos", "<= 50"),
        ("+self_instruct.bogus=1", "self_instruct.bogus", "valid keys"),
        ("device=tpu", "device", "cuda"),
        ("model.kind=nope", "model.kind", "'gguf'"),
    ],
)
def test_bad_values_fail_before_a_model_loads(
    monkeypatch: pytest.MonkeyPatch, override: str, key: str, valid: str
) -> None:
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError) as e:
        pipeline.generate(pipeline_cfg(*TINY, override))
    assert key in str(e.value) and valid in str(e.value)


# ----------------------------------------------------------------------------- the pipeline


def counts_add_up(manifest: dict[str, Any]) -> None:
    c = manifest["counts"]
    for stage in ("instructions", "instances"):
        s = c[stage]
        assert s["generated"] == sum(s["dropped"].values()) + s["kept"], stage
    assert c["instances"]["generated"] == c["instructions"]["kept"]
    assert manifest["data"]["rows"] == c["instances"]["kept"]
    assert c["instructions"]["generated"] >= c["prompts"]  # every prompt yields a candidate


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The tiny pipeline run twice from scratch (two empty dataset folders), in seconds."""
    runs = []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("a", "b"):
            root = tmp_path_factory.mktemp(name)
            mp.setattr(store, "datasets_root", lambda root=root: root)
            runs.append((root, pipeline.generate(pipeline_cfg(*TINY))))
        mp.setattr(store, "datasets_root", lambda: runs[0][0])
        yield {"runs": runs}


def test_pipeline_is_deterministic_and_its_counts_add_up(tiny_dataset: dict[str, Any]) -> None:
    (root, a), (_, b) = tiny_dataset["runs"]
    assert a["key"] == b["key"] == store.dataset_key(*_key_parts(pipeline_cfg(*TINY)))
    assert a["data"]["sha256"] == b["data"]["sha256"] and a["counts"] == b["counts"]
    counts_add_up(a)
    assert a["counts"]["instances"]["kept"] >= 4 and a["target_reached"]  # tiny: 4 examples
    rows = [json.loads(x) for x in (root / a["key"] / store.DATA).read_text().splitlines()]
    assert len(rows) == a["data"]["rows"]
    assert all(set(r) == {"instruction", "input", "output"} and r["output"] for r in rows)
    seeds, heldout = ni.subtask_split()
    instructions = [r["instruction"] for r in rows]
    assert len(set(instructions)) == len(rows)
    assert not set(instructions) & {ni.load_subtask(n).instruction for n in seeds}
    assert a["seed_tasks"] == list(seeds) and a["heldout_tasks"] == list(heldout)
    g = a["generator"]
    assert g["model"]["name"] == "tiny-random" and g["settings"]["seed"] == 0
    assert a["code"]["sha256"] and "git_sha" in a["code"]


def _key_parts(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return cfg["self_instruct"], cfg["model"]


def test_a_generated_dataset_is_reused_and_checked(
    tiny_dataset: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    (root, a), _ = tiny_dataset["runs"]
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("generated again"))
    assert pipeline.generate(pipeline_cfg(*TINY))["created_at"] == a["created_at"]
    data = root / a["key"] / store.DATA
    data.write_text(data.read_text() + '{"instruction": "x", "input": "", "output": "y"}\n')
    try:
        with pytest.raises(ValueError, match="sha256"):
            store.read(a["key"])
    finally:
        data.write_text("".join(data.read_text().splitlines(keepends=True)[:-1]))
    assert store.read(a["key"])[1]["data"]["sha256"] == a["data"]["sha256"]


# ----------------------------------------------------------------------------- the tasks


def test_both_tasks_build_with_disjoint_splits_and_one_evaluation(
    tiny_dataset: dict[str, Any],
) -> None:
    from bench import data

    (_, a), _ = tiny_dataset["runs"]
    small = {"n_train": 4, "n_val": 20, "n_test": 30}
    gen = data.build(task_cfg("self_instruct", dataset=a["key"], **small))
    human = data.build(task_cfg("natural_instructions", **small))
    seeds, heldout = ni.subtask_split()
    for task in (gen, human):
        assert {k: len(v) for k, v in task.splits.items()} == {
            "train": 4, "validation": 20, "test": 30,
        }  # fmt: skip
        prompts = {k: {e.prompt for e in v} for k, v in task.splits.items()}
        assert not prompts["train"] & prompts["validation"]
        assert not prompts["train"] & prompts["test"]
        assert not prompts["validation"] & prompts["test"]
        for e in task.splits["test"]:
            assert 0.0 <= task.score("no idea", e.references) <= 1.0
            assert task.score(e.answer, e.references) == 1.0
        assert task.metric == "rougeL" and task.info["multi_reference"]
    assert gen.splits["test"] == human.splits["test"]  # one evaluation for both data sources
    assert gen.splits["validation"] == human.splits["validation"]
    assert {e.subtask for e in human.splits["test"]} <= set(heldout)
    assert {e.subtask for e in human.splits["validation"]} <= set(heldout)
    assert {e.subtask for e in human.splits["train"]} <= set(seeds)
    assert a["key"] in gen.source and "tiny-random" in gen.license
    with pytest.raises(ValueError, match=r"task\.n_train=999"):
        data.build(task_cfg("self_instruct", dataset=a["key"], **{**small, "n_train": 999}))


def test_records_carry_the_manifest_and_one_test_fingerprint(tiny_dataset: dict[str, Any]) -> None:
    """What the report reads: the self_instruct task's record block holds the manifest's key,
    hash and counts and the diversity of the seeds, the pool and the trained-on instructions;
    both tasks' test splits have one fingerprint."""
    from bench import data
    from bench.run import task_block

    (_, a), _ = tiny_dataset["runs"]
    small = {"n_train": 4, "n_val": 20, "n_test": 30}
    gen = task_block(data.build(task_cfg("self_instruct", dataset=a["key"], **small)))
    human = task_block(data.build(task_cfg("natural_instructions", **small)))
    assert gen["test_sha256"] == human["test_sha256"] and human["dataset"] is None
    s = gen["dataset"]
    assert (s["key"], s["sha256"], s["counts"]) == (a["key"], a["data"]["sha256"], a["counts"])
    assert s["trained"] == 4 and s["rows"] == a["data"]["rows"] >= s["usable"] >= 4
    div = s["diversity"]
    assert div["pool"] == a["diversity"] and div["pool"]["n"] == a["counts"]["instructions"]["kept"]
    assert div["train"]["n"] == 4 and div["seeds"]["n"] == len(a["seed_tasks"])
    for d in div.values():
        assert sum(d["rouge_vs_seeds"]["counts"]) == d["n"]
    # the novelty filter held every kept instruction below its threshold against the seeds
    assert sum(div["pool"]["rouge_vs_seeds"]["counts"][7:]) == 0
    other = task_block(data.build(task_cfg("natural_instructions", **{**small, "n_test": 29})))
    assert other["test_sha256"] != human["test_sha256"]


@pytest.mark.unit
def test_rouge_l_score_by_hand() -> None:
    # stemmed tokens: "the cat sat" vs "the cat sat on the mat": LCS 3, P = 1, R = 3/6,
    # F1 = 2 * 0.5 / 1.5 = 2/3; the best of several references counts; first line only
    assert ni.rouge_l("The cat sat.\nThe end", "the cat sat on the mat") == pytest.approx(2 / 3)
    assert ni.rouge_l("the cat sat", ["a dog", "the cat sat"]) == 1.0
    assert ni.rouge_l("", "the cat") == 0.0


@pytest.mark.unit
def test_task_configs_share_the_evaluation_and_pin_the_default_dataset() -> None:
    human, gen = task_cfg("natural_instructions"), task_cfg("self_instruct")
    own = {"name", "dataset"}
    assert {k: v for k, v in gen.items() if k not in own} == {
        k: v for k, v in human.items() if k not in own
    }
    default = pipeline_cfg("self_instruct=default", "model=smollm2-135m")
    assert gen["dataset"] == store.dataset_key(*_key_parts(default))


# ----------------------------------------------------------------------------- the study


@pytest.mark.unit
def test_study_sweep_compares_the_data_sources_at_equal_size(tmp_path: Path) -> None:
    import re
    from collections import Counter

    from bench import results
    from tests.test_studies import study_jobs

    jobs = study_jobs("study_self_instruct", tmp_path)
    text = (CONF / "sweep" / "study_self_instruct.yaml").read_text()
    stated = re.search(r"^# runs: (\d+) ", text, re.M)
    assert stated and int(stated.group(1)) == len(jobs) == 12
    cells = Counter((c.raw["method"]["name"], c.raw["task"]["name"]) for c in jobs)
    assert cells == {
        (m, t): 3 for m in ("lora", "full") for t in ("self_instruct", "natural_instructions")
    }
    assert {c.raw["seed"] for c in jobs} == {0, 1, 2}
    assert {c.raw["task"]["n_train"] for c in jobs} == {311}  # equal size: the pool generated
    assert {c.raw["model"]["name"] for c in jobs} == {"smollm2-135m"}
    assert {(c.raw["method"]["name"], c.lr) for c in jobs} == {("lora", 1e-3), ("full", 1e-4)}
    assert all(c.raw["eval_scope"] == "all" and c.raw["eval"]["enabled"] for c in jobs)
    assert len({results.run_id(c.raw) for c in jobs}) == 12
    assert pipeline.check(pipeline_cfg())[1].n_examples == 320  # target; 311 made


@pytest.mark.unit
@pytest.mark.parametrize(("method", "lr"), [("lora", 1e-3), ("full", 1e-4)])
def test_study_rates_are_the_default_sweeps_squad_shifts_choice(method: str, lr: float) -> None:
    """The study's fixed rates: what the default sweep chose (seed 0, lowest validation loss
    over the method's grid) on squad_shifts, the cell with the same budget and sequence length."""
    points = {}
    for p in (CONF.parent / "results" / "default").glob(  # what the YAML headers state
        f"{method}__smollm2-135m__squad_shifts__s0__*"
    ):
        r = json.loads(p.read_text())
        val = (r.get("validation") or {}).get("loss_after")
        if r["status"] == "success" and val is not None:
            points[r["config"]["lr_index"]] = (val, r["config"]["train"]["lr"])
    # the committed reference holds every grid point: a missing one fails, not skips
    assert len(points) == 3, f"results/default holds {len(points)} of {method}'s 3 seed-0 points"
    assert min(points.values())[1] == lr
