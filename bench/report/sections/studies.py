"""Studies of a method's own settings (conf/sweep/study_*.yaml): one section per knob, with a
figure of each setting's quality, a table of paired differences against the method's default
setting, and one generated verdict per setting.

Which setting is the default: the one conf/method/<name>.yaml composes, i.e. the runs labelled
``methods.get(name).label(methods.defaults(name))`` (the bare method name; ``freeze:all-2`` for
freeze). Labels are written into each record when it runs, so this holds as long as that YAML's
defaults are the ones the records ran against; a sweep without that label gets a note, not a
guess. A *knob* is the set of settings (the method's ``label_keys``) in which a label's runs
differ from the default's, read from the records' own configs. A method declared a variant of
another (``variant_of``: QLoRA of LoRA, P-tuning v2 of prefix tuning) is also compared with it
wherever their shared settings are equal and each one's own settings are at its defaults.

Every sentence here is computed from the records: change the numbers and the words change."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from bench import methods
from bench.methods import ConfigError
from bench.report import figures as F
from bench.report.doc import DASH, Note, Section, Table, count, nbytes, num, sig, stat
from bench.report.frame import slug
from bench.report.prepare import Data, cell_of, first, stat_of
from bench.report.render import anchor
from bench.report.sections.answers import answers
from bench.report.sections.leaderboards import PerLabel, cell_view, machines_note
from bench.report.sections.remedies import fronts, is_remedy, remedy_comparisons
from bench.report.sections.selection import lr_of
from bench.report.sections.significance import ALPHA
from bench.report.stats import Paired, Stat, paired, proportion_ci

SCORE = "quality.per_example.after.score"
BITS = "quality.per_example.after.bits"
BYTES = "quality.per_example.after.bytes"


@dataclass(frozen=True)
class Comparison:
    """One setting against its reference (the method's default setting, or the method it is a
    variant of), in one cell."""

    knob: str  # section title: "lora: target_modules", "qlora vs lora: 4-bit quantized base"
    reference: str  # label
    variant: str  # label
    changed: tuple[tuple[str, Any, Any], ...]  # (key, reference value, variant value)


@dataclass(frozen=True)
class Effect:
    """Variant − reference over the seeds both have and the test examples both scored."""

    comparison: Comparison
    metric: str  # the task metric's name (exact_match, ...)
    quality: Paired | None  # Δ task metric (higher is better)
    bpb: Paired | None  # Δ answer bits per byte (lower is better)
    seeds: tuple[int, ...]
    n_examples: int
    base_high: float  # upper end of the base model's 95% Wilson interval on the task metric
    signal: bool  # either side's mean task metric is above base_high

    @property
    def by_quality(self) -> bool:
        """The verdict is on the task metric where either side learned it beyond the base,
        else on answer bits per byte (which moves before exact match does)."""
        return self.signal and self.quality is not None


def _config(rows: pd.DataFrame) -> dict[str, Any]:
    cfg = rows["config"].iloc[0] if "config" in rows and len(rows) else None
    return dict(cfg.get("method") or {}) if isinstance(cfg, Mapping) else {}


def _method(name: str) -> methods.Method | None:
    try:
        return methods.get(name)
    except ConfigError:  # records of a method this code no longer registers
        return None


def default_label(name: str) -> str | None:
    """The label of a method's default setting (conf/method/<name>.yaml)."""
    m = _method(name)
    return m.label(methods.defaults(name)) if m else None


def _labels_of(ok: pd.DataFrame) -> dict[str, list[str]]:
    """method -> its labels in `ok`, in report order."""
    out: dict[str, list[str]] = {}
    for label in sorted(ok["label"].unique(), key=methods.rank):
        name = first(ok[ok["label"] == label], "method") or str(label).split(":", 1)[0]
        out.setdefault(name, []).append(str(label))
    return out


def has_variants(d: Data) -> bool:
    """Whether some method has runs of several settings in one cell (a settings study)."""
    ok = d.df[d.df["status"] == "success"]
    return any(len(labels) > 1 for model, task in d.cells
               for labels in _labels_of(cell_of(ok, model, task)).values())  # fmt: skip


