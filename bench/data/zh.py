"""Chinese text, offline (issue 17): Song ci from npm `chinese-poetry` and modern fortunes from
Debian `fortunes-zh`, both in simplified script, in fixed disjoint train / validation / test splits.

A document is one ci poem (its lines are the JSON `paragraphs`) or one fortune (its text lines,
attribution dropped). Documents are deduplicated by their text without whitespace, then split by
a hash of that text alone (`SPLIT`), so a document's split never depends on which others exist or
their order. A validation or test document that shares a line (of >= `SHARED_LINE` characters)
with any training document is dropped: formulaic lines must not carry training text into the
held-out sets. Training text is all that vocabulary expansion (bench/vocab.py) may read; test
text is the held-out text of the per-character metrics and the poem task's test examples.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache

from bench import assets

SOURCES: dict[str, str] = {
    "songci": "npm chinese-poetry 2.0.1, Song ci (ci.song.*.json), MIT",
    "fortunes": "Debian fortunes-zh 2.98, `chinese` file, GPL-3.0+",
}
SPLITS = ("train", "validation", "test")
SPLIT = {"test": 5, "validation": 5}  # percent of documents, by text hash; the rest is train
SHARED_LINE = 4  # a held-out document with a training line this long (or longer) is dropped
_CI_FILE = re.compile(r"^ci\.song\.\d+\.json$")  # the numbered files (not the 300-poem anthology)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_BROKEN = ("□", "\ufffd")  # characters the source could not encode


@dataclass(frozen=True)
class Doc:
    source: str  # a key of SOURCES
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.lines)


def han_count(text: str) -> int:
    return len(_HAN.findall(text))


def _key(text: str) -> str:
    return "".join(text.split())


def split_of(text: str) -> str:
    """The split a document's text falls into: a hash bucket, fixed forever."""
    bucket = int(hashlib.sha256(_key(text).encode()).hexdigest()[:8], 16) % 100
    if bucket < SPLIT["test"]:
        return "test"
    if bucket < SPLIT["test"] + SPLIT["validation"]:
        return "validation"
    return "train"


def songci() -> list[Doc]:
    root = assets.ensure("chinese_poetry") / "package" / "dist" / "songci"
    docs = []
    for f in sorted(p for p in root.iterdir() if _CI_FILE.match(p.name)):
        for poem in json.loads(f.read_text(encoding="utf-8")):
            lines = tuple(s.strip() for s in poem.get("paragraphs") or [] if s.strip())
            if lines and not any(b in s for s in lines for b in _BROKEN):
                docs.append(Doc("songci", lines))
    return docs


def fortunes() -> list[Doc]:
    """Fortunes that are Chinese prose: >= 8 Han characters, at least half of their
    non-space characters Han (drops the tables and command listings among them)."""
    path = assets.ensure("fortunes_zh") / "usr" / "share" / "games" / "fortunes" / "chinese"
    docs = []
    for entry in _ANSI.sub("", path.read_text(encoding="utf-8")).split("\n%\n"):
        lines = tuple(
            s.strip() for s in entry.splitlines() if s.strip() and not s.strip().startswith("--")
        )
        text = "".join(lines)
        n = han_count(text)
        if n >= 8 and 2 * n >= len(_key(text)) and not any(b in text for b in _BROKEN):
            docs.append(Doc("fortunes", lines))
    return docs


@dataclass(frozen=True)
class Corpus:
    splits: dict[str, tuple[Doc, ...]]
    dropped_duplicates: int
    dropped_shared_lines: int

    def docs(self, split: str, source: str | None = None) -> list[Doc]:
        if split not in SPLITS:
            raise ValueError(f"split {split!r}; valid: {list(SPLITS)}")
        if source is not None and source not in SOURCES:
            raise ValueError(f"source {source!r}; valid: {sorted(SOURCES)}")
        return [d for d in self.splits[split] if source in (None, d.source)]

    def texts(self, split: str, source: str | None = None) -> list[str]:
        return [d.text for d in self.docs(split, source)]


@cache
def corpus() -> Corpus:
    seen: set[str] = set()
    by_split: dict[str, list[Doc]] = {s: [] for s in SPLITS}
    dups = 0
    for doc in [*songci(), *fortunes()]:  # a text in both sources counts once (the ci)
        k = _key(doc.text)
        if k in seen:
            dups += 1
            continue
        seen.add(k)
        by_split[split_of(doc.text)].append(doc)
    train_lines = {_key(s) for d in by_split["train"] for s in d.lines}
    shared = 0
    for s in ("validation", "test"):
        kept = [
            d
            for d in by_split[s]
            if not any(len(_key(x)) >= SHARED_LINE and _key(x) in train_lines for x in d.lines)
        ]
        shared += len(by_split[s]) - len(kept)
        by_split[s] = kept
    return Corpus({s: tuple(v) for s, v in by_split.items()}, dups, shared)


def heldout_passages(n: int, *, max_chars: int, source: str, split: str = "test") -> list[str]:
    """`n` held-out documents of `source`, spread evenly over the split, each cut to its first
    `max_chars` characters: the same text for every tokenizer (cut by characters, not tokens)."""
    docs = corpus().texts(split, source)
    if n > len(docs):
        raise ValueError(f"asked {n} {split} passages of {source}, only {len(docs)} exist")
    return [docs[i * len(docs) // n][:max_chars] for i in range(n)]


def summary() -> dict[str, dict[str, dict[str, int]]]:
    """Documents and characters per split and source (README, the expansion manifest)."""
    c = corpus()
    return {
        s: {
            src: {"docs": len(ts), "chars": sum(map(len, ts))}
            for src in SOURCES
            for ts in [c.texts(s, src)]
        }
        for s in SPLITS
    }
