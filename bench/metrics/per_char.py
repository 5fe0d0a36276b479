"""Per-character measures of held-out text, the units that compare tokenizers (issue 17).

A per-token loss rewards a tokenizer that cuts text finely (more, easier tokens) and cannot be
compared across vocabularies; a character is the same unit for every tokenizer of the same text.

  tokens_per_char  tokens the tokenizer needs for the text / its characters
  bits_per_char    total NLL of the text's tokens (nats, each given the prefix token and the
                   tokens before it; bench/metrics/nll.py's scoring) / ln 2 / its characters:
                   never a mean per token
  chars_per_s      generation speed in characters: greedy continuations of a fixed number of
                   tokens, EOS masked, decoded, counted, over their wall time

Passages are cut by characters before tokenizing (bench/data/zh.heldout_passages), so every
tokenizer is scored on exactly the same text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.metrics._util import continue_ids, eval_mode, prefix_token_id, preserved_rng
from bench.metrics.nll import score_passages


def bits_per_char(total_nll_nats: float, n_chars: int) -> float:
    return total_nll_nats / math.log(2) / n_chars if n_chars else float("nan")


def tokens_per_char(tok: Any, texts: Sequence[str]) -> float:
    """How finely a tokenizer cuts `texts` (no special tokens added)."""
    n_chars = sum(len(t) for t in texts)
    n_tok = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return n_tok / n_chars if n_chars else float("nan")


def summarize(nll: Sequence[Sequence[float]], texts: Sequence[str]) -> dict[str, Any]:
    """Per-character figures of scored texts: `nll[i]` the token NLLs (nats) of `texts[i]`."""
    total = sum(sum(x) for x in nll)
    n_tok = sum(len(x) for x in nll)
    n_chars = sum(len(t) for t in texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "bits_per_char": bits_per_char(total, n_chars),
        "tokens_per_char": n_tok / n_chars if n_chars else float("nan"),
        "bits_per_byte": total / math.log(2) / n_bytes if n_bytes else float("nan"),
        "nll_per_token": total / n_tok if n_tok else float("nan"),
        "n_chars": n_chars,
        "n_tokens": n_tok,
        "n_passages": len(texts),
    }


def score_texts(model: Any, tok: Any, texts: Sequence[str], *, batch_size: int) -> dict[str, Any]:
    """Every token of every text scored (no token cap: the cut is by characters, upstream)."""
    kept = [t for t in texts if tok(t, add_special_tokens=False)["input_ids"]]
    scores = score_passages(model, tok, kept, max_tokens=1 << 30, batch_size=batch_size)
    return summarize([s.nll for s in scores], kept)


def generation_speed(
    model: Any, tok: Any, prompts: Sequence[str], *, new_tokens: int, batch_size: int
) -> dict[str, Any]:
    """Greedy continuations of exactly `new_tokens` tokens (EOS masked) of each prompt; their
    characters and tokens per wall second (one timed pass, prefill included)."""
    ids = [[prefix_token_id(tok), *tok(p, add_special_tokens=False)["input_ids"]] for p in prompts]
    t0 = time.perf_counter()
    conts = continue_ids(
        model,
        tok,
        ids,
        max_new_tokens=new_tokens,
        batch_size=batch_size,
        min_new_tokens=new_tokens,
    )
    seconds = time.perf_counter() - t0
    text = [tok.decode(c, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            for c in conts]  # fmt: skip
    chars, n_tok = sum(map(len, text)), sum(map(len, conts))
    return {
        "chars_per_s": chars / seconds,
        "tokens_per_s": n_tok / seconds,
        "chars_per_token": chars / n_tok if n_tok else float("nan"),
        "seconds": seconds,
        "n_prompts": len(prompts),
        "new_tokens": new_tokens,
        "examples": text[:2],
    }


def evaluate_text(
    model: Any, tok: Any, spec: Mapping[str, Any], *, batch_size: int
) -> dict[str, Any]:
    """The record's `text` entry for one model state. `spec` (a task's `info["text_eval"]`):
    `passages` {source: texts}, `prompts` texts, `new_tokens`."""
    with eval_mode(model), preserved_rng():
        out: dict[str, Any] = {
            "sources": {
                src: score_texts(model, tok, texts, batch_size=batch_size)
                for src, texts in spec["passages"].items()
            }
        }
        out["generation"] = generation_speed(
            model, tok, spec["prompts"], new_tokens=int(spec["new_tokens"]), batch_size=batch_size
        )
    return out
