"""The training stream: the task's encoded examples in seeded batches, optionally changed by the
`data` settings (issue 16's forgetting and repetition studies).

- `replay_share`: that share of the stream's (non-padding) input tokens is general text with a
  plain language-model loss on every token. Replay chunks are `seq_len`-token pieces of held-in
  Brown documents (disjoint from the held-out NLL and repetition text and from the probes'
  sources), in one fixed order independent of the run seed, so every method and seed of a cell
  replays the same text. A replay chunk takes the place of a task example in its batch, so the
  budget (steps x batch x length) is unchanged; per batch, the number of chunks keeps the running
  share as close to the target as whole chunks allow (small batches alternate). The loss is the
  mean over all labelled tokens, so replay's share of the loss is larger than its input share
  when task examples label only their answers; the record states both.
- `duplicate_share` / `duplicate_pool`: that share of the training examples is copies of a small
  set of `duplicate_pool` examples (a fixed draw), the rest the task's own.
- `epochs`: train on only as many examples as `epochs` passes over them take in the budget
  (steps x batch x accumulation / epochs), the first of a fixed shuffle.
Neutral values (0, null) leave the stream, and the run id, as they were.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch only where batches are built: reports read `active` and labels
    import torch

    from bench.train import Encoded

_SEED = 4321  # fixed draws (replay order, duplicated pool, subset): not the run seed
NEUTRAL: dict[str, Any] = {
    "replay_share": 0.0,
    "duplicate_share": 0.0,
    "epochs": None,
}
REPLAY_SOURCES = ("brown",)


def active(data_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings that change the stream (what a run id hashes): neutral values and the
    sub-settings of an inactive option are left out, so old run ids stay valid."""
    d = dict(data_cfg or {})
    out = {k: v for k, v in d.items() if k in NEUTRAL and v != NEUTRAL[k]}
    if "replay_share" in out:
        out["replay_source"] = d.get("replay_source")
    if "duplicate_share" in out:
        out["duplicate_pool"] = d.get("duplicate_pool")
    return out


def label_suffix(data_cfg: Mapping[str, Any] | None) -> str:
    """How a report row names its stream: '' for the task's own, else e.g. '[replay=0.1]'."""
    a = active(data_cfg)
    parts = []
    if "replay_share" in a:
        parts.append(f"replay={a['replay_share']:g}")
    if "duplicate_share" in a:
        parts.append(f"dup={a['duplicate_share']:g}x{a['duplicate_pool']}")
    if "epochs" in a:
        parts.append(f"epochs={a['epochs']:g}")
    return f"[{','.join(parts)}]" if parts else ""


@dataclass
class StreamStats:
    """Counted as batches are drawn: the realised mix of what training consumed."""

    tokens: int = 0  # non-padding input tokens
    chars: int = 0  # characters of the text those tokens spell (decoded, specials skipped)
    replay_tokens: int = 0
    labels: int = 0  # tokens with a loss
    replay_labels: int = 0
    examples: int = 0  # distinct task examples in the stream's data

    def block(self) -> dict[str, Any]:
        return {
            "replay_token_share": self.replay_tokens / self.tokens if self.tokens else 0.0,
            "replay_loss_share": self.replay_labels / self.labels if self.labels else 0.0,
            "train_examples": self.examples,
        }


def replay_chunks(tok: Any, seq_len: int, n: int, source: str = "brown") -> list[Encoded]:
    """`n` chunks of `seq_len` tokens of held-in general text, every token labelled."""
    from bench import corpora
    from bench.train import Encoded

    if source not in REPLAY_SOURCES:
        raise ValueError(f"data.replay_source: {source!r}; valid: {list(REPLAY_SOURCES)}")
    paras = corpora.brown_train_paragraphs()
    random.Random(_SEED).shuffle(paras)
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    out: list[Encoded] = []
    buf: list[int] = []
    for p in paras:
        buf += tok(p, add_special_tokens=False)["input_ids"] + eos
        while len(buf) >= seq_len and len(out) < n:
            out.append(Encoded(buf[:seq_len], buf[:seq_len]))
            buf = buf[seq_len:]
        if len(out) >= n:
            return out
    raise ValueError(f"data.replay_share: needs {n} chunks of {seq_len} tokens, Brown holds fewer")


