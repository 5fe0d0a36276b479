"""Tokenizers compared per character (issue 17), for runs whose task has held-out text of its
own (the record's `text` block: bench/metrics/per_char.py): each setting's bits and tokens per
character, training and generation characters per second, the task metric and English
forgetting; and per vocabulary expansion one generated sentence against the same method without
it (and per initialisation against the default, the mean of the old pieces' rows).

Quality is paired over test examples (the settings study's test); bits per character and English
forgetting are paired over seeds (Student-t interval); speeds are ratios of means. Every sentence
is computed from the records."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from bench.report.doc import DASH, Section, Table, stat
from bench.report.prepare import Data, cell_of, first
from bench.report.render import anchor
from bench.report.sections.remedies import (
    by_seed,
    ival,
    quality_text,
    quality_word,
    seed_diff,
    sign95,
)
from bench.report.stats import Stat, mean_ci

BITS = "text.{state}.sources.{src}.bits_per_char"
TOKENS = "text.{state}.sources.{src}.tokens_per_char"
GEN = "text.after.generation.chars_per_s"
TRAIN = "train.chars_per_s"
ENGLISH = "d.nll_bpb_delta"


def sources(df: pd.DataFrame) -> list[str]:
    pre, post = "text.after.sources.", ".bits_per_char"
    return sorted({c[len(pre) : -len(post)] for c in df.columns
                   if c.startswith(pre) and c.endswith(post)})  # fmt: skip


def _measured(ok: pd.DataFrame) -> bool:
    cols = [BITS.format(state="after", src=s) for s in sources(ok)]
    return bool(cols) and not ok.empty and bool(ok[cols].notna().any().any())


def has_text(d: Data) -> bool:
    return _measured(d.ok)


def expansion(cfg: Any) -> dict[str, Any]:
    from bench import vocab

    return vocab.active(cfg.get("vocab")) if isinstance(cfg, Mapping) else {}


def pairs(ok: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(reference, variant, what differs): each expansion against its method without one, each
    non-default initialisation against the default one at the same size and source."""
    cfgs = {str(k): g["config"].iloc[0] for k, g in ok.groupby("label")}
    meth = {k: str(g["method"].iloc[0]) for k, g in ok.groupby("label")}
    exp = {k: expansion(c) for k, c in cfgs.items()}
    out = []
    for v, e in sorted(exp.items()):
        if not e:
            continue
        plain = sorted(k for k in exp if not exp[k] and meth[k] == meth[v])
        if plain:
            out.append((plain[0], v, f"+{e['k']} tokens"))
        if e.get("init", "mean") != "mean":
            same = [k for k, f in exp.items() if f and meth[k] == meth[v] and f.get("init") ==
                    "mean" and (f["k"], f.get("source")) == (e["k"], e.get("source"))]  # fmt: skip
            if same:
                out.append((sorted(same)[0], v, f"init {e['init']} vs mean"))
    return out


def ratio(ok: pd.DataFrame, ref: str, var: str, column: str) -> float:
    r, v = by_seed(ok, ref, column), by_seed(ok, var, column)
    return float(v.mean() / r.mean()) if len(r) and len(v) and r.mean() > 0 else math.nan


def _verdict(
    qword: str, metric: str, bits: dict[str, Stat], eng: Stat, speed: dict[str, Stat]
) -> str:
    """Quality per character is the task metric (paired over examples) and held-out bits per
    character on each source (paired over seeds): any of them worse beyond its interval is a
    cost, whatever speed is gained. Every per-seed difference counts only where its 95%
    interval excludes 0 (a speed ratio of 1.02 is noise)."""
    signs = {f"bits/char on {s}": sign95(b.low, b.high) for s, b in bits.items()}
    faster = [n for n, d in speed.items() if sign95(d.low, d.high) > 0]
    worse = [metric] * (qword == "worse") + [n for n, x in signs.items() if x > 0]
    better = [metric] * (qword == "better") + [n for n, x in signs.items() if x < 0]
    pace = f"{' and '.join(faster)} faster per character"
    if worse:
        though = f", though {pace}" if faster else ""
        return f"it costs quality per character ({' and '.join(worse)} worse){though}"
    if sign95(eng.low, eng.high) > 0:
        return "it forgets more English"
    gains = f"better {' and '.join(better)}" if better else ""
    if faster:
        kept = f"{gains}, English kept" if gains else "no measurable loss in quality or English"
        return f"it pays at this scale: {pace}, with {kept}"
    return f"it is {gains} per character, with no speed gain" if gains else "no measurable gain"


