"""The human-readable model card (README.md) of a pretrained ladder rung, from its card dict."""

from __future__ import annotations

from typing import Any


def card_markdown(c: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {r['source']} | {r['license']} | {r['documents']:,} | {r['chars']:,} |"
        for r in c["corpus"]["composition"]
    )
    curve = ", ".join(f"{p['tokens']:,}: {p['val_ppl']}" for p in c["val_curve"])
    return f"""# {c["name"]}

A small {c["architecture"]} pretrained from scratch
by `bench.ladder` (`make models`). A size rung for CPU-only fine-tuning benchmarks, not a useful
language model.

| | |
|---|---|
| layers / d_model / heads / ffn | {c["layers"]} / {c["d_model"]} / {c["heads"]} / {c["ffn"]} |
| parameters (total / non-embedding) | {c["params_total"]:,} / {c["params_non_embedding"]:,} |
| vocabulary | {c["vocab_size"]:,} (byte-level BPE trained on the same corpus) |
| tokens seen | {c["tokens_seen"]:,} ({c["epochs"]} epochs of {c["corpus_train_tokens"]:,}) |
| wall time | {c["wall_seconds"]} s ({c["tokens_per_second"]:,} tokens/s, {c["precision"]}) |
| CPU time | {c["cpu_seconds"]} s ({c["threads"]} torch threads) |
| final train loss | {c["train_loss"]} |
| validation perplexity | **{c["val_ppl"]}** on {c["val_tokens"]:,} held-out tokens |
| unigram baseline perplexity | {c["unigram_val_ppl"]} (same tokens) |
| validation curve (tokens: ppl) | {curve} |
| seed / config hash | {c["seed"]} / {c["config_hash"]} |

## Training text

| source | license | documents | characters |
|---|---|---|---|
{rows}

Excluded: {c["corpus"]["excluded"]}.
About 1% of the documents (chosen by content hash) are held out for the validation perplexity.
"""
