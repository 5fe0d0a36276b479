"""bench/metrics: hand-worked metric values, agreement with lm-eval, adapters active/disabled.

Tiny random Llama + the character tokenizer: seconds, offline (assets come from the cache)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
import torch
import yaml

from bench.methods import ConfigError
from bench.metrics import evaluate_general, forgetting_summary, measure_inference
from bench.metrics import hallucination as hal
from bench.metrics import repetition as rep
from bench.metrics._util import continue_ids
from bench.metrics.nll import (
    PassageScore,
    heldout_documents,
    heldout_texts,
    score_passages,
    summarize,
)
from bench.metrics.probes import probe_file
from bench.metrics.settings import EvalSettings, as_dict, available_probes, parse
from tests.conftest import CONF, compose

TEXTS = [
    "the cat sat on the mat. the dog sat on the log.",
    "it was a bright cold day in april, and the clocks were striking thirteen.",
    "call me ishmael.",
]


def tiny_model(seed: int = 0) -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.models import char_tokenizer

    tok = char_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,  # peaked, context-sensitive outputs: adapters visibly matter
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(cfg).eval(), tok


def peft_model(kind: str, seed: int = 0) -> tuple[Any, Any]:
    """A tiny model with a non-trivial adapter (LoRA B non-zero, random prompts)."""
    from peft import (
        LoraConfig,
        PrefixTuningConfig,
        PromptEncoderConfig,
        PromptTuningConfig,
        get_peft_model,
    )

    model, tok = tiny_model(seed)
    cfg = {
        "lora": lambda: LoraConfig(
            r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        ),
        "prompt_tuning": lambda: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5),
        "ptuning_v1": lambda: PromptEncoderConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=5, encoder_hidden_size=16
        ),
        "prefix_tuning": lambda: PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=5,
            prefix_projection=True,
            encoder_hidden_size=16,
        ),
    }[kind]()
    torch.manual_seed(seed + 1)
    pm = get_peft_model(model, cfg).eval()
    if kind == "prefix_tuning":  # the MLP's default init gives a near-zero prefix; make it count
        with torch.no_grad():
            for p in pm.prompt_encoder.parameters():
                p.normal_(0, 1.0)
    return pm, tok


def tiny_eval_cfg(**sections: dict[str, Any]) -> dict[str, Any]:
    ev = compose(["eval=tiny"])["eval"]
    for k, v in sections.items():
        ev[k].update(v)
    return ev


# ----------------------------------------------------------------------------- repetition


def test_seq_rep_and_distinct_hand_worked() -> None:
    s = [1, 2, 3, 1, 2, 3, 1, 2]
    # 4-grams: 1231 2312 3123 1231 2312 -> 5 total, 3 unique
    assert rep.seq_rep_n(s, 4) == pytest.approx(1 - 3 / 5)
    assert rep.seq_rep_n(s, 1) == pytest.approx(1 - 3 / 8)
    assert rep.seq_rep_n([1, 2, 3], 4) is None
    # distinct_2 pooled: 7 bigrams of s ({12, 23, 31}) + (4,4) = 8 total, 4 unique; no (2,4)
    assert rep.distinct_n([s, [4, 4]], 2) == pytest.approx(4 / 8)
    assert rep.distinct_n([s, [4, 4]], 1) == pytest.approx(4 / 10)
    out = rep.sequence_level([s, [4, 4, 4, 4, 4]], tail=4, max_period=2)
    # seq_rep_4 of [4]*5: two 4-grams, one unique -> 0.5; mean with 0.4
    assert out["seq_rep_4"] == pytest.approx((0.4 + 0.5) / 2)
    assert out["loop_share"] == pytest.approx(0.5)  # [4]*5 loops; s ends 2,3,1,2: period 3 > 2


def test_degeneration_ranks_collapse_as_repetitive() -> None:
    """The headline must not reward a model that says the same thing to every prompt. Three
    models, 4 prompts, 8 tokens each:
    - varied: distinct texts, nothing repeated: seq_rep_4 = 0; bigrams 28, unique 28 -> 0.
    - same: one repeat-free string for all 4: seq_rep_4 = 0 (what the old headline ranked best),
      but distinct_2 = 7 unique / 28 = 0.25 -> degeneration 0.75, same_share 1.0: flagged.
    - loop: each continuation one token 8 times: seq_rep_4 = 1 - 1/5 = 0.8, and 4 unique of 28
      pooled bigrams -> 1 - 4/28 = 0.857 = degeneration -> flagged."""
    varied = [list(range(10 * i, 10 * i + 8)) for i in range(4)]
    same = [list(range(8))] * 4
    loop = [[i] * 8 for i in range(4)]
    v, s_, lp = (rep.sequence_level(x, tail=4, max_period=2) for x in (varied, same, loop))
    assert v["degeneration"] == pytest.approx(0.0) and not v["degenerate"]
    assert s_["seq_rep_4"] == pytest.approx(0.0)
    assert s_["distinct_2"] == pytest.approx(7 / 28)
    assert s_["degeneration"] == pytest.approx(0.75) and s_["same_share"] == 1.0
    assert s_["degenerate"]
    assert lp["seq_rep_4"] == pytest.approx(0.8) and lp["degeneration"] == pytest.approx(1 - 4 / 28)
    assert lp["degenerate"] and lp["loop_share"] == 1.0
    assert v["degeneration"] < s_["degeneration"] and v["degeneration"] < lp["degeneration"]


def test_loop_detection() -> None:
    span = [7, 8, 9]
    looping = [1, 2, 3, 4, 5] + span * 11  # tail of 32 starts mid-span: still periodic
    assert rep.is_loop(looping, tail=32, max_period=8)
    assert not rep.is_loop(looping, tail=32, max_period=2)
    nine = list(range(9)) * 4  # period 9 > 8
    assert not rep.is_loop(nine, tail=32, max_period=8)
    assert rep.is_loop(nine, tail=18, max_period=9)
    assert not rep.is_loop(list(range(40)), tail=32, max_period=8)
    assert not rep.is_loop(span * 5, tail=32, max_period=8)  # 15 tokens < tail: never a loop
    broken = [5, 6] * 16
    broken[10] = 9
    assert rep.is_loop([5, 6] * 16, tail=32, max_period=2) and not rep.is_loop(broken, tail=32)


def test_rep_l_hand_worked() -> None:
    targets = [5, 6, 5, 7, 6]
    preds = [6, 5, 5, 6, 9]
    # l=2: t=1 p=5 in [5] wrong; t=2 p=5 in [5,6] right; t=3 p=6 in [6,5] wrong; t=0,4 no
    assert rep.rep_counts(targets, preds, 2) == (3, 2, 5)
    # l=1: only t=1 (p=5, window [5])
    assert rep.rep_counts(targets, preds, 1) == (1, 1, 5)
    pooled = rep.token_level([(targets, preds), ([1, 1], [1, 1])], [2])
    # second passage: t=1 p=1 in [1], right -> rep only; 4 reps, 2 wrong of 7 positions
    assert pooled == {"rep_2": pytest.approx(4 / 7), "wrep_2": pytest.approx(2 / 7)}
    with pytest.raises(ValueError):
        rep.rep_counts([1, 2], [1], 2)


# ----------------------------------------------------------------------------- hallucination


@pytest.mark.parametrize(
    "answer",
    [
        "unknown",
        "Unknown.",
        "I don't know",
        "I do not know.",
        "I\u2019m not sure",
        "No idea",
        "It cannot be determined",
        "There is no such country",
        "That element does not exist",
        "n/a",
        "UNKNOWN",
    ],
)
def test_abstention_positive(answer: str) -> None:
    assert hal.is_abstention(hal.first_line(answer))


@pytest.mark.parametrize(
    "answer", ["Paris", "It is well known", "Canberra", "Fe", "knowledge", "nowhere", "Known"]
)
def test_abstention_negative(answer: str) -> None:
    assert not hal.is_abstention(answer)


def test_answer_parsing_and_classes() -> None:
    cap = hal.Question("What is the capital of France?", "capital", "Paris")
    el = hal.Question("What is the chemical symbol of the element Iron?", "element", "Fe")
    una = hal.Question("What is the capital of Zorbia?", "invented_country", None)
    assert hal.first_line('  "Paris, France."\nQ: next') == "Paris, France"
    assert hal.classify(hal.first_line(" Paris, France.\nQ: x"), cap) == "correct"
    assert hal.classify("Lyon", cap) == "hallucinated"
    assert hal.classify("Par\u00eds", cap) == "correct"  # accents folded
    assert hal.classify("Parisian", cap) == "hallucinated"  # whole words only
    assert hal.classify("unknown", cap) == "abstained"
    assert hal.classify(hal.first_line(" ..\n"), cap) == "empty"
    assert hal.classify("Fe", el) == "correct"
    assert hal.classify("The symbol is Fe", el) == "correct"
    assert hal.classify("fe", el) == "hallucinated"  # symbols are case-sensitive
    assert hal.classify("Iron", el) == "hallucinated"
    assert hal.classify("Zorbia City", una) == "hallucinated"
    assert hal.classify("I don't know", una) == "abstained"
    r = hal.rates(["correct", "abstained", "hallucinated", "hallucinated"], answerable=True)
    assert r == {
        "n": 4,
        "accuracy": 0.25,
        "abstention_rate": 0.25,
        "hallucination_rate": 0.5,
        "empty_rate": 0.0,
    }


def test_fact_tables_and_questions() -> None:
    table = hal.element_table()
    assert len(table) == 118 and table[0] == ("Hydrogen", "H") and table[-1][1] == "Og"
    assert ("Iron", "Fe") in table
    from bench.metrics.probes import capital_split, capital_table

    assert ("France", "Paris") in capital_table()
    probe, held = capital_split()
    assert not set(probe) & set(held)
    assert len(hal.known_unknowns()) == 23
    qs = hal.questions(n_capitals=3, n_elements=3, n_known_unknowns=3, n_invented=4, seed=0)
    assert [q.kind for q in qs].count("invented_country") == 2 and len(qs) == 13
    assert qs == hal.questions(n_capitals=3, n_elements=3, n_known_unknowns=3, n_invented=4, seed=0)
    real = {c.lower() for c, _ in capital_table()} | {n.lower() for n, _ in table}
    fakes = [q.text.rsplit(" ", 1)[1].rstrip("?").lower() for q in qs if q.kind.startswith("inv")]
    assert fakes and not set(fakes) & real
    assert all(q.gold is None for q in qs if not q.kind.startswith(("capital", "element")))


# ----------------------------------------------------------------------------- settings


def test_default_yaml_matches_schema_and_tiny_composes() -> None:
    default = yaml.safe_load((CONF / "eval" / "default.yaml").read_text())
    assert default == as_dict(EvalSettings())
    s = parse(compose(["eval=tiny"])["eval"])
    assert s.nll.n_passages < 20 and s.probes.limit is not None and s.probes.limit <= 10
    assert parse(compose(["eval=off"])["eval"]).enabled is False
    assert set(EvalSettings().probes.tasks) <= set(available_probes())


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"nll": {"n_pasages": 3}}, "eval.nll: unknown key(s) ['n_pasages']"),
        ({"probes": {"tasks": ["mmlu"]}}, "eval.probes.tasks: unknown probe(s) ['mmlu']"),
        ({"repetition": {"max_new_tokens": 0}}, "eval.repetition.max_new_tokens=0"),
        ({"inference": {"merged": "yes"}}, "eval.inference.merged='yes'"),
        ({"repetition": {"loop_max_period": 20}}, "loop_max_period"),
        ({"repetition": {"tf_tokens": 100}}, "eval.repetition.tf_tokens=100"),
    ],
)
def test_bad_settings_name_the_key(override: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(override)
    assert needle in str(e.value)
    if "unknown probe" in needle:
        assert all(p in str(e.value) for p in available_probes())


# ----------------------------------------------------------------------------- NLL vs lm-eval


def _instances(texts: list[str]) -> list[Any]:
    from lm_eval.api.instance import Instance

    return [
        Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
        for i, t in enumerate(texts)
    ]


@pytest.mark.parametrize("kind", ["base", "prompt_tuning", "prefix_tuning"])
def test_nll_matches_lm_eval_rolling(kind: str) -> None:
    """Our per-passage NLL sums equal lm-eval's loglikelihood_rolling (texts fit the context;
    add_bos_token=False: lm-eval then prepends its prefix token, BOS, exactly like us)."""
    from lm_eval.models.huggingface import HFLM

    model, tok = tiny_model() if kind == "base" else peft_model(kind)
    ours = score_passages(model, tok, TEXTS, max_tokens=1000, batch_size=2)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=2, add_bos_token=False)
    theirs = lm.loglikelihood_rolling(_instances(TEXTS), disable_tqdm=True)
    for s, ll, text in zip(ours, theirs, TEXTS, strict=True):
        assert len(s.targets) == len(text)  # character tokenizer: one token per character
        assert sum(s.nll) == pytest.approx(-ll, rel=1e-4, abs=1e-3)
    summ = summarize(ours)
    assert summ["nll"] == pytest.approx(-sum(theirs) / sum(len(t) for t in TEXTS), rel=1e-4)
    # character tokenizer on ASCII text: one byte per token, so bpb = nll / ln 2
    assert summ["n_bytes"] == summ["n_tokens"] == sum(len(t) for t in TEXTS)
    assert summ["bpb"] == pytest.approx(summ["nll"] / math.log(2), rel=1e-9)


def test_bits_per_byte_hand_worked() -> None:
    """Two passages: 3 tokens over 6 bytes with NLL 1+2+3 nats, 1 token of 2 bytes ("é") with
    ln 2 nats: bpb = (6 + ln 2) / ln 2 / 8 bytes; the per-token mean stays (6 + ln 2) / 4."""
    a = PassageScore([1, 2, 3], [1.0, 2.0, 3.0], [0, 0, 0], n_bytes=6)
    b = PassageScore([4], [math.log(2)], [0], n_bytes=2)
    s = summarize([a, b])
    assert s["bpb"] == pytest.approx((6 + math.log(2)) / math.log(2) / 8)
    assert s["nll"] == pytest.approx((6 + math.log(2)) / 4)
    assert s["n_bytes"] == 8 and s["n_tokens"] == 4


def test_nll_max_tokens_and_batching() -> None:
    model, tok = tiny_model()
    full = score_passages(model, tok, TEXTS, max_tokens=1000, batch_size=1)
    cut = score_passages(model, tok, TEXTS, max_tokens=10, batch_size=3)  # padded batch
    for f, c in zip(full, cut, strict=True):
        assert c.targets == f.targets[:10]
        assert c.nll == pytest.approx(f.nll[:10], abs=1e-4)
        assert c.preds == f.preds[:10]


def test_heldout_texts_spread_and_disjoint() -> None:
    nll = heldout_texts(200, part="nll")
    pre = heldout_texts(50, part="prefix")
    assert len(set(nll)) == 200 and not set(nll) & set(pre)
    assert heldout_texts(200, part="nll") == nll  # fixed
    from bench import corpora

    genre = {p: d[1] for d, ps in corpora.brown_documents().items() for p in ps}
    assert len({genre[p] for p in nll}) == 15  # all Brown genres (a..r), not just press
    docs = heldout_documents(16)
    assert len(set(docs)) == 16 and all(len(d) > 2000 for d in docs)  # long running text
    assert len({genre[d.split("\n\n", 1)[0]] for d in docs}) >= 10


# ----------------------------------------------------------------------------- probes via lm-eval


def _manual_loglik(model: Any, tok: Any, context: str, cont: str) -> float:
    """Adapter-active reference: one unpadded forward, the last positions are the real ones."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + cont, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([whole])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -len(whole) :].float()
    lp = torch.log_softmax(logits, -1)
    return sum(float(lp[t - 1, whole[t]]) for t in range(len(ctx), len(whole)))


