"""The model ladder: corpus hygiene, tokenizer, a micro rung trained end to end, config hashing."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from bench import assets, corpora, ladder

# A rung small enough to train in seconds on a 300k-character sample of the corpus.
MICRO = ladder.RungConfig(
    name="micro",
    d_model=32,
    n_layers=2,
    n_heads=2,
    ffn=96,
    train_tokens=80 * 8 * 64,  # 80 steps
    lr=1e-2,
    batch_size=8,
    seq_len=64,
    vocab_size=512,
    max_val_tokens=4096,
    max_corpus_chars=300_000,
    tokenizer_chars=300_000,
    n_evals=2,
)


@pytest.fixture(scope="module")
def micro_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Train MICRO once in a temporary cache that reuses the real extracted assets."""
    for name in corpora.PRETRAIN_SOURCES:
        assets.ensure(name)
    real_assets = assets.cache_root() / "assets"
    tmp = tmp_path_factory.mktemp("cache")
    (tmp / "assets").symlink_to(real_assets, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE", str(tmp))
        out = ladder.ensure_rung(MICRO)
        assert out.parent == tmp / "models"
        yield out


def test_pretraining_corpus_excludes_heldout_brown() -> None:
    texts = corpora.pretrain_texts()
    heldout = corpora.general_heldout_passages(n=20)
    assert not any(p in t for p in heldout for t in texts)
    # Non-vacuous: training Brown paragraphs are in.
    train_para = next(p for p in corpora.brown_train_paragraphs() if len(p) > 200)
    assert any(train_para in t for t in texts)
    assert len(texts) == len(set(texts))  # exact dedupe


def test_pretraining_sources_and_split() -> None:
    src = corpora.pretrain_sources()
    assert set(src) == set(corpora.PRETRAIN_SOURCES)
    assert all(len(docs) > 100 for docs in src.values())
    assert not any(f.strip() == "%" or "\n%\n" in f for f in src["fortunes"])
    assert not any("**" in s or s.startswith("#") for s in src["shakespeare"])
    assert any(g.startswith("entity: that which is perceived") for g in src["wordnet"])
    train, val = corpora.pretrain_split()
    assert not set(train) & set(val)
    assert 0.005 < len(val) / (len(train) + len(val)) < 0.02
    assert corpora.pretrain_split()[1] == val  # deterministic


def test_tokenizer_round_trips(micro_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_dir)
    text = "  To be, or not to be:\n\tthat is the question. Café 3.14 ünïcode 你好 \U0001f600\n"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert len(tok) == MICRO.vocab_size
    assert tok.model_max_length == MICRO.seq_len
    assert set(tok("x")) == {"input_ids", "attention_mask"}  # model(**tok(...)) must work


def test_micro_rung_trains_and_has_a_card(micro_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    card = json.loads((micro_dir / "model_card.json").read_text())
    assert card["train_loss"] < card["train_loss_first"] - 0.5
    assert math.isfinite(card["val_ppl"]) and card["val_ppl"] < MICRO.vocab_size
    assert card["val_curve"][-1]["val_ppl"] < card["val_curve"][0]["val_ppl"]
    assert card["unigram_val_ppl"] > 1
    assert card["tokens_seen"] == 80 * 8 * 64
    assert card["config_hash"] == ladder.config_hash(MICRO)
    assert micro_dir.name == f"micro-{ladder.config_hash(MICRO)}"
    # Closed form for a Llama layer (n_kv_heads == n_heads, no biases): q,k,v,o + SwiGLU + 2 norms.
    d, f, n_layers = MICRO.d_model, MICRO.ffn, MICRO.n_layers
    closed = n_layers * (4 * d * d + 3 * d * f + 2 * d) + d
    assert card["params_non_embedding"] == closed == ladder.non_embedding_params(MICRO)
    assert card["params_total"] == closed + MICRO.vocab_size * d  # tied embeddings
    assert "unigram baseline perplexity" in (micro_dir / "README.md").read_text()

    model = AutoModelForCausalLM.from_pretrained(micro_dir)
    tok = AutoTokenizer.from_pretrained(micro_dir)
    assert sum(p.numel() for p in model.parameters()) == card["params_total"]
    x = tok(["The king is dead."], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**x).logits).all()
    # Cached: a second call returns the same directory without retraining.
    mtime = (micro_dir / "model.safetensors").stat().st_mtime
    assert ladder.ensure_rung(MICRO) == micro_dir
    assert (micro_dir / "model.safetensors").stat().st_mtime == mtime
    assert not list(micro_dir.parent.glob(".micro-*"))  # no temp dirs left behind


def test_config_hash_tracks_every_field() -> None:
    h = ladder.config_hash(MICRO)
    assert ladder.config_hash(dataclasses.replace(MICRO)) == h
    for change in ({"lr": 2e-2}, {"train_tokens": 1}, {"seed": 1}, {"vocab_size": 1024}):
        assert ladder.config_hash(dataclasses.replace(MICRO, **change)) != h


def test_model_confs_match_rungs() -> None:
    root = Path(__file__).resolve().parents[1] / "conf" / "model"
    for name, r in ladder.RUNGS.items():
        cfg = yaml.safe_load((root / f"{name}.yaml").read_text())
        assert (cfg["name"], cfg["kind"], cfg["rung"]) == (name, "ladder", name)
        assert cfg["arch"] == {
            "num_layers": r.n_layers,
            "hidden_size": r.d_model,
            "num_heads": r.n_heads,
            "num_kv_heads": r.n_heads,
            "vocab_size": r.vocab_size,
            "model_type": "llama",
        }


def test_default_ladder_sizes() -> None:
    sizes = sorted(ladder.non_embedding_params(r) for r in ladder.RUNGS.values())
    assert len(sizes) >= 2
    assert all(b >= 3 * a for a, b in itertools.pairwise(sizes))
    for name in ladder.RUNGS:
        assert ladder.RUNGS[name].name == name