def sentence(ok: pd.DataFrame, ref: str, var: str, what: str, metric: str, srcs: list[str]) -> str:
    from bench.report.sections.studies import Comparison, effect

    e = effect(Comparison(what, ref, var, ()), ok, metric)
    q = e.quality
    qword, qtext = quality_word(q), quality_text(q, metric)
    bits = {s: seed_diff(ok, ref, var, BITS.format(state="after", src=s)) for s in srcs}
    eng = seed_diff(ok, ref, var, ENGLISH)
    r_train, r_gen = ratio(ok, ref, var, TRAIN), ratio(ok, ref, var, GEN)
    speed = {
        n: seed_diff(ok, ref, var, col) for n, col in (("training", TRAIN), ("generation", GEN))
    }
    word = _verdict(qword, metric, bits, eng, speed)
    per_src = "; ".join(f"bits/char on {s} {ival(b)}" for s, b in bits.items())
    n = max([eng.n, *(b.n for b in bits.values())])
    return (f"{var} vs {ref} ({what}): {qtext}; {per_src}; training "
            f"characters/s ×{r_train:.2f}, generation ×{r_gen:.2f}; English general bits/byte "
            f"{ival(eng)} (n={n} seeds): {word}.")  # fmt: skip


Tok = tuple[str, int | None, int | None, dict[str, float]]  # name, added k, vocabulary, by source


def _tokenizers(ok: pd.DataFrame, model: str) -> list[Tok]:
    """The model's own tokenizer and each expansion the runs used, with tokens per character by
    source from the records (training does not change a tokenizer)."""
    srcs = sources(ok)
    # one tokenizer per size and candidate source (the rows' init and seed do not change it)
    keys = ok["config"].map(expansion).map(lambda e: (int(e.get("k", 0)), e.get("source")))
    out = []
    for k, src in sorted(set(keys), key=lambda ks: (ks[0], str(ks[1]))):
        g = ok[keys == (k, src)]
        tpc = {s: float(g[TOKENS.format(state="after", src=s)].mean()) for s in srcs}
        if all(math.isfinite(x) and x > 0 for x in tpc.values()):
            out.append((f"{model} +{k:,} ({src})" if k else model, k, None, tpc))
    return out


def _references(d: Data, task: str, ok: pd.DataFrame) -> list[Tok]:
    """The task's reference tokenizers (bench.sweep.write_references), where they were measured
    on the runs' own held-out passages (the same passages and characters per source), else
    none."""
    ref, srcs = d.references.get(task) or {}, sources(ok)
    text = ref.get("text") or {}
    for s in srcs:
        for n in ("n_chars", "n_passages"):
            col = f"text.before.sources.{s}.{n}"
            if col not in ok or not isinstance(text.get(s), Mapping) or n not in text[s]:
                return []
            if set(ok[col].dropna().astype(int)) != {int(text[s][n])}:
                return []
    out: list[Tok] = []
    for t in ref.get("tokenizers") or []:
        tpc = t.get("tokens_per_char") if isinstance(t, Mapping) else None
        if not isinstance(tpc, Mapping) or not set(srcs) <= set(tpc):
            continue
        if all(isinstance(tpc[s], (int, float)) and tpc[s] > 0 for s in srcs):
            name = str(t.get("label") or t.get("name"))
            vocab = t.get("vocabulary")
            out.append((name, None, int(vocab) if vocab else None,
                        {s: float(tpc[s]) for s in srcs}))  # fmt: skip
    return out


def reference_sentence(d: Data, model: str, task: str, ok: pd.DataFrame) -> str | None:
    """Where the model's tokenizers stand against a Chinese-capable one, per source."""
    refs, own = _references(d, task, ok), _tokenizers(ok, model)
    if not refs or not own:
        return None
    srcs = sources(ok)

    def per(tpc: Mapping[str, float], fmt: str = "{:.2f}") -> str:
        return " / ".join(fmt.format(tpc[s]) for s in srcs)

    them = "; ".join(f"{n} (vocabulary {v:,}) {per(t)}" if v else f"{n} {per(t)}"
                     for n, _, v, t in refs)  # fmt: skip
    us = "; ".join(f"{n} {per(t)}" for n, _, _, t in own)
    expanded = [t for t in own if t[1]]
    least = min(expanded or own, key=lambda x: sum(x[3].values()))
    ratio = {s: least[3][s] / refs[0][3][s] for s in srcs}
    subject = f"The finest expansion, {least[0]}," if expanded else f"{model}'s tokenizer"
    verb = "still needs" if min(ratio.values()) > 1 else "needs"
    return (f"Tokens per character of the held-out {' / '.join(srcs)} passages: {us}; "
            f"reference {them}. {subject} {verb} {per(ratio, '{:.2f}×')} as many tokens per "
            f"character as {refs[0][0]}.")  # fmt: skip