@pytest.mark.parametrize("kind", ["prompt_tuning", "ptuning_v1", "prefix_tuning", "lora"])
def test_lm_eval_scores_with_adapter_active(kind: str) -> None:
    """HFLM on an in-memory peft model scores with the adapter (virtual tokens / prefixes) active:
    batched lm-eval loglikelihoods equal a single-sequence adapter-active forward, and differ from
    the adapter-disabled ones."""
    from lm_eval.api.instance import Instance

    from bench.metrics.probes import make_lm

    model, tok = peft_model(kind)
    pairs = [
        ("question: is it so?\nanswer:", " yes"),
        ("the capital of x is", " paris city"),
        ("a", " b"),
    ]
    reqs = [
        Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i)
        for i, p in enumerate(pairs)
    ]
    got = [ll for ll, _ in make_lm(model, tok, batch_size=3).loglikelihood(reqs, True)]
    want = [_manual_loglik(model, tok, c, x) for c, x in pairs]
    assert got == pytest.approx(want, abs=1e-4)
    with model.disable_adapter():
        base = [ll for ll, _ in make_lm(model, tok, batch_size=3).loglikelihood(reqs, True)]
        base_manual = [_manual_loglik(model, tok, c, x) for c, x in pairs]
    assert base == pytest.approx(base_manual, abs=1e-4)
    assert all(abs(a - b) > 1e-3 for a, b in zip(got, base, strict=True))


