"""Vocabulary expansion (bench/vocab.py): tokens come from training text only, old token ids,
rows and logits are unchanged (English NLL moves only by the probability the new rows take, an
exact identity), tied layers stay tied, LoRA trains only the new rows, every arm of a budget in
characters trains on the same characters, and bad settings fail before any model loads.
tiny-random (untied, character tokenizer) throughout; SmolLM2's tokenizer where a real byte-level
BPE matters (skipped if not converted here); SmolLM2's weights only in the `slow` test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml

from bench import config, methods, models, vocab
from bench.data import zh
from bench.methods import ConfigError
from bench.results import run_id, run_label
from tests.conftest import CONF, tiny_cfg

TINY = yaml.safe_load((CONF / "model" / "tiny-random.yaml").read_text())
SMOL = yaml.safe_load((CONF / "model" / "smollm2-135m.yaml").read_text())
EN = "reverse hello world: dlrow olleh. 12 + 30 = 42?"


def settings(k: int, **kw: Any) -> dict[str, Any]:
    return {"k": k, "source": "chars", "corpus": "zh", "init": "mean", "seed": 0, **kw}


def smol_tokenizer() -> Any:
    from transformers import AutoTokenizer

    path = models.assets.cache_root() / "models" / f"{SMOL['name']}-{SMOL['revision']}"
    if not (path / ".complete").exists():
        pytest.skip("SmolLM2 is not converted here (make setup)")
    return AutoTokenizer.from_pretrained(path)


def expanded_smol_tokenizer(tmp: Path, tokens: list[str], *, fix: bool = True) -> Any:
    """SmolLM2's tokenizer with `tokens` added as bench.vocab adds them (no weights needed)."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tok = smol_tokenizer()
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in tokens])
    tok.save_pretrained(tmp)
    if fix:
        vocab._per_token_decoder(tmp)
    return AutoTokenizer.from_pretrained(tmp)


# ----------------------------------------------------------------------------- candidates


def test_segment_is_the_maximum_probability_route() -> None:
    def seg(text: str, freq: dict[str, int]) -> list[str]:
        return vocab.segment(text, freq, math.log(sum(freq.values())))

    # total 28: P(春风)P(又) = 3*5/28^2 < P(春)P(风)P(又) = 10*10*5/28^3 -> three words
    assert seg("春风又", {"春风": 3, "春": 10, "风": 10, "又": 5}) == ["春", "风", "又"]
    # total 75: 50*5/75^2 > 10*10*5/75^3 -> the word
    assert seg("春风又", {"春风": 50, "春": 10, "风": 10, "又": 5}) == ["春风", "又"]
    assert seg("龘", {"春": 1}) == ["龘"]  # an unknown character stands alone


def test_choose_ranks_by_count_and_skips_known_tokens() -> None:
    from bench.models import char_tokenizer

    tok = char_tokenizer()  # knows no Han character (they are <unk>)
    got = vocab.choose(tok, 2, "chars", ["春春风a。", "春"])
    assert got == [("春", 3), ("。", 1)]  # ASCII is never a candidate; ties by character
    with pytest.raises(ConfigError, match=r"vocab\.k=4 .*only 3 candidate characters.*k <= 3"):
        vocab.choose(tok, 4, "chars", ["春春风a。", "春"])
    smol = smol_tokenizer()  # 人 is one SmolLM2 token already, 风 is not
    assert vocab.choose(smol, 1, "chars", ["人人人风"]) == [("风", 1)]


def test_tokens_come_from_the_training_split_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = zh.Corpus(
        {
            "train": (zh.Doc("songci", ("春春春风",)),),
            "validation": (zh.Doc("songci", ("龘龘龘",)),),
            "test": (zh.Doc("fortunes", ("龘龘龘龘龘龘",)),),
        },
        0,
        0,
    )
    monkeypatch.setattr(zh, "corpus", lambda: fake)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))  # a fake corpus must not reach the cache
    d = models.model_dir(vocab.effective_model(TINY, settings(2)))
    assert [t for t, *_ in vocab.manifest(d)["tokens"]] == ["春", "风"]
    with pytest.raises(ConfigError, match=r"vocab\.k=3 .*k <= 2"):
        models.model_dir(vocab.effective_model(TINY, settings(3)))


