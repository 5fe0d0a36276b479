"""Scaling: quality and forgetting against model size, one figure per task."""

from __future__ import annotations

from bench.report import figures as F
from bench.report.doc import Section, count, finite
from bench.report.frame import slug
from bench.report.prepare import BPB_LABEL, NLL_LABEL, Data, first, size_key, stat_of


def scaling(d: Data) -> Section:
    sec = Section("Scaling with model size", "scaling", [])
    sizes = d.df.groupby("model")["model_size"].max()
    known = list(dict.fromkeys(m for m, _ in d.cells if finite(sizes.get(m))))
    if known:  # say which parameter count the x axis uses
        src = d.df.groupby("model")["model_size_source"].first()
        sec.blocks.append([f"{m}: {count(sizes[m])} ({src[m]})" for m in known])
    for task in sorted(d.ok["task"].unique()):
        g = d.ok[d.ok["task"] == task]
        models = [
            m
            for m in sorted(g["model"].unique(), key=lambda m: size_key(sizes[m]))
            if finite(sizes[m])
        ]
        if len(models) < 2:
            sec.blocks.append(f"{task}: fewer than two models of known size; no curve.")
            continue
        # bits per byte where measured: a tokenizer-free axis shared by every model size
        q_col, q_label = ("quality.answer_bpb_after", "answer bits/byte after (lower is better)")
        if q_col not in g or not g[q_col].notna().any():
            q_col, q_label = "quality.after", f"{first(g, 'quality.metric') or 'quality'} after"
        f_col, f_label = ("d.nll_bpb_delta", BPB_LABEL)
        if not g[f_col].notna().any():
            f_col, f_label = "d.nll_delta", NLL_LABEL
        quality, forget = {}, {}
        for label in d.labels:
            pts_q, pts_f = [], []
            for m in models:
                rows = g[(g["model"] == m) & (g["label"] == label)]
                if len(rows):
                    pts_q.append((float(sizes[m]), stat_of(rows, q_col)))
                    pts_f.append((float(sizes[m]), stat_of(rows, f_col)))
            if pts_q:
                quality[label], forget[label] = pts_q, pts_f
        fig = F.scaling_figure(
            quality=quality,
            forgetting=forget,
            styles=d.styles,
            quality_label=q_label,
            forgetting_label=f_label,
            title=f"{task}: scaling over model size",
        )
        sec.blocks.append(
            F.figure(
                f"scaling__{slug(task)}",
                f"{task}: quality and forgetting "
                "against model size, per method (95% t-interval bars).",
                fig,
            )
        )
    if not sec.blocks:
        sec.blocks.append("No successful runs.")
    return sec
