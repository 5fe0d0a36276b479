"""Offline English text: the Brown corpus and friends, with a fixed held-out split.

The held-out general text (forgetting NLL, repetition prefixes) is every Brown document whose
number is divisible by 5 (100 of 500 documents, all 15 genres). Those documents are never used to
pretrain the model ladder nor in any fine-tuning task; `pretrain_texts` excludes them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from bench import assets

_QUOTES = {"``": '"', "''": '"'}
_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?%)\]}]|'s|n't|'re|'ll|'ve|'d|'m)")
_NO_SPACE_AFTER = re.compile(r"([(\[{$]) ")


def _detag(line: str) -> str:
    words = []
    for tok in line.split():
        word = tok.rsplit("/", 1)[0]
        words.append(_QUOTES.get(word, word))
    text = " ".join(words)
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    text = _NO_SPACE_AFTER.sub(r"\1", text)
    return re.sub(r'" (.*?) "', r'"\1"', text)


@lru_cache(maxsize=1)
def brown_documents() -> dict[str, list[str]]:
    """Brown document id (e.g. 'ca01') -> list of paragraphs as plain text."""
    root = assets.ensure("brown") / "package"
    docs: dict[str, list[str]] = {}
    for path in sorted(root.iterdir()):
        if not re.fullmatch(r"c[a-r]\d\d", path.name):
            continue
        paras = [_detag(p) for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))]
        docs[path.name] = [p for p in paras if p.strip()]
    return docs


def is_heldout(doc_id: str) -> bool:
    return int(doc_id[2:]) % 5 == 0


def general_heldout_passages(n: int = 400, min_chars: int = 200) -> list[str]:
    """First `n` held-out Brown paragraphs of at least `min_chars` characters, in a fixed order."""
    out = [
        p
        for doc_id, paras in brown_documents().items()
        if is_heldout(doc_id)
        for p in paras
        if len(p) >= min_chars
    ]
    if len(out) < n:
        raise ValueError(f"only {len(out)} held-out passages of >= {min_chars} chars, asked {n}")
    return out[:n]


def brown_train_paragraphs() -> list[str]:
    return [p for d, paras in brown_documents().items() if not is_heldout(d) for p in paras]


def asset_dir(name: str) -> Path:
    return assets.ensure(name)