# ----------------------------------------------------------------------------- the expansion


def _logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("init", vocab.INITS)
def test_old_ids_rows_and_logits_are_unchanged(init: str) -> None:
    base, btok = models.load(TINY, dtype=torch.float32, device="cpu")
    model, tok = models.load(
        vocab.effective_model(TINY, settings(16, init=init)), dtype=torch.float32, device="cpu"
    )
    n = len(btok)
    assert len(tok) == model.config.vocab_size == n + 16
    assert models.model_info(vocab.effective_model(TINY, settings(16))).vocab_size == n + 16
    ids = btok(EN, add_special_tokens=False)["input_ids"]
    assert tok(EN, add_special_tokens=False)["input_ids"] == ids  # English: the same ids
    e0, e1 = base.get_input_embeddings().weight, model.get_input_embeddings().weight
    h0, h1 = base.get_output_embeddings().weight, model.get_output_embeddings().weight
    assert torch.equal(e1[:n], e0) and torch.equal(h1[:n], h0)  # old rows bit for bit
    new = e1[n:]
    if init == "mean":  # the char tokenizer spells every Han character <unk>: its rows
        assert torch.equal(new, e0[btok.unk_token_id].expand_as(new))
        assert torch.equal(h1[n:], h0[btok.unk_token_id].expand_as(new))
    elif init == "noise_init":  # mean of all old rows + N(0, 1/sqrt(d)), d = 64
        assert (new - e0.mean(0)).std().item() == pytest.approx(1 / 8, rel=0.15)
    else:
        assert new.std().item() == pytest.approx(0.02, rel=0.15)
    x = [btok.bos_token_id, *ids]
    l0, l1 = _logits(base, x), _logits(model, x)
    assert torch.allclose(l1[:, :n], l0, atol=1e-5)  # old tokens' logits are the same
    # the English NLL changes by exactly the log of 1 + the new rows' share of the softmax
    tgt = torch.tensor(ids)
    nll0 = F.cross_entropy(l0[:-1], tgt, reduction="none")
    nll1 = F.cross_entropy(l1[:-1], tgt, reduction="none")
    mass = (l1[:-1].logsumexp(-1) - l1[:-1, :n].logsumexp(-1)).clamp(min=0)
    assert torch.allclose(nll1, nll0 + mass, atol=1e-5) and bool((mass > 0).all())


