"""Reports: a pure function of a results folder.

``build_report(results/<sweep>, reports/<sweep>)`` writes ``index.html`` (self-contained),
``report.md``, ``tables/*.csv`` + ``tables/*.tex`` (booktabs) and ``figures/*.png`` + ``*.pdf``.
The same folder gives byte-identical tables and Markdown (nothing depends on the clock, the
machine or the absolute path).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.report.doc import Figure, Note, Section, Table
from bench.report.frame import frame_of, load_records, load_references, load_results
from bench.report.render import markdown, page, table_csv, table_tex
from bench.report.sections import build_sections

__all__ = ["build_report", "load_results"]

_REPORT_MARKERS = ("index.html", "report.md")


def build_report(results_dir: Path, out_dir: Path) -> Path:
    """Write the report of ``results_dir`` into ``out_dir`` (replaced whole); return out_dir."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"no results folder {results_dir}")
    _check_replaceable(out_dir)
    skipped: list[str] = []
    records = load_records(results_dir, skipped)
    df = frame_of(records)
    sweeps = sorted({str(r["sweep"]) for r in records if r.get("sweep")})
    sweep = ", ".join(sweeps) if sweeps else results_dir.name
    source = f"results/{results_dir.name}"  # relative: the report must not depend on the path

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target, then swap: a failed build never leaves half a report.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a report is meant to be read
    try:
        sections, files = build_sections(
            df, sweep=sweep, source=source, references=load_references(results_dir)
        )
        if skipped:  # a reader must see that the tables leave files out
            sections.append(_unreadable(skipped))
        _write(tmp, f"Fine-tuning benchmark: sweep {sweep}", sections, files, source)
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write(
    folder: Path, title: str, sections: list[Section], files: list[Table], source: str
) -> None:
    """The one place the report touches the disk: tables, figures, Markdown, HTML."""
    (folder / "tables").mkdir()
    (folder / "figures").mkdir()
    blocks = [b for s in sections for b in s.blocks]
    for table in [b for b in blocks if isinstance(b, Table)] + files:
        (folder / "tables" / f"{table.name}.csv").write_text(table_csv(table), encoding="utf-8")
        if table.tex:
            tex = table_tex(table, source)
            (folder / "tables" / f"{table.name}.tex").write_text(tex, encoding="utf-8")
    for fig in (b for b in blocks if isinstance(b, Figure)):
        (folder / "figures" / f"{fig.name}.png").write_bytes(fig.png)
        (folder / "figures" / f"{fig.name}.pdf").write_bytes(fig.pdf)
    (folder / "report.md").write_text(markdown(title, sections), encoding="utf-8")
    (folder / "index.html").write_text(page(title, sections), encoding="utf-8")


def _unreadable(skipped: list[str]) -> Section:
    text = (
        f"{len(skipped)} JSON file(s) in the results folder are not readable run records and "
        "are left out of every table (a rerun of the sweep redoes their runs):"
    )
    return Section(
        "Unreadable files", "unreadable", [Note(text), [s[0].upper() + s[1:] for s in skipped]]
    )


def _check_replaceable(out_dir: Path) -> None:
    """Only an empty folder or a previous report may be replaced (never, say, a paper)."""
    is_report = any((out_dir / m).exists() for m in _REPORT_MARKERS)
    if out_dir.exists() and any(out_dir.iterdir()) and not is_report:
        raise FileExistsError(f"{out_dir} exists and is not a report; not replacing it")


def _replace(new: Path, old: Path) -> None:
    _check_replaceable(old)
    if old.exists():
        shutil.rmtree(old)
    new.rename(old)
