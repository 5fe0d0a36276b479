"""The ladder's shared data: one byte-level BPE tokenizer and one tokenized corpus for all rungs,
built once and cached in ``cache_root()/models/ladder-data-<key>`` (bench/ladder.py trains the
rungs on it)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench import assets, corpora

if TYPE_CHECKING:
    from bench.ladder import RungConfig

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
# Bump when the corpus recipe in bench/corpora.py changes: it is part of every config hash.
CORPUS_VERSION = "1"


def _data_key(cfg: RungConfig) -> str:
    fields = (
        CORPUS_VERSION,
        cfg.vocab_size,
        cfg.val_percent,
        cfg.max_corpus_chars,
        cfg.tokenizer_chars,
    )
    return hashlib.sha256(repr(fields).encode()).hexdigest()[:10]


def _subsample(docs: list[str], max_chars: int | None) -> list[str]:
    if max_chars is None:
        return docs
    order = list(range(len(docs)))
    random.Random(0).shuffle(order)
    out, total = [], 0
    for i in order:
        if total >= max_chars:
            break
        out.append(docs[i])
        total += len(docs[i])
    return out


def _composition(train: list[str]) -> list[dict[str, Any]]:
    in_train = set(train)
    rows = []
    for src, docs in corpora.pretrain_sources().items():
        used = [d for d in docs if d in in_train]
        a = assets.ASSETS[src]
        rows.append(
            {
                "source": a.source,
                "license": a.license,
                "documents": len(used),
                "chars": sum(map(len, used)),
            }
        )
    return rows


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """Byte-level BPE (lossless on any text) with bos/eos/pad; encode() prepends bos."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=4096,
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids: Llama rejects them
    )


def _encode(tok: Any, docs: list[str]) -> np.ndarray:
    """bos + doc + eos for every document, concatenated (documents are packed into windows)."""
    eos = tok.eos_token_id
    ids = tok.backend_tokenizer.encode_batch_fast(docs)  # no offsets: ~2x faster
    flat = np.fromiter((t for e in ids for t in (*e.ids, eos)), dtype=np.int64)
    assert flat.max() < 2**16
    return flat.astype(np.uint16)


def ensure_data(cfg: RungConfig) -> Path:
    """Train the shared tokenizer and tokenize the corpus once; return the directory."""
    out = assets.cache_root() / "models" / f"ladder-data-{_data_key(cfg)}"
    if (out / "meta.json").exists():
        return out
    t0 = time.time()
    train, val = corpora.pretrain_split(cfg.val_percent)
    train = _subsample(train, cfg.max_corpus_chars)
    val = _subsample(val, None if cfg.max_corpus_chars is None else cfg.max_corpus_chars // 50)
    print(
        f"[ladder] BPE ({cfg.vocab_size} tokens) and tokenizing {len(train)} documents", flush=True
    )
    tok = train_tokenizer(_subsample(train, cfg.tokenizer_chars), cfg.vocab_size)
    train_ids, val_ids = _encode(tok, train), _encode(tok, val)
    meta = {
        "corpus_version": CORPUS_VERSION,
        "vocab_size": cfg.vocab_size,
        "train_documents": len(train),
        "val_documents": len(val),
        "train_chars": sum(map(len, train)),
        "val_chars": sum(map(len, val)),
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "composition": _composition(train),
        "excluded": "held-out Brown documents (forgetting test set); squad_shifts (a task)",
        "seconds": round(time.time() - t0, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".ladder-data-"))
    try:
        tok.save_pretrained(tmp / "tokenizer")
        np.save(tmp / "train.npy", train_ids)
        np.save(tmp / "val.npy", val_ids)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def publish(tmp: Path, out: Path) -> None:
    """Atomic rename; if another process finished first, keep its copy."""
    try:
        tmp.rename(out)
    except OSError:
        if not out.exists():
            raise