def comparisons(ok: pd.DataFrame) -> tuple[list[Comparison], list[str]]:
    """Every setting of a cell against its reference, and notes on what could not be compared."""
    # remedies (a stream, tag or decoding on a setting's label) pair with that bare setting
    by_method = {m: [k for k in ks if not is_remedy(k)] for m, ks in _labels_of(ok).items()}
    cfgs = {k: _config(ok[ok["label"] == k]) for ks in by_method.values() for k in ks}
    out: list[Comparison] = []
    notes: list[str] = []
    for name, labels in by_method.items():
        m = _method(name)
        if m is None:
            continue
        ref = default_label(name)
        if len(labels) > 1 and ref not in labels:
            notes.append(f"{name}: no run of its default setting ({ref}) here, so its "
                         f"{len(labels)} settings are not compared.")  # fmt: skip
        elif len(labels) > 1:
            sr, own = m.settings(cfgs[ref]), []
            for label in labels:
                if label == ref:
                    continue
                sv = m.settings(cfgs[label])
                changed = tuple((k, sr.get(k), sv.get(k)) for k in m.label_keys
                                if sr.get(k) != sv.get(k))  # fmt: skip
                knob = ", ".join(k for k, _, _ in changed) or "(no recorded difference)"
                own.append(Comparison(f"{name}: {knob}", ref, label, changed))
            keys = list(m.label_keys)  # knobs in the order the method lists its settings
            out += sorted(own, key=lambda c: [keys.index(k) for k, _, _ in c.changed])
        parent = _method(m.variant_of) if m.variant_of else None
        if parent is not None and parent.name in by_method:
            out += _variant_pairs(m, parent, by_method[parent.name], labels, cfgs)
    return out + remedy_comparisons(ok), notes


def _variant_pairs(
    m: methods.Method,
    parent: methods.Method,
    parent_labels: list[str],
    labels: list[str],
    cfgs: Mapping[str, dict[str, Any]],
) -> list[Comparison]:
    """`m` vs the method it is a variant of, wherever their shared settings are equal and each
    one's own settings are at its defaults: the one declared change is all that differs."""
    shared = [k for k in m.label_keys if k in parent.label_keys]
    m_own = m.settings(methods.defaults(m.name))
    p_own = parent.settings(methods.defaults(parent.name))
    out = []
    for v in labels:
        sv = m.settings(cfgs[v])
        if any(sv.get(k) != m_own.get(k) for k in m.label_keys if k not in shared):
            continue
        for p in parent_labels:
            sp = parent.settings(cfgs[p])
            if any(sp.get(k) != p_own.get(k) for k in parent.label_keys if k not in shared):
                continue
            if all(sv.get(k) == sp.get(k) for k in shared):
                knob = f"{m.name} vs {parent.name}: {m.variant_change}"
                out.append(Comparison(knob, p, v, (("method", parent.name, m.name),)))
    return out


# ------------------------------------------------------------------------------ the numbers


def example_scores(rows: pd.DataFrame, column: str) -> dict[int, list[float]]:
    if column not in rows:
        return {}
    return {int(s): [float(x) for x in v] for s, v in zip(rows["seed"], rows[column], strict=True)
            if isinstance(v, list) and v and pd.notna(s)}  # fmt: skip


def _bpb_terms(rows: pd.DataFrame) -> dict[int, list[float]]:
    """Per seed, each test example's answer bits times n / (all answers' bytes): their mean is
    the run's answer bits per byte (total bits / total bytes), so a paired mean difference of
    these is exactly the difference in answer bits per byte (both sides score the same answers,
    hence the same bytes)."""
    bits, nbytes = example_scores(rows, BITS), example_scores(rows, BYTES)
    out = {}
    for s, b in bits.items():
        total = sum(nbytes.get(s, []))
        if len(nbytes.get(s, [])) == len(b) and total > 0:
            out[s] = [x * len(b) / total for x in b]
    return out