def test_probe_data_files() -> None:
    import json

    from bench.metrics.probes import load_probe, probe_file

    for name in available_probes():
        rows = [json.loads(x) for x in probe_file(name).read_text().splitlines()]
        assert len(rows) >= 60, name
        for r in rows:
            assert 0 <= r["label"] < len(r["choices"]) and len(set(r["choices"])) == len(
                r["choices"]
            )
        assert len(load_probe(name)["test"]) == len(rows)
    gk = [json.loads(x) for x in probe_file("general_knowledge").read_text().splitlines()]
    horses = next(r for r in gk if r["question"] == "How many legs do horses have?")
    assert horses["choices"][horses["label"]] == "four"
    wd = [json.loads(x) for x in probe_file("qa_wikidata").read_text().splitlines()]
    assert all(len(r["choices"]) == 4 for r in wd)


# ----------------------------------------------------------------------------- forgetting


def test_forgetting_summary_hand_worked() -> None:
    before = {"nll": 2.0, "probes": {"a": 0.5, "b": 0.0, "c": 0.8}, "nll_detail": {"bpb": 1.0},
              "probe_n": {"a": 200}, "probe_chance": {"a": 0.25}}  # fmt: skip
    after = {"nll": 2.5, "probes": {"a": 0.25, "b": 0.1, "c": 0.8}, "nll_detail": {"bpb": 1.25}}
    f = forgetting_summary(before, after)
    assert f["nll_delta"] == pytest.approx(0.5)
    assert f["nll_bpb_delta"] == pytest.approx(0.25) and f["nll_bpb_before"] == 1.0
    assert f["probes"]["a"] == {"before": 0.5, "after": 0.25, "relative_drop": 0.5, "n": 200,
                                "chance": 0.25}  # fmt: skip
    assert f["probes"]["b"]["relative_drop"] is None  # before = 0: undefined
    assert f["mean_relative_drop"] == pytest.approx((0.5 + 0.0) / 2)
    empty = forgetting_summary({"nll": None, "probes": None}, {"nll": None, "probes": None})
    assert empty["nll_delta"] is None and empty["mean_relative_drop"] is None


