"""Vocabulary expansion (issue 17): `k` new tokens for a model's tokenizer, chosen from the
training split of a corpus only, and embedding rows for them initialised from the old ones.

Run config block `vocab:` (conf/config.yaml); `k: 0` is no expansion and leaves run ids as they
were. With `k > 0` the run's model is the base plus the expansion: `models.model_dir` returns
the expansion's cached folder (the expanded tokenizer, the new rows, `vocab.json`), built once per
settings under `<cache>/vocab/`, and `models.load` loads the base weights, resizes the input
embeddings and the output layer (tied ones stay tied) and writes the new rows.

Candidates (never already a single token of the base tokenizer):
  chars        the most frequent non-ASCII characters of the training text (Han characters and
               full-width punctuation), by count
  words        the most frequent words of >= 2 characters in jieba's segmentation of it (its
               dictionary and its maximum-probability route, i.e. `jieba.cut(HMM=False)`,
               reimplemented here over the dictionary from the cached PyPI sdist)
  chars+words  k - k//2 characters and k//2 words
New tokens are tokenizer *added tokens*: matched in the raw text before the base tokenizer's
pre-tokenizer, longest first, so text without them (English) tokenizes exactly as before.

New rows (`init`):
  mean         each row is the mean of the rows of the token's old tokenization (input and, when
               untied, output rows alike): the token starts as its pieces' average
  noise_init   LLaMA-Factory's default: the mean of all old rows plus N(0, 1/sqrt(d)) noise
  random       N(0, initializer_range) (0.02 for Llama-style configs), as a fresh layer starts
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

SOURCES = ("chars", "words", "chars+words")
INITS = ("mean", "noise_init", "random")
CORPORA = ("zh",)
VERSION = 1  # bump when selection, corpus or initialisation change their output (new run ids)
MANIFEST = "vocab.json"
ROWS = "rows.safetensors"
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")


# ----------------------------------------------------------------------------- settings


def active(v: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings that change the model (what a run id hashes): nothing for k = 0, so runs
    from before the option existed keep their ids; else every key and the code's VERSION."""
    if not v or not v.get("k"):
        return {}
    return {**dict(v), "version": VERSION}


def label_suffix(v: Mapping[str, Any] | None) -> str:
    """`+vocab5000` for the default source and init; what else differs after a colon
    (`+vocab5000:words,noise_init`)."""
    a = active(v)
    if not a:
        return ""
    rest = [str(a[k]) for k, d in (("source", "chars"), ("init", "mean")) if a[k] != d]
    return f"+vocab{a['k']}" + (f":{','.join(rest)}" if rest else "")


def effective_model(model: Mapping[str, Any], v: Mapping[str, Any] | None) -> dict[str, Any]:
    """The model config a run loads: `model`, with the expansion under `vocab` when active."""
    a = active(v)
    return {**dict(model), "vocab": a} if a else dict(model)


def base_model(model: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in model.items() if k != "vocab"}


# ----------------------------------------------------------------------------- candidates


def corpus_texts(name: str, split: str = "train") -> list[str]:
    if name not in CORPORA:
        raise ValueError(f"vocab.corpus={name!r}; valid: {list(CORPORA)}")
    from bench.data import zh

    return zh.corpus().texts(split)


def char_counts(texts: Iterable[str]) -> Counter[str]:
    return Counter(c for t in texts for c in t if ord(c) > 127 and not c.isspace())


@cache
def jieba_dictionary() -> tuple[dict[str, int], float]:
    """jieba's word counts, plus every proper prefix of a word with count 0 (its prefix
    dictionary: a DAG walk stops at a string no word starts with), and log(total count)."""
    from bench import assets

    path = assets.ensure("jieba") / "jieba-0.42.1" / "jieba" / "dict.txt"
    freq: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        word, count = line.split(" ")[:2]
        freq[word] = int(count)
    total = sum(freq.values())
    for w in list(freq):
        for i in range(1, len(w)):
            freq.setdefault(w[:i], 0)
    return freq, math.log(total)


def segment(run: str, freq: Mapping[str, int], log_total: float) -> list[str]:
    """The maximum-probability segmentation of a run of Han characters over the dictionary's
    unigram model (an unknown character counts 1), as jieba's DAG route without its HMM."""
    n = len(run)
    dag: list[list[int]] = []
    for k in range(n):
        ends, i = [], k
        while i < n and run[k : i + 1] in freq:
            if freq[run[k : i + 1]]:
                ends.append(i)
            i += 1
        dag.append(ends or [k])
    route: list[tuple[float, int]] = [(0.0, 0)] * (n + 1)
    for i in range(n - 1, -1, -1):
        route[i] = max(
            (math.log(freq.get(run[i : j + 1]) or 1) - log_total + route[j + 1][0], j)
            for j in dag[i]
        )
    out, i = [], 0
    while i < n:
        j = route[i][1] + 1
        out.append(run[i:j])
        i = j
    return out