def paired_over(
    a: dict[int, list[float]], b: dict[int, list[float]], seeds: list[int]
) -> Paired | None:
    if not seeds or any(len(a[s]) != len(b[s]) for s in seeds):
        return None  # a paired test needs the same examples
    if len({len(a[s]) for s in seeds}) != 1:
        return None
    return paired([a[s] for s in seeds], [b[s] for s in seeds])


def effect(c: Comparison, ok: pd.DataFrame, metric: str) -> Effect:
    ref, var = ok[ok["label"] == c.reference], ok[ok["label"] == c.variant]
    qr, qv = example_scores(ref, SCORE), example_scores(var, SCORE)
    seeds = sorted(set(qr) & set(qv))
    quality = paired_over(qv, qr, seeds)
    br, bv = _bpb_terms(ref), _bpb_terms(var)
    bseeds = [s for s in seeds if s in br and s in bv]
    bpb = paired_over(bv, br, bseeds) if bseeds == seeds else None
    base = example_scores(ref, "quality.per_example.before.score")
    high = math.nan
    if base:
        scores = next(iter(base.values()))
        if all(x in (0.0, 1.0) for x in scores):
            high = proportion_ci(int(sum(scores)), len(scores))[1]
    means = [float(np.mean([x for s in seeds for x in q[s]])) for q in (qr, qv) if seeds]
    signal = bool(means) and math.isfinite(high) and max(means) > high
    n = (quality or bpb).n_examples if (quality or bpb) else 0
    return Effect(c, metric, quality, bpb, tuple(seeds), n, high, signal)


def interval(p: Paired) -> str:
    return f"{p.diff:+.3f} [{p.low:+.3f}, {p.high:+.3f}]"


def _word(p: Paired, higher_is_better: bool) -> str:
    if p.p >= ALPHA:
        return "not distinguishable"
    return "better" if (p.diff > 0) == higher_is_better else "worse"


def verdict(e: Effect) -> str:
    """One sentence: the difference, its 95% interval, what the paired test says, and the n."""
    c = e.comparison
    head = f"{c.variant} vs {c.reference}"
    k = len(e.seeds)
    n = f"n={k} seed{'s' if k != 1 else ''} × {e.n_examples} examples"
    if e.by_quality:
        q = e.quality
        assert q is not None
        return (f"{head}: Δ {e.metric} {interval(q)}, {_word(q, True)} "
                f"(p={q.p:.2g}, {n}).")  # fmt: skip
    if e.bpb is not None:
        why = ("neither beats the base model's "
               f"{e.metric} beyond its 95% interval (upper end {num(e.base_high)})"
               if math.isfinite(e.base_high)
               else f"the base model's {e.metric} interval is unknown here")  # fmt: skip
        return (f"{head}: {why}, so by answer bits per byte: Δ {interval(e.bpb)}, "
                f"{_word(e.bpb, False)} (p={e.bpb.p:.2g}, {n}).")  # fmt: skip
    return f"{head}: no per-example scores on shared seeds in these records, so no paired test."


# ------------------------------------------------------------------------------ the section


def knob_figure(  # here, not in figures.py (at its size limit), with that module's helpers
    panels: Sequence[tuple[str, Mapping[str, Stat], float]],
    styles: Mapping[str, tuple[str, str]],
    title: str,
) -> MplFigure:
    """One knob of a settings study: per panel (x label, {setting: mean with its 95% t-interval
    over seeds}, the base model's value, drawn dashed), the method's default setting first."""
    with mpl.rc_context(F._RC):
        pad = F._label_pad([k for _, values, _ in panels for k in values])
        rows = max((len(v) for _, v, _ in panels), default=1)
        fig, axes = F._panels((5.2 * len(panels), 1.5 + 0.32 * rows), [pad] * len(panels))
        for ax, (xlabel, values, base) in zip(axes, panels, strict=True):
            F._bars(ax, values, styles, xlabel, xlabel)
            if math.isfinite(base):
                ax.axvline(base, color="0.3", ls="--", lw=1)
        fig.suptitle(title + " (dashed: base model)")
        return fig