@pytest.mark.parametrize("kind", ["lora", "prompt_tuning"])
def test_forgetting_is_zero_with_adapter_disabled(kind: str) -> None:
    ev = tiny_eval_cfg(repetition={"enabled": False}, hallucination={"enabled": False})
    base, tok = tiny_model()
    before = evaluate_general(base, tok, ev)
    model, tok = peft_model(kind)  # same seed: the same base weights
    with model.disable_adapter():
        same = evaluate_general(model, tok, ev)
    f = forgetting_summary(before, same)
    assert f["nll_delta"] == 0.0 and f["mean_relative_drop"] == 0.0
    active = evaluate_general(model, tok, ev)
    assert forgetting_summary(before, active)["nll_delta"] != 0.0  # the check can fail


# ----------------------------------------------------------------------------- generation


def _greedy_loop(model: Any, ids: list[int], n: int, eos: int) -> list[int]:
    """Greedy by definition: a full no-cache forward per step, argmax with EOS masked."""
    x = torch.tensor([ids])
    out: list[int] = []
    for _ in range(n):
        with torch.no_grad():
            logits = model(input_ids=x, use_cache=False).logits[0, -1]
        logits[eos] = float("-inf")
        nxt = int(logits.argmax())
        out.append(nxt)
        x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
    return out