def test_tied_output_layer_stays_tied(tmp_path: Path) -> None:
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    heads = {"num_attention_heads": 2, "num_key_value_heads": 1}
    cfg = LlamaConfig(vocab_size=40, **shape, **heads, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    old = model.get_input_embeddings().weight.detach().clone()
    rows = torch.randn(3, 16)
    save_file({"embed": rows}, str(tmp_path / vocab.ROWS))
    man = {
        "base_vocab_size": 40,
        "tokens": [["甲", 3, 1], ["乙", 2, 1], ["丙", 1, 1]],
        "tied": True,
    }
    (tmp_path / vocab.MANIFEST).write_text(json.dumps(man))
    vocab.apply(model, tmp_path)
    w = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight.data_ptr() == w.data_ptr()
    assert torch.equal(w[:40], old) and torch.equal(w[40:], rows)
    assert model.config.vocab_size == 43 and vocab.added_ids(tmp_path) == [40, 41, 42]


def test_expanded_tokenizer_decodes_every_old_token_as_before(tmp_path: Path) -> None:
    base = smol_tokenizer()
    tok = expanded_smol_tokenizer(tmp_path / "fixed", ["世", "界", "春风"])
    assert all(tok.decode([i]) == base.decode([i]) for i in range(len(base)))
    text = "Hello 世界，春风又绿江南岸。\n下句： naïve 🎉"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and len(ids) < len(base(text)["input_ids"])
    # why bench.vocab drops the GGUF decoder's Fuse step: with it, mixed text decodes as bytes
    raw = expanded_smol_tokenizer(tmp_path / "raw", ["世", "界", "春风"], fix=False)
    assert raw.decode(ids) != text


def test_every_arm_of_a_character_budget_reads_the_same_characters(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from bench import data
    from bench.stream import batch_chars
    from bench.train import batch_stream, encode

    task = data.build(OmegaConf.load(CONF / "task" / "poem_next_line.yaml"))
    train = task.splits["train"]
    chars = [t for t, _ in vocab.choose(smol_tokenizer(), 1000, "chars", vocab.corpus_texts("zh"))]
    toks = [smol_tokenizer(), expanded_smol_tokenizer(tmp_path, chars)]
    got = []
    for tok in toks:
        enc = [encode(e, tok, 96) for e in train]
        batches = batch_stream(enc, batch_size=16, seed=1, pad_id=tok.pad_token_id)
        got.append([(batch_chars(b, tok), int(b["attention_mask"].sum()))
                    for b in (next(batches) for _ in range(20))])  # fmt: skip
    assert [c for c, _ in got[0]] == [c for c, _ in got[1]]  # the same text, batch by batch
    assert sum(t for _, t in got[1]) < 0.7 * sum(t for _, t in got[0])  # in far fewer tokens
    whole = [len(e.prompt) + 1 + len(e.answer) for e in train]  # nothing was cut
    assert sum(c for c, _ in got[0]) <= 20 * 16 * max(whole)


# ----------------------------------------------------------------------------- methods, runs


def _trainable(model: Any) -> dict[str, int]:
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


def test_lora_trains_only_the_new_rows(tmp_path: Path) -> None:
    c = config.check(tiny_cfg("lora", tmp_path, "vocab.k=16", "+method.train_new_tokens=true"))
    model, _, _ = methods.load_and_apply(c.model, c.raw["method"], device="cpu", precision="fp32")
    got = _trainable(model)
    d, n = 64, models.model_info(TINY).vocab_size
    assert sum(v for k, v in got.items() if "trainable_tokens" in k) == 2 * 16 * d  # untied
    assert sum(v for k, v in got.items() if "lora_" in k) == 4 * (2 * 8 * 64 + 8 * 64 + 8 * 32)
    emb = model.get_input_embeddings()
    old, new = torch.arange(n), torch.arange(n, n + 16)
    with torch.no_grad():
        old0, new0 = emb(old).clone(), emb(new).clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.cat([new, old[:16]]).unsqueeze(0)
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    with torch.no_grad():
        assert torch.equal(emb(old), old0) and not torch.allclose(emb(new), new0)
    plain = config.check(tiny_cfg("lora", tmp_path, "vocab.k=16"))
    m2, _, _ = methods.load_and_apply(
        plain.model, plain.raw["method"], device="cpu", precision="fp32"
    )
    assert not any("trainable_tokens" in k for k in _trainable(m2))


@pytest.mark.parametrize(
    ("method", "extra", "label"),
    [
        ("lora", ["+method.train_new_tokens=true"], "lora:new-tokens+vocab16"),
        ("full", [], "full+vocab16"),
    ],
)
def test_runs_record_text_and_characters_and_reevaluate(
    tmp_path: Path, method: str, extra: list[str], label: str
) -> None:
    from bench import reevaluate
    from bench.run import run_one

    cfg = tiny_cfg(method, tmp_path, "task=poem_next_line", "task.n_train=64", "task.n_val=8",
                   "task.n_test=8", "task.text_passages=4", "task.gen_prompts=2", "vocab.k=16",
                   "budget=chars", "budget.steps=3", "budget.batch_size=4", *extra)  # fmt: skip
    rec = run_one(cfg)
    assert rec["status"] == "success", rec["error"]
    assert rec["label"] == run_label(cfg) == label
    assert rec["train"]["chars"] > 0 and rec["train"]["chars_per_s"] > 0
    for when in ("before", "after"):
        t = rec["text"][when]
        assert set(t["sources"]) == set(zh.SOURCES)
        assert all(s["n_passages"] == 4 and s["bits_per_char"] > 0 for s in t["sources"].values())
        assert t["generation"]["n_prompts"] == 2 and t["generation"]["chars_per_s"] > 0
    assert rec["quality"]["metric"] == "char_f1" and "exact_match" in rec["quality"]["extra"]
    path = tmp_path / "test" / f"{rec['run_id']}.json"
    again = reevaluate.reevaluate_one(path, rec, config.check(cfg))  # from the kept state
    assert again["quality"]["per_example"]["after"] == rec["quality"]["per_example"]["after"]
    base = run_one(tiny_cfg(method, tmp_path, "task=poem_next_line", "task.n_train=64",
                            "task.n_val=8", "task.n_test=8", "task.text_passages=4",
                            "task.gen_prompts=2", "budget=chars", "budget.steps=3",
                            "budget.batch_size=4"))  # fmt: skip
    assert base["status"] == "success" and base["label"] == method
    assert base["timing"]["before_key"] != rec["timing"]["before_key"]  # its own base model


# ----------------------------------------------------------------------------- configuration


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a model was loaded before the config was validated")

    monkeypatch.setattr(models, "load", boom)


@pytest.mark.parametrize(
    ("method", "overrides", "needles"),
    [
        ("lora", ["vocab.init=zero"], ["vocab.init", "'noise_init'"]),
        ("lora", ["vocab.source=bpe"], ["vocab.source", "'chars+words'"]),
        ("lora", ["vocab.k=-1"], ["vocab.k", ">= 0"]),
        ("lora", ["vocab.corpus=en"], ["vocab.corpus", "'zh'"]),
        ("lora", ["+vocab.kk=3"], ["vocab.kk", "unknown key", "valid keys"]),
        ("qlora", ["vocab.k=5"], ["vocab.k=5", "quantized", "valid with an expansion", "'full'"]),
        ("lora", ["+method.train_new_tokens=true"], ["method.train_new_tokens", "vocab.k > 0"]),
        ("lora", ["+method.train_new_tokens=yes"], ["method.train_new_tokens"]),
    ],
)
def test_bad_vocab_settings_fail_before_loading(
    no_loading: None, tmp_path: Path, method: str, overrides: list[str], needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as e:
        config.check(tiny_cfg(method, tmp_path, *overrides))
    assert all(s in str(e.value) for s in needles), str(e.value)


def test_a_cut_example_fails_a_character_budget_before_loading(
    no_loading: None, tmp_path: Path
) -> None:
    from bench.run import run_one

    rec = run_one(tiny_cfg("lora", tmp_path, "task=poem_next_line", "task.n_train=64",
                           "task.n_val=8", "task.n_test=8", "budget=chars",
                           "task.seq_len=30"))  # fmt: skip
    assert rec["status"] == "failed" and "budget.seq_len: 30 cuts training examples" in rec["error"]


def test_neutral_vocab_keeps_run_ids_and_labels(tmp_path: Path) -> None:
    cfg = tiny_cfg("lora", tmp_path)
    old = {k: v for k, v in cfg.items() if k != "vocab"}  # a record from before the option
    assert run_id(cfg) == run_id(old) == run_id(tiny_cfg("lora", tmp_path, "vocab.source=words"))
    on = tiny_cfg("lora", tmp_path, "vocab.k=16")
    assert run_id(on) != run_id(cfg) and run_label(cfg) == "lora"
    assert run_id(tiny_cfg("lora", tmp_path, "vocab.k=16", "vocab.init=random")) != run_id(on)
    assert vocab.label_suffix(settings(5000)) == "+vocab5000"
    assert vocab.label_suffix(settings(5000, source="words", init="noise_init")) == (
        "+vocab5000:words,noise_init"
    )


@pytest.mark.slow
def test_smollm2_english_nll_barely_moves_and_the_head_stays_tied() -> None:
    from bench.metrics.nll import heldout_texts, score_passages, summarize

    smol_tokenizer()  # skips where SmolLM2 is not converted
    base, btok = models.load(SMOL, dtype=torch.float32, device="cpu")
    model, tok = models.load(vocab.effective_model(SMOL, settings(1000)), dtype=torch.float32,
                             device="cpu")  # fmt: skip
    assert model.get_output_embeddings().weight.data_ptr() == (
        model.get_input_embeddings().weight.data_ptr()
    )
    texts = heldout_texts(40, part="nll")
    a = summarize(score_passages(base, btok, texts, max_tokens=32, batch_size=20))
    b = summarize(score_passages(model, tok, texts, max_tokens=32, batch_size=20))
    assert a["n_tokens"] == b["n_tokens"]
    # measured: +0.00019 nats per token (4.99202 -> 4.99219) with 1,000 mean-initialised rows
    assert 0 <= b["nll"] - a["nll"] < 1e-3


# ----------------------------------------------------------------------------- the study


STUDY_ARMS = {
    "lora": 0.001, "lora:new-tokens+vocab1000": 0.001, "lora:new-tokens+vocab5000": 0.001,
    "lora:new-tokens+vocab5000:noise_init": 0.001, "lora:new-tokens+vocab5000:random": 0.001,
    "full": 1e-4, "full+vocab1000": 1e-4, "full+vocab5000": 1e-4,
}  # fmt: skip


@pytest.mark.unit
def test_study_vocab_composes_to_its_planned_arms(tmp_path: Path) -> None:
    import re
    from collections import Counter

    from tests.test_studies import study_jobs

    jobs = study_jobs("study_vocab", tmp_path)
    header = (CONF / "sweep" / "study_vocab.yaml").read_text()
    stated = re.search(r"^# runs: (\d+) ", header, re.M)
    assert stated and int(stated.group(1)) == len(jobs) == 3 * len(STUDY_ARMS)
    assert Counter(run_label(c.raw) for c in jobs) == dict.fromkeys(STUDY_ARMS, 3)
    assert len({run_id(c.raw) for c in jobs}) == len(jobs)
    for c in jobs:
        assert c.lr == STUDY_ARMS[run_label(c.raw)]
        assert (c.raw["model"]["name"], c.raw["task"]["name"]) == ("smollm2-135m", "poem_next_line")
        assert c.budget.whole_examples and c.raw["eval"]["enabled"] and c.raw["seed"] in (0, 1, 2)


@pytest.mark.unit
def test_study_vocab_estimate_uses_the_default_sweeps_rates() -> None:
    """The header's training rates are results/default's: padded tokens per second of the
    chosen (fully evaluated) full and LoRA runs, the mean of the two cells' pooled rates."""
    import re

    folder = CONF.parent / "results" / "default_v1"  # the rates the YAML header states
    rates = {}
    for m in ("full", "lora"):
        cells = []
        for task in ("arithmetic", "squad_shifts"):
            recs = [json.loads(p.read_text()) for p in folder.glob(f"{m}__smollm2-135m__{task}__*")]
            done = [r for r in recs if r["status"] == "success" and r.get("evaluated") == "all"]
            assert len(done) >= 3, f"results/default_v1 lacks the chosen {m} runs on {task}"
            pad = sum(r["train"]["padded_tokens"] for r in done)
            cells.append(pad / sum(r["train"]["seconds"] for r in done))
        rates[m] = sum(cells) / len(cells)
    header = (CONF / "sweep" / "study_vocab.yaml").read_text()
    stated = re.search(r"training at (\d+) \(full\) and\s+#\s+(\d+) \(LoRA\)", header)
    assert stated, "the header states the rates it uses"
    assert int(stated.group(1)) == int(rates["full"]) and int(stated.group(2)) == int(rates["lora"])