def verdicts(d: Data) -> list[str]:
    """Every cell's expansion sentences: what a vocabulary study's report opens with."""
    srcs, out = sources(d.ok), []
    for model, task in d.cells:
        ok = cell_of(d.ok, model, task)
        if _measured(ok):
            metric = first(cell_of(d.df, model, task), "quality.metric") or "quality"
            out += [f"{model} × {task}: " + sentence(ok, r, v, w, metric, srcs)
                    for r, v, w in pairs(ok)]  # fmt: skip
            ref = reference_sentence(d, model, task, ok)
            out += [f"{model} × {task}: {ref}"] if ref else []
    return out


def per_char(d: Data) -> list[Section]:
    out = []
    srcs = sources(d.ok)
    for model, task in d.cells:
        ok = cell_of(d.ok, model, task)
        if not _measured(ok):
            continue
        metric = first(cell_of(d.df, model, task), "quality.metric") or "quality"
        sec = Section(f"Per character: {model} × {task}", anchor(f"per char {model} {task}"))
        sec.blocks.append(
            "Tokenizers compared on characters, the unit every tokenizer of the same text shares: "
            "bits per character on held-out text (total NLL / ln 2 / characters, never per "
            "token), tokens per character, training and generation characters per second; the "
            f"task metric ({metric}) and English forgetting (general-text bits per byte, after − "
            "before). Mean ± 95% t-interval over seeds."
        )
        found = pairs(ok)
        none = ["No expansion here has a run of its method without one."]
        sec.blocks.append([sentence(ok, r, v, w, metric, srcs) for r, v, w in found] or none)
        cols = ["Setting", "n", metric]
        for s in srcs:
            cols += [f"tokens/char {s}", f"bits/char {s}", f"Δ bits/char {s}"]
        cols += ["train chars/s", "gen chars/s", "Δ English bits/byte"]
        rows, data = [], []
        for label, g in sorted(ok.groupby("label"), key=lambda kv: str(kv[0])):
            n = int(g["seed"].nunique())
            row = [str(label), str(n), stat(mean_ci(g["quality.after"]), "num", n)]
            rec: dict[str, Any] = {"setting": label, "n": n}
            for s in srcs:
                after, before = (g[BITS.format(state=t, src=s)] for t in ("after", "before"))
                tpc = mean_ci(g[TOKENS.format(state="after", src=s)])
                bits, delta = mean_ci(after), mean_ci(after - before)
                row += [stat(tpc, "num", n), stat(bits, "num", n), stat(delta, "num", n)]
                rec |= {f"tokens_per_char_{s}": tpc.mean, f"bits_per_char_{s}": bits.mean,
                        f"bits_per_char_{s}_ci95": bits.half}  # fmt: skip
            for key, column in (("train_chars_per_s", TRAIN), ("gen_chars_per_s", GEN),
                                ("english_bpb_delta", ENGLISH)):  # fmt: skip
                st = mean_ci(g[column]) if column in g else mean_ci([])
                row.append(stat(st, "num" if key == "english_bpb_delta" else "sig", n))
                rec[key] = st.mean
            rows.append(row)
            data.append(rec)
        sec.blocks.append(Table(
            f"per-char-{model}-{task}", f"Per-character measures on {model} × {task}: mean ± "
            "95% t-interval over seeds.", cols, rows, pd.DataFrame(data),
        ))  # fmt: skip
        sec.blocks += _tokenizer_table(d, model, task, ok, srcs)
        out.append(sec)
    return out or [Section("Per character", "per-char", [DASH])]


def _tokenizer_table(
    d: Data, model: str, task: str, ok: pd.DataFrame, srcs: list[str]
) -> list[Any]:
    refs = _references(d, task, ok)
    if not refs:
        return []
    rows, data = [], []
    for name, k, vocab, tpc in _tokenizers(ok, model) + [(f"{n} (reference)", *r)
                                                         for n, *r in refs]:  # fmt: skip
        size = f"{vocab:,}" if vocab else f"base + {k:,}" if k else "base"
        rows.append([name, size, *(f"{tpc[s]:.3f}" for s in srcs)])
        data.append({"tokenizer": name, "added_tokens": k, "vocabulary": vocab,
                     **{f"tokens_per_char_{s}": tpc[s] for s in srcs}})  # fmt: skip
    return [Table(
        f"tokenizers-{model}-{task}", "Tokens per character of the same held-out passages: the "
        "model's tokenizer, each expansion the runs used, and Chinese-capable reference "
        "tokenizers (reference/<task>.json; no special tokens).",
        ["Tokenizer", "Vocabulary", *(f"tokens/char {s}" for s in srcs)], rows, pd.DataFrame(data),
    )]  # fmt: skip