@pytest.mark.parametrize("kind", ["base", "lora", "prompt_tuning", "ptuning_v1", "prefix_tuning"])
def test_batched_generation_equals_greedy_loop(kind: str) -> None:
    model, tok = tiny_model() if kind == "base" else peft_model(kind)
    prompts = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"]] for t in TEXTS]
    got = continue_ids(model, tok, prompts, max_new_tokens=12, batch_size=3, min_new_tokens=12)
    for p, g in zip(prompts, got, strict=True):
        assert g == _greedy_loop(model, p, 12, tok.eos_token_id)


def test_generation_eos_cut_and_suppression() -> None:
    model, tok = tiny_model()
    prompts = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"]] for t in TEXTS]
    first = continue_ids(model, tok, prompts[:1], max_new_tokens=8, batch_size=1)[0][0]
    model.generation_config.eos_token_id = first  # make the model "stop" at once
    assert continue_ids(model, tok, prompts[:1], max_new_tokens=8, batch_size=1) == [[]]
    forced = continue_ids(
        model, tok, prompts[:1], max_new_tokens=8, batch_size=1, min_new_tokens=8
    )[0]
    assert len(forced) == 8 and first not in forced


# ----------------------------------------------------------------------------- end to end


def test_evaluate_general_tiny_end_to_end() -> None:
    model, tok = tiny_model()
    model.train()
    torch.manual_seed(123)
    random.seed(5)
    state = torch.get_rng_state()
    res = evaluate_general(model, tok, compose(["eval=tiny"])["eval"])
    assert model.training  # flag restored
    assert (
        torch.equal(torch.get_rng_state(), state) and random.random() == random.Random(5).random()
    )
    assert set(res) >= {"nll", "probes", "repetition", "hallucination", "timing"}
    assert 0 < res["nll"] < 10 and set(res["probes"]) == {"general_knowledge", "strategyqa"}
    assert res["probe_n"] == {"general_knowledge": 4, "strategyqa": 4}
    assert res["probe_chance"]["strategyqa"] == 0.5  # yes / no
    gk = [json.loads(r) for r in probe_file("general_knowledge").read_text().splitlines()[:4]]
    assert res["probe_chance"]["general_knowledge"] == pytest.approx(
        sum(1 / len(r["choices"]) for r in gk) / 4
    )
    assert res["nll_detail"]["n_bytes"] >= res["nll_detail"]["n_tokens"] > 0
    r = res["repetition"]
    assert r["n_continuations"] == 4 and r["mean_length"] == 40  # EOS suppressed
    assert {"seq_rep_4", "distinct_2", "loop_share", "rep_4", "wrep_16"} <= set(r)
    assert r["tf_tokens"] == 2 * 24
    assert all(0 <= r[k] <= 1 for k in ("seq_rep_1", "distinct_1", "rep_16", "wrep_4"))
    h = res["hallucination"]
    assert h["answerable"]["n"] == 4 and h["unanswerable"]["n"] == 4
    a = h["answerable"]
    assert a["accuracy"] + a["abstention_rate"] + a["hallucination_rate"] + a["empty_rate"] == (
        pytest.approx(1.0)
    )
    assert evaluate_general(model, tok, {"enabled": False})["nll"] is None


