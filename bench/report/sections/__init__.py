"""What the report says: results DataFrame -> sections of text, tables and figures.

Pure: figures are rendered into memory (:class:`bench.report.doc.Figure` holds the PNG and PDF
bytes); only ``bench.report.build_report`` writes files. The aggregation rules are in
:mod:`bench.report.prepare`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from bench.report.doc import Section, Table
from bench.report.prepare import prepare
from bench.report.sections.answers import answers
from bench.report.sections.behaviour import hallucination, probes, repetition
from bench.report.sections.eval_cost import eval_cost
from bench.report.sections.leaderboards import leaderboards
from bench.report.sections.per_char import has_text, per_char, verdicts
from bench.report.sections.provenance import provenance
from bench.report.sections.runs import (
    failures,
    method_notes,
    not_learned,
    runs_table,
)
from bench.report.sections.scaling import scaling
from bench.report.sections.selection import selection
from bench.report.sections.self_instruct import has_instruct, self_instruct_sections
from bench.report.sections.studies import has_variants, knob_sections
from bench.report.sections.summary import learned, limitations, summary

__all__ = ["build_sections"]


def build_sections(
    df: pd.DataFrame,
    *,
    sweep: str,
    source: str,
    references: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[Section], list[Table]]:
    """All report sections, plus tables written only as files (too wide or one row per run).
    `references`: the sweep's reference measurements by task (bench.report.frame)."""
    d = prepare(df)
    d.references = dict(references or {})
    boards, leaderboard_csv = leaderboards(d)
    sections = [summary(d), provenance(d, sweep=sweep, source=source), *boards, learned(d)]
    lead = verdicts(d) if has_text(d) else []  # a vocabulary study opens with its verdicts
    # a settings study (conf/sweep/study_*.yaml): one section per knob
    opening, knobs = knob_sections(d, lead) if has_variants(d) else (answers(d, {}, lead), [])
    sections = ([opening] if opening else []) + sections + knobs
    if has_text(d):  # a task with held-out text of its own: tokenizers compared per character
        sections += per_char(d)
    if has_instruct(d):  # Self-Instruct (issue 18): the data's yield, a verdict against human
        sections += self_instruct_sections(d)
    sections.append(scaling(d))
    sections += [repetition(d), hallucination(d), probes(d), eval_cost(d)]
    if len(d.candidates):
        sections.append(selection(d))
    if len(d.flagged):
        sections.append(not_learned(d))
    sections += [failures(d), method_notes(d), limitations(d)]
    return sections, [leaderboard_csv, runs_table(d)]