def word_counts(texts: Iterable[str]) -> Counter[str]:
    freq, log_total = jieba_dictionary()
    return Counter(
        w
        for t in texts
        for run in _HAN_RUN.findall(t)
        for w in segment(run, freq, log_total)
        if len(w) >= 2
    )


def known(tok: Any, text: str) -> bool:
    """Whether the tokenizer has `text` as one token already (an unknown-token id is not)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return len(ids) == 1 and ids[0] != tok.unk_token_id


def choose(tok: Any, k: int, source: str, texts: Sequence[str]) -> list[tuple[str, int]]:
    """The `k` new tokens (with their counts in `texts`) for `source`; a candidate the tokenizer
    already has as one token is skipped. Raises when `texts` hold fewer candidates."""
    from bench.methods import ConfigError

    if source not in SOURCES:
        raise ConfigError(f"vocab.source={source!r}; valid: {list(SOURCES)}")
    want = {"chars": (k, 0), "words": (0, k), "chars+words": (k - k // 2, k // 2)}[source]
    out: list[tuple[str, int]] = []
    for n, counts, kind in ((want[0], char_counts, "characters"), (want[1], word_counts, "words")):
        if not n:
            continue
        ranked = sorted(counts(texts).items(), key=lambda x: (-x[1], x[0]))
        fresh = [(t, c) for t, c in ranked if not known(tok, t)]
        if len(fresh) < n:
            raise ConfigError(
                f"vocab.k={k} (source={source}): the training text has only {len(fresh)} "
                f"candidate {kind} that are not single tokens yet; choose k <= {len(fresh)}"
                + (" per half" if source == "chars+words" else "")
            )
        out += fresh[:n]
    return out


# ----------------------------------------------------------------------------- expansion


def _per_token_decoder(folder: Path) -> None:
    """Make the saved tokenizer decode added tokens: a `Fuse` step ahead of `ByteLevel` (as the
    GGUF conversion of SmolLM2 writes) joins all tokens first, and ByteLevel then leaves the
    joined string undecoded as soon as one added token holds a character outside its byte
    alphabet. Without Fuse, ByteLevel maps token by token; every old token decodes as before
    (tested for the whole base vocabulary)."""
    path = folder / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    dec = spec.get("decoder") or {}
    steps = dec.get("decoders") if dec.get("type") == "Sequence" else None
    if steps and any(s.get("type") == "ByteLevel" for s in steps):
        dec["decoders"] = [s for s in steps if s.get("type") != "Fuse"]
        path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")


def new_rows(
    weight: Any, pieces: Sequence[Sequence[int]], init: str, *, std: float, gen: Any
) -> Any:
    """Rows for the new tokens from an old [V, d] matrix. `pieces`: each token's old ids."""
    import torch

    w = weight.detach().float()
    if init == "mean":
        return torch.stack([w[list(p)].mean(0) for p in pieces])
    shape = (len(pieces), w.shape[1])
    if init == "noise_init":  # LLaMA-Factory's _noisy_mean_initialization
        noise = torch.randn(shape, generator=gen) / math.sqrt(w.shape[1])
        return w.mean(0, keepdim=True) + noise
    if init == "random":
        return torch.randn(shape, generator=gen) * std
    raise ValueError(f"vocab.init={init!r}; valid: {list(INITS)}")


def _build(model: Mapping[str, Any], out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    from bench import models
    from bench.results import now

    v, base = model["vocab"], base_model(model)
    src = models.model_dir(base)
    old = AutoTokenizer.from_pretrained(src)
    tokens = choose(old, int(v["k"]), v["source"], corpus_texts(v["corpus"]))
    pieces = [old(t, add_special_tokens=False)["input_ids"] for t, _ in tokens]
    tok = AutoTokenizer.from_pretrained(src)
    n_old = len(tok)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t, _ in tokens])
    ids = tok.convert_tokens_to_ids([t for t, _ in tokens])
    if ids != list(range(n_old, n_old + len(tokens))):
        raise RuntimeError("added tokens did not get the ids after the base vocabulary")
    tok.save_pretrained(out)
    _per_token_decoder(out)
    net, _ = models.load(base, dtype=torch.float32, device="cpu")
    emb, head = net.get_input_embeddings().weight, net.get_output_embeddings().weight
    if emb.shape[0] != n_old:
        raise ValueError(f"{base['name']}: {emb.shape[0]} embedding rows, tokenizer has {n_old}")
    tied = head is emb or head.data_ptr() == emb.data_ptr()
    gen = torch.Generator().manual_seed(int(v["seed"]))
    std = float(getattr(net.config, "initializer_range", 0.02))
    rows = {"embed": new_rows(emb, pieces, v["init"], std=std, gen=gen).contiguous()}
    if not tied:
        rows["head"] = new_rows(head, pieces, v["init"], std=std, gen=gen).contiguous()
    save_file(rows, str(out / ROWS))
    net.config.vocab_size = n_old + len(tokens)  # the expanded model's config: peft reads it
    net.config.save_pretrained(out)  # to tell a resized vocabulary from the base's
    manifest = {
        "settings": dict(v),
        "base": base,
        "base_vocab_size": n_old,
        "tied": tied,
        "tokens": [[t, c, len(p)] for (t, c), p in zip(tokens, pieces, strict=True)],
        "built_at": now(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1))