def shape_examples(
    data: Sequence[Encoded], d: Mapping[str, Any], *, per_step: int, steps: int
) -> list[Encoded]:
    """The task examples after `epochs` (subset) and `duplicate_share` (copies of a pool)."""
    out = list(data)  # unchanged unless an option is on: the default stream stays as it was
    if d.get("epochs") or d.get("duplicate_share"):  # subset and pool: a fixed draw
        random.Random(_SEED).shuffle(out)
    if d.get("epochs"):
        n = math.floor(per_step * steps / d["epochs"])
        if n < per_step or n > len(out):
            raise ValueError(
                f"data.epochs: {d['epochs']} needs {n} training examples (steps x batch x "
                f"accumulation / epochs = {per_step * steps} / {d['epochs']}); the task has "
                f"{len(out)} and a batch takes {per_step}: choose epochs in "
                f"[{per_step * steps / len(out):.3g}, {steps:g}]"
            )
        out = out[:n]
    share = d.get("duplicate_share") or 0.0
    if share:
        pool = int(d.get("duplicate_pool") or 0)
        if not 0 < pool < len(out):
            raise ValueError(f"data.duplicate_pool: {pool}; must be in [1, {len(out) - 1}]")
        n_copies = round(share * len(out) / (1 - share))  # copies / (copies + originals) = share
        out += [out[i % pool] for i in range(n_copies)]
    return out


def stream(
    data: Sequence[Encoded],
    d: Mapping[str, Any] | None,
    *,
    tok: Any,
    batch_size: int,
    grad_accum: int,
    steps: int,
    seq_len: int,
    seed: int,
    pad_id: int,
) -> tuple[Iterator[dict[str, torch.Tensor]], StreamStats]:
    """Endless batches for `bench.train.train`, and the counters they fill as they are drawn."""
    from bench.train import batch_stream

    d = dict(d or {})
    examples = shape_examples(data, d, per_step=batch_size * grad_accum, steps=steps)
    stats = StreamStats(examples=len(examples))
    share = d.get("replay_share") or 0.0
    if not 0.0 <= share < 1.0:
        raise ValueError(f"data.replay_share: {share}; must be in [0, 1)")
    if not share:
        base = batch_stream(examples, batch_size=batch_size, seed=seed, pad_id=pad_id)
        return _counted(base, stats, tok), stats
    # the most chunks the budget can take (every sequence replay): no chunk repeats
    chunks = replay_chunks(tok, seq_len, batch_size * grad_accum * steps, d["replay_source"])
    return _mixed(examples, chunks, share, batch_size, seed, pad_id, stats, tok), stats


def batch_chars(batch: dict[str, torch.Tensor], tok: Any) -> int:
    """Characters of a batch's text: what a budget in characters counts, the same for every
    tokenizer of the same text (cleanup off: the text as it was, not as a reader would tidy it)."""
    pairs = zip(batch["input_ids"], batch["attention_mask"], strict=True)
    rows = (ids[m.bool()].tolist() for ids, m in pairs)
    return sum(
        len(tok.decode(r, skip_special_tokens=True, clean_up_tokenization_spaces=False))
        for r in rows
    )


def _counted(
    batches: Iterator[dict[str, torch.Tensor]], stats: StreamStats, tok: Any
) -> Iterator[dict[str, torch.Tensor]]:
    for b in batches:
        stats.tokens += int(b["attention_mask"].sum())
        stats.chars += batch_chars(b, tok)
        stats.labels += int((b["labels"] != -100).sum())
        yield b


def _mixed(
    examples: Sequence[Encoded],
    chunks: Sequence[Encoded],
    share: float,
    batch_size: int,
    seed: int,
    pad_id: int,
    stats: StreamStats,
    tok: Any,
) -> Iterator[dict[str, torch.Tensor]]:
    from bench.train import collate

    rng = random.Random(seed)
    order: list[int] = []  # task examples in seeded epochs, as batch_stream draws them
    used, size = 0, len(chunks[0].input_ids)
    while True:
        while len(order) < batch_size:
            perm = list(range(len(examples)))
            rng.shuffle(perm)
            order += perm
        lens = [len(examples[i].input_ids) for i in order[:batch_size]]
        # k chunks: the batch after which the running replay share is closest to the target
        gaps = [
            abs(
                stats.replay_tokens
                + k * size
                - share * (stats.tokens + sum(lens[: batch_size - k]) + k * size)
            )
            for k in range(batch_size + 1)
        ]
        k = gaps.index(min(gaps))
        rows = [examples[i] for i in order[: batch_size - k]]
        del order[: batch_size - k]
        rep, used = list(chunks[used : used + k]), used + k
        batch = collate([*rows, *rep], pad_id)
        stats.tokens += int(batch["attention_mask"].sum())
        stats.chars += batch_chars(batch, tok)
        stats.replay_tokens += k * size
        stats.labels += int((batch["labels"] != -100).sum())
        stats.replay_labels += k * size
        yield batch
