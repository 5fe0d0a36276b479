"""CLI: ``python -m bench.report --sweep default`` (results/default -> reports/default), or
``--results DIR --out DIR``; ``--logger offline|online`` also logs the report to W&B."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.report import build_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    ap.add_argument("--sweep", help="sweep name: reads results/<sweep>, writes reports/<sweep>")
    ap.add_argument("--results", type=Path, help="results folder (overrides --sweep)")
    ap.add_argument("--out", type=Path, help="report folder (default reports/<folder name>)")
    ap.add_argument(
        "--logger",
        choices=("none", "offline", "online"),
        default="none",
        help="also log the report as a W&B artifact (default: none)",
    )
    ap.add_argument("--project", default="ft-bench", help="W&B project for --logger")
    args = ap.parse_args(argv)
    if args.results is None and args.sweep is None:
        ap.error("give --sweep NAME or --results DIR")
    results = args.results or Path("results") / args.sweep
    out = args.out or Path("reports") / results.name
    if not results.is_dir():
        print(f"error: no results folder {results}", file=sys.stderr)
        return 2
    report = build_report(results, out)
    print(f"report: {report / 'index.html'}")
    if args.logger != "none":
        from bench.tracking import log_report_artifact

        log_report_artifact(report, results.name, args.logger, results, project=args.project)
    return 0


if __name__ == "__main__":
    sys.exit(main())
