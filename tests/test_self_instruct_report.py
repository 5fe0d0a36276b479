"""The report's Self-Instruct sections (issue 18): the pipeline's yield and the diversity
statistics on hand-worked numbers, and the generated verdict against human data, which follows
the numbers, refuses to pair different test examples and leaves out runs that failed to learn.

Every record here is a SYNTHETIC TEST FIXTURE (schema-valid, invented numbers): never copy it
into results/ or reports/.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from bench.data import self_instruct as store
from bench.report import build_report
from bench.report.frame import frame_of
from bench.report.prepare import prepare
from bench.report.sections import self_instruct as S
from bench.report.sections import self_instruct_yield as Y
from tests.test_report import fixture_record, read_csv, write_folder

pytestmark = pytest.mark.unit  # synthetic records only: no model weights

T_975_2 = 4.302652729911275  # Student t quantile, 0.975, 2 degrees of freedom
N = 10  # test examples
BASE = [0.1] * N  # the base model's ROUGE-L per test example

# Instructions and seeds worked by hand (rouge_score tokens: lower-case [a-z0-9] words):
TEXTS = ["Write a poem.", "Write a story about a cat.", "List three fruits."]
SEEDS = ["Write a story about a dog."]


def summary() -> dict[str, Any]:
    """A SYNTHETIC dataset summary as the self_instruct task writes into task_info.dataset."""
    div = store.diversity(TEXTS, SEEDS)
    return {
        "key": "abc123def456", "version": 1, "sha256": "0" * 64, "generator": "tiny-random",
        "n_examples": 16, "rouge_threshold": 0.7, "rounds": 4, "target_reached": True,
        "counts": {
            "prompts": 16,
            "instructions": {"generated": 40, "kept": 20, "dropped": {
                "truncated": 4, "empty": 1, "length": 3, "keyword": 2, "start": 1,
                "duplicate": 3, "rouge": 6}},
            "instances": {"generated": 20, "kept": 16,
                          "dropped": {"truncated": 2, "empty_output": 1, "length": 1}},
        },
        "rows": 16, "usable": 12, "trained": 10,
        "diversity": {"seeds": store.diversity(SEEDS, SEEDS), "pool": div, "train": div},
    }  # fmt: skip


def run(method: str, task: str, seed: int, after: list[float], *, forget: float, rep: float,
        flags: list[str] | None = None, sha: str = "a" * 64) -> dict[str, Any]:  # fmt: skip
    """A SYNTHETIC instruction-task record: ROUGE-L per test example after training (before:
    BASE), general-text bits per byte after − before, seq-rep-4 after (before: 0.2)."""
    rec = fixture_record(method, "smollm2-135m", task, seed, label=method)
    rec["run_id"] = f"{method}-{task}-s{seed}"
    side = {"before": BASE, "after": after}
    q = rec["quality"]
    q["per_example"] = {k: {"score": v, "bits": [2.0] * N, "bytes": [2] * N, "pred": ["x"] * N}
                        for k, v in side.items()}  # fmt: skip
    q |= {"metric": "rougeL", "before": sum(BASE) / N, "after": sum(after) / N, "n_test": N}
    rec["task_info"] |= {"name": task, "metric": "rougeL", "n_test": N, "test_sha256": sha,
                         "dataset": summary() if task == S.SI else None}  # fmt: skip
    rec["forgetting"]["nll_bpb_delta"] = forget
    rec["repetition"]["before"]["seq_rep_4"] = 0.2
    rec["repetition"]["after"]["seq_rep_4"] = rep
    rec["flags"] = flags or []
    rec["config"]["eval"] = {"enabled": True}
    return rec


HUMAN_FORGET, SI_FORGET = (0.10, 0.12, 0.14), (0.20, 0.23, 0.23)  # per seed 0, 1, 2


def sweep(si_after: list[float], *, si_rep: float = 0.25, **over: Any) -> list[dict[str, Any]]:
    """LoRA on both tasks, 3 seeds: human data scores 0.5 on every example, self-instruct
    `si_after`; forgetting as HUMAN_FORGET / SI_FORGET; seq-rep-4 0.2 -> 0.2 (human) and
    -> si_rep (self-instruct)."""
    recs = []
    for s in range(3):
        recs.append(run("lora", S.HUMAN, s, [0.5] * N, forget=HUMAN_FORGET[s], rep=0.2))
        recs.append(run("lora", S.SI, s, si_after, forget=SI_FORGET[s], rep=si_rep, **over))
    return recs


def sentences(recs: list[dict[str, Any]]) -> list[str]:
    sec = S.self_instruct_sections(prepare(frame_of(recs)))[1]
    return [b for b in sec.blocks if isinstance(b, str)] + [
        x for b in sec.blocks if isinstance(b, list) for x in b
    ]


# ------------------------------------------------------------------------------ yield


def test_diversity_by_hand() -> None:
    """Tokens: [write a poem], [write a story about a cat], [list three fruits]: 12 unigrams,
    9 distinct (distinct-1 0.75); 9 bigrams, "write a" twice (distinct-2 8/9); leading words
    write 2, list 1. ROUGE-L F1 against "write a story about a dog": "write a poem" LCS 2, P
    2/3, R 2/6, F1 4/9; "...cat" LCS 5 of 6 and 6, F1 5/6; "list three fruits" 0. Bins: 0, 4
    (0.444) and 8 (0.833); mean (4/9 + 5/6) / 3, median 4/9."""
    d = store.diversity(TEXTS, SEEDS)
    assert (d["n"], d["distinct"], d["leading_words"]) == (3, 3, 2)
    assert d["top_leading"] == [["write", 2], ["list", 1]]
    assert d["distinct_1"] == pytest.approx(0.75) and d["distinct_2"] == pytest.approx(8 / 9)
    r = d["rouge_vs_seeds"]
    assert r["counts"] == [1, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    assert r["mean"] == pytest.approx((4 / 9 + 5 / 6) / 3) and r["median"] == pytest.approx(4 / 9)
    # against seeds other than itself: a set of seeds is scored leave-one-out, and 0.7 = 7/10
    # lands in bin 7 (not a float a hair below it)
    own = store.diversity(["a b c d e f g h i j", "a b c d e f g x y z"], ["a b c d e f g h i j"])
    assert own["rouge_vs_seeds"]["counts"][0] == 1 and own["rouge_vs_seeds"]["counts"][7] == 1
    assert store.diversity([], SEEDS)["distinct_1"] is None


def test_yield_rows_and_sentence_by_hand() -> None:
    s = summary()
    rows = {(a, b): (k, x) for a, b, k, x in Y.yield_rows(s)}
    assert rows["instructions", "kept"] == (20, 0.5)  # 20 of 40
    assert rows["instructions", "dropped: rouge"] == (6, 6 / 40)
    assert rows["instances", "kept"] == (16, 0.8)  # 16 of the 20 kept instructions
    assert rows["task", "within the task's length limits"] == (12, 0.75)  # of the 16 rows
    assert rows["task", "trained on (task.n_train)"] == (10, pytest.approx(10 / 12))
    assert Y.counts_problems(s) == []
    assert Y.yield_sentence(s) == (
        "Dataset abc123def456 (generator tiny-random, 4 rounds, 16 prompts; target 16 examples "
        "reached): 20 of 40 candidate instructions kept (50.0%; most dropped: rouge 6, "
        "truncated 4, duplicate 3); 16 of 20 instances kept (80.0%); 12 fit the task's length "
        "limits, 10 trained on."
    )
    bad = copy.deepcopy(s)
    bad["counts"]["instructions"]["kept"] = 21
    assert Y.counts_problems(bad) == [
        "instructions: generated 40 != dropped 20 + kept 21",
        "instances generated 20 != instructions kept 21",
    ]


# ------------------------------------------------------------------------------ the verdict


def test_verdict_hand_worked_and_follows_the_numbers() -> None:
    """Self-instruct 0.3 on every example, human 0.5: d = -0.2 everywhere, so the bootstrap
    interval is [-0.2, -0.2] and the exact sign-flip p is 2 / 2^10 = 0.002. Against the base
    (0.1 everywhere): +0.2 (self-instruct) and +0.4 (human) on every example. Forgetting per
    seed: human 0.10, 0.12, 0.14 (mean 0.12, sd 0.02, half-width
    4.303 * 0.02 / sqrt 3 = 0.050), self-instruct 0.20, 0.23, 0.23; differences 0.10, 0.11,
    0.09 (mean 0.10, sd 0.01, half 0.025). Seq-rep-4 0.2 -> 0.25 on every self-instruct run
    and unchanged for human: +0.05 with no spread."""
    worse = sentences(sweep([0.3] * N))
    assert (
        "smollm2-135m: is self-generated data worth human data of equal size on the held-out "
        "tasks (ROUGE-L, 95% interval)? lora: human data is better." in worse
    )
    (line,) = [s for s in worse if s.startswith("lora: ")]
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert f"{0.10 - half:+.3f}" == "+0.075" and f"{0.10 + half:+.3f}" == "+0.125"
    assert line == (
        "lora: Self-instruct − human data Δ ROUGE-L -0.200 [-0.200, -0.200], human data is "
        "better (p=0.002, n=3 seeds × 10 examples); against the base, self-instruct +0.200 "
        "[+0.200, +0.200] (above the base), human +0.400 [+0.400, +0.400] (above the base). "
        "Forgetting, Δ general bits/byte (after − before): self-instruct +0.220 [+0.177, "
        "+0.263] (above the base), human +0.120 [+0.070, +0.170] (above the base); "
        "self-instruct − human +0.100 [+0.075, +0.125], self-instruct data forgets more (n=3 "
        "seeds). Repetition, Δ seq-rep-4 (after − before): self-instruct +0.050 [+0.050, "
        "+0.050] (above the base), human +0.000 [+0.000, +0.000] (not distinguishable from "
        "the base); self-instruct − human +0.050 [+0.050, +0.050], self-instruct data repeats "
        "more (n=3 seeds)."
    )
    better = sentences(sweep([0.7] * N, si_rep=0.2))
    assert any(s.endswith("lora: self-instruct data is better.") for s in better)
    (line,) = [s for s in better if s.startswith("lora: ")]
    assert "Δ ROUGE-L +0.200 [+0.200, +0.200], self-instruct data is better (p=0.002" in line
    assert "self-instruct − human +0.000 [+0.000, +0.000], not distinguishable (n=3" in line
    # ±0.25 around human's 0.5 (exact in binary), alternating: mean difference 0, every sign
    # pattern's |mean| is >= 0 (p = 1), and the interval covers 0
    same = sentences(sweep([0.75, 0.25] * (N // 2)))
    assert any(s.endswith("lora: not distinguishable.") for s in same)
    (line,) = [s for s in same if s.startswith("lora: ")]
    assert "Δ ROUGE-L +0.000 [" in line and "], not distinguishable (p=1, n=3 seeds" in line


def test_different_test_examples_are_not_paired() -> None:
    recs = sweep([0.3] * N)
    recs[0]["task_info"]["test_sha256"] = "b" * 64  # one human run scored other examples
    out = sentences(recs)
    (line,) = [s for s in out if s.startswith("lora: ")]
    assert line.startswith("lora: ROUGE-L not paired: the test examples differ (aaaaaaaaaaaa, "
                           "bbbbbbbbbbbb); against the base")  # fmt: skip
    assert any(s.endswith("lora: not compared.") for s in out)
    # records without a fingerprint cannot be checked, so they are not paired either
    for r in recs:
        r["task_info"]["test_sha256"] = None
    (line,) = [s for s in sentences(recs) if s.startswith("lora: ")]
    assert "ROUGE-L not paired: a record does not state its test split's fingerprint" in line


def test_runs_that_failed_to_learn_are_left_out_not_ranked() -> None:
    recs = sweep([0.3] * N)
    recs[5]["flags"] = ["val_loss_rose"]  # self-instruct, seed 2
    (line,) = [s for s in sentences(recs) if s.startswith("lora: ")]
    assert line.startswith(
        "lora: left out, failed to learn: self_instruct seed 2 (val_loss_rose). "
        "Self-instruct − human data Δ ROUGE-L -0.200"
    )
    assert "(p=0.002, n=2 seeds × 10 examples)" in line
    for r in recs[1::2]:  # every self-instruct run
        r["flags"] = ["val_loss_rose"]
    out = sentences(recs)
    assert any(s.endswith("lora: not compared (failed to learn).") for s in out)
    assert (
        "lora: not compared: self_instruct seeds 0, 1, 2 (val_loss_rose) failed to learn, "
        "listed under 'Runs that failed to learn' and not ranked." in out
    )


def test_report_has_the_sections_only_with_instruction_runs(tmp_path: Path) -> None:
    recs = sweep([0.3] * N)
    out = build_report(write_folder(tmp_path / "si", recs), tmp_path / "si_report")
    md = (out / "report.md").read_text()
    assert "## Self-Instruct data: yield and diversity" in md
    assert "## Self-Instruct data against human data" in md
    assert "every run of both tasks scored the same 10 test examples" in md
    rows = read_csv(out / "tables" / "self-instruct-yield-abc123def456.csv")
    assert [(r["outcome"], r["count"]) for r in rows if r["stage"] == "instances"][-1] == (
        "kept", "16",
    )  # fmt: skip
    div = {
        r["set"]: r for r in read_csv(out / "tables" / "self-instruct-diversity-abc123def456.csv")
    }
    assert float(div["pool"]["distinct_2"]) == pytest.approx(8 / 9)
    assert (out / "figures" / "self-instruct-rouge-abc123def456.png").exists()
    vs = read_csv(out / "tables" / "self-instruct-vs-human-smollm2-135m.csv")
    assert [(r["method"], r["data"]) for r in vs] == [
        ("base", "none"), ("lora", "self_instruct"), ("lora", "natural_instructions"),
    ]  # fmt: skip
    assert float(vs[1]["vs_base"]) == pytest.approx(0.2)
    human = [r for r in recs if r["task"] == S.HUMAN]  # human data only: nothing to pair
    yielded, verdict = S.self_instruct_sections(prepare(frame_of(human)))
    assert "no self_instruct runs here" in yielded.blocks[0].text  # type: ignore[union-attr]
    assert "nothing to compare" in verdict.blocks[-1].text  # type: ignore[union-attr]
    plain = [fixture_record("lora", "smollm2-135m", "arith", s) for s in (0, 1)]
    out = build_report(write_folder(tmp_path / "plain", plain), tmp_path / "plain_report")
    assert "Self-Instruct" not in (out / "report.md").read_text()