def test_measure_inference_lora_merged_and_prompt_positions() -> None:
    ev = compose(["eval=tiny"])["eval"]
    lora, tok = peft_model("lora")
    x = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        ref = lora(input_ids=x).logits
    out = measure_inference(lora, tok, ev)
    assert out["merged"] is not None and out["merged"]["tokens_per_s"] > 0
    assert out["latency_ms"] > 0 and out["extra_positions"] == 0
    with torch.no_grad():  # the measured model is untouched by merging its copy
        assert torch.equal(lora(input_ids=x).logits, ref)
    from bench.metrics.inference import merged_copy

    with torch.no_grad():
        assert torch.allclose(merged_copy(lora)(input_ids=x).logits, ref, atol=1e-5)
    pt, tok = peft_model("prompt_tuning")
    out = measure_inference(pt, tok, ev)
    assert out["extra_positions"] == 5 and out["merged"] is None
    base, tok = tiny_model()
    assert measure_inference(base, tok, {"inference": {"merged": True}})["merged"] is None


def test_probe_yaml_tasks_are_registered() -> None:
    from bench.metrics.probes import TASK_PREFIX, task_manager

    names = set(task_manager().all_tasks)
    assert {TASK_PREFIX + p for p in available_probes()} <= names


# ----------------------------------------------------------------------------- learning flags


def test_learning_flags_hand_worked() -> None:
    """40 steps: w = max(5, 4) = 5, a stretch needs max(5, 10) = 10 steps of rolling means above
    the first window's mean (2.0)."""
    from bench.flags import learning_flags, stuck

    falls = [2.0] * 5 + [1.0] * 35
    assert not stuck(falls)
    spike = [2.0] * 5 + [1.0] * 10 + [9.0] * 2 + [1.0] * 23  # window means above 2 for 6 steps
    assert not stuck(spike)
    climbs = [2.0] * 5 + [1.5] * 10 + [5.0] * 25  # above from step 16 on: 25 rolling means
    assert stuck(climbs)
    curve = [[i + 1, v] for i, v in enumerate(climbs)]
    assert learning_flags(curve, 3.0, 3.5) == ["val_loss_rose", "train_loss_stuck"]
    assert learning_flags([[i + 1, v] for i, v in enumerate(falls)], 3.0, 2.0) == []
    assert learning_flags([[1, 1.0]], 3.0, float("nan")) == ["val_loss_rose"]