def ensure(model: Mapping[str, Any]) -> Path:
    """The expansion's cached folder for a model config with an active `vocab` entry, built
    once (a lock per folder: parallel runs of one expansion build it once)."""
    from filelock import FileLock

    from bench import assets, models
    from bench.results import config_hash

    key = config_hash({"model": base_model(model), "vocab": model["vocab"]}, 12)
    final = assets.cache_root() / "vocab" / f"{model['name']}-{key}"
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        return models.atomic_dir(final, lambda d: _build(model, d))


def manifest(folder: Path | str) -> dict[str, Any]:
    return json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))


def added_ids(folder: Path | str) -> list[int]:
    """The ids of the added tokens of an expansion folder (empty for any other model folder)."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return []
    m = manifest(folder)
    return list(range(m["base_vocab_size"], m["base_vocab_size"] + len(m["tokens"])))


def apply(model: Any, folder: Path) -> None:
    """Resize a loaded base model's embeddings (and its output layer) to the expansion's
    vocabulary and write the new rows; old rows are untouched, tied layers stay tied."""
    import torch
    from safetensors.torch import load_file

    m = manifest(folder)
    n_old, k = m["base_vocab_size"], len(m["tokens"])
    emb = model.get_input_embeddings()
    if emb.weight.shape[0] != n_old:
        raise ValueError(
            f"expansion {folder} is for {n_old} rows, the model has {emb.weight.shape[0]}"
        )
    rows = load_file(str(Path(folder) / ROWS))
    model.resize_token_embeddings(n_old + k, mean_resizing=False)
    with torch.no_grad():
        w = model.get_input_embeddings().weight
        w[n_old:] = rows["embed"].to(w.dtype)
        head = model.get_output_embeddings().weight
        if "head" in rows:
            head[n_old:] = rows["head"].to(head.dtype)
        elif head.data_ptr() != w.data_ptr():
            raise RuntimeError(f"expansion {folder} was built tied, the loaded model is not")
    # the model is the expansion now: peft saves no whole embedding layer as "resized", since
    # the folder's config has the expanded vocabulary
    model.name_or_path = model.config._name_or_path = str(folder)


# ----------------------------------------------------------------------------- figures


def stats(model: Mapping[str, Any], ks: Sequence[int], *, split: str = "test") -> list[list[Any]]:
    """Tokens per character of `split` text, per corpus source, for the model's tokenizer, its
    expansions (every source at each k; built if needed) and Qwen's tokenizers (reference)."""
    from transformers import AutoTokenizer

    from bench import models, reftok
    from bench.data import zh
    from bench.metrics.per_char import tokens_per_char

    texts = {s: zh.corpus().texts(split, s) for s in zh.SOURCES}
    rows: list[tuple[str, Any]] = [
        (model["name"], AutoTokenizer.from_pretrained(models.model_dir(model)))
    ]
    for k in ks:
        for source in SOURCES:
            v = {"k": k, "source": source, "corpus": "zh", "init": "mean", "seed": 0}
            path = models.model_dir(effective_model(model, v))
            rows.append((f"{model['name']} +{k} {source}", AutoTokenizer.from_pretrained(path)))
    rows += [(f"{name} (reference)", reftok.qwen(name)) for name in reftok.QWEN]
    return [
        [name, len(tok), *(round(tokens_per_char(tok, texts[s]), 4) for s in zh.SOURCES)]
        for name, tok in rows
    ]


def main(argv: Sequence[str] | None = None) -> None:
    import argparse
    import os

    import yaml

    from bench.config import CONF
    from bench.data import zh

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description="Tokens per character of the Chinese test split.")
    p.add_argument("--model", default="smollm2-135m", help="a conf/model/ name")
    p.add_argument("--k", type=int, nargs="*", default=[1000, 5000])
    p.add_argument("--split", default="test", choices=list(zh.SPLITS))
    a = p.parse_args(argv)
    model = yaml.safe_load((CONF / "model" / f"{a.model}.yaml").read_text())
    print(f"| tokenizer | vocabulary | {' | '.join(zh.SOURCES)} (tokens per character) |")
    print("|---|---:|" + "---:|" * len(zh.SOURCES))
    for row in stats(model, a.k, split=a.split):
        print("| " + " | ".join(str(x) for x in row) + " |", flush=True)


if __name__ == "__main__":
    main()