def _value(v: Any) -> str:
    if isinstance(v, bool):  # as the YAML and the command line write it
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return DASH if v is None else str(v)


def _changed(c: Comparison) -> str:
    return "; ".join(f"{k}: {_value(a)} → {_value(b)}" for k, a, b in c.changed) or DASH


def _p(p: Paired | None) -> tuple[str, str]:
    return (interval(p), f"{p.p:.2g}") if p else (DASH, DASH)


def _row(label: str, changed: str, per: PerLabel, storage: bool, e: Effect | None) -> list[str]:
    rows, s, _ = per[label]
    n = int(rows["seed"].nunique()) if len(rows) else 0
    dq, pq = _p(e.quality if e else None)
    db, pb = _p(e.bpb if e else None)
    out = [
        label, changed, lr_of(rows.iloc[0]) if len(rows) else DASH, str(n),
        stat(s["quality_after"], "num", n), dq, pq, stat(s["answer_bpb_after"], "num", n), db, pb,
        stat(s["nll_bpb_delta"] if s["nll_bpb_delta"].n else s["nll_delta"], "num", n),
        count(s["trainable_params"].mean), nbytes(s["adapter_bytes"].mean),
        stat(s["peak_memory_bytes"], "bytes", n), stat(s["train_tokens_per_s"], "sig", n),
    ]  # fmt: skip
    if storage:
        out.append(sig(stat_of(rows, "memory.base_storage.bits_per_param").mean))
    return out


def _data(label: str, per: PerLabel, e: Effect | None) -> dict[str, Any]:
    rows, s, _ = per[label]
    out: dict[str, Any] = {"setting": label, "n": int(rows["seed"].nunique()) if len(rows) else 0}
    for key in ("quality_after", "answer_bpb_after", "nll_bpb_delta", "trainable_params",
                "adapter_bytes", "peak_memory_bytes", "train_tokens_per_s"):  # fmt: skip
        out |= {f"{key}_mean": s[key].mean, f"{key}_ci95": s[key].half}
    for name in ("quality", "bpb"):
        p = getattr(e, name) if e else None
        out |= {f"diff_{name}": p.diff if p else math.nan, f"diff_{name}_low": p.low if p
                else math.nan, f"diff_{name}_high": p.high if p else math.nan,
                f"p_{name}": p.p if p else math.nan}  # fmt: skip
    out["bits_per_param"] = stat_of(rows, "memory.base_storage.bits_per_param").mean
    return out


def _knob(d: Data, model: str, task: str, knob: str, effects: list[Effect]) -> Section:
    per, _ = cell_view(d, model, task)
    metric = effects[0].metric
    refs = list(dict.fromkeys(e.comparison.reference for e in effects))
    labels = list(dict.fromkeys(
        k for r in refs for k in [r] + [e.comparison.variant for e in effects
                                       if e.comparison.reference == r]))  # fmt: skip
    storage = any(stat_of(per[k][0], "memory.base_storage.bits_per_param").n for k in labels)
    name = slug(f"study {model} {task} {knob}")
    sec = Section(knob, anchor(f"study {model} {task} {knob}"), level=3)
    n_ex = sorted({e.n_examples for e in effects if e.n_examples})
    sec.blocks.append(
        f"On {model} × {task}, each setting against {' / '.join(refs)} (the reference"
        f"{'s' if len(refs) > 1 else ''}), over the seeds both have and the same "
        f"{' / '.join(map(str, n_ex)) or DASH} test examples."
    )
    sec.blocks.append([verdict(e) for e in effects])
    n_min = min(int(per[k][0]["seed"].nunique()) for k in labels)
    if n_min > 1:
        base = per[refs[0]][0]
        panels = [(metric, {k: per[k][1]["quality_after"] for k in labels},
                   stat_of(base, "quality.before").mean),
                  ("answer bits/byte", {k: per[k][1]["answer_bpb_after"] for k in labels},
                   stat_of(base, "quality.answer_bpb_before").mean)]  # fmt: skip
        sec.blocks.append(F.figure(
            name,
            f"{knob} on {model} × {task}: {metric} and answer bits per byte of each setting, "
            "mean and 95% t-interval over seeds; dashed: the base model.",
            knob_figure(panels, d.styles, knob),
        ))  # fmt: skip
    else:
        why = f"A setting here has {n_min} seed: no interval over seeds, so no figure."
        sec.blocks.append(Note(why + " The paired tests are over test examples."))
    cols = ["Setting", "Changed", "LR", "n", metric, f"Δ {metric} [95%]", "p", "Answer bits/byte",
            "Δ bits/byte [95%]", "p", "Δ general bits/byte", "Trainable", "Adapter",
            "Peak memory", "Train tok/s"] + (["Base bits/param"] if storage else [])  # fmt: skip
    if note := machines_note(per, labels):
        sec.blocks.append(note)
    by = {e.comparison.variant: e for e in effects}
    rows, data = [], []
    for k in labels:
        e = by.get(k) if k not in refs else None
        rows.append(_row(k, _changed(e.comparison) if e else "reference", per, storage, e))
        data.append({"knob": knob, "reference": e.comparison.reference if e else k,
                     **_data(k, per, e)})  # fmt: skip
    sec.blocks.append(Table(
        name, f"{knob} on {model} × {task}: paired differences against the reference (Δ = "
        "setting − reference; percentile-bootstrap 95% interval over test examples, each "
        "averaged over the shared seeds; sign-flip permutation p). Other columns: mean ± 95% "
        "t-interval over seeds.", cols, rows, pd.DataFrame(data),
    ))  # fmt: skip
    return sec


def knob_sections(d: Data, lead: Sequence[str] = ()) -> tuple[Section | None, list[Section]]:
    """The intro and one section per (cell, knob); shown only for sweeps with settings studies.
    Also the answers the report opens with (answers.py): `lead`, then the remedies'."""
    intro = Section("Settings studies", "studies", [
        "Each knob's settings against the method's default setting (conf/method/<name>.yaml; "
        "its runs are labelled by the bare method name, freeze's default `freeze:all-2`), and "
        "methods declared a variant of another (QLoRA of LoRA, P-tuning v2 of prefix tuning) "
        "against it at equal shared settings. Differences are paired: the same test examples, "
        "each example's score averaged over the seeds both settings have, a percentile "
        f"bootstrap 95% interval and a sign-flip permutation p; 'not distinguishable' means "
        f"p ≥ {ALPHA}. The verdict is on the task metric where either setting beats the base "
        "model beyond its 95% Wilson interval, else on answer bits per byte (lower is better).",
    ])  # fmt: skip
    out = [intro]
    by_cell: dict[tuple[str, str], list[Effect]] = {}
    for model, task in d.cells:
        ok = cell_of(d.ok, model, task)
        if ok.empty:
            continue
        found, notes = comparisons(ok)
        metric = first(cell_of(d.df, model, task), "quality.metric") or "quality"
        intro.blocks += [Note(f"{model} × {task}: {n}") for n in notes]
        flagged = cell_of(d.flagged, model, task)
        if len(flagged):
            names = sorted({str(x) for x in flagged["label"]})
            intro.blocks.append(Note(f"{model} × {task}: runs that failed to learn are left out "
                                     f"of these comparisons: {', '.join(names)}."))  # fmt: skip
        knobs: dict[str, list[Effect]] = {}
        for c in found:
            knobs.setdefault(c.knob, []).append(effect(c, ok, metric))
        out += [_knob(d, model, task, knob, effects) for knob, effects in knobs.items()]
        by_cell[model, task] = [e for effects in knobs.values() for e in effects]
    if len(out) == 1:
        intro.blocks.append(Note("No fully evaluated runs of two settings of one method yet."))
    return answers(d, by_cell, lead), out + fronts(d, by_cell)
