"""`report`: from `<out>/results.csv`, Table II (and Tables III/IV when ablation records exist) as
LaTeX and Markdown, the accuracy-vs-labels and confusion-matrix figures, and with
`--compare-paper` our numbers against the paper's (`benchmark.reports.publish`, which `run` calls when it ends)."""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.kit.errors import ConfigError
from benchmark.kit.records import read_results
from benchmark.reports.publish import FORMATS, write_reports


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results", type=Path, help="output folder of `run` (holds results.csv)")
    parser.add_argument("--reports", default="reports", type=Path, help="folder for the tables and figures")
    parser.add_argument("--format", default="latex,markdown", help=f"comma-separated: {', '.join(FORMATS)}")
    parser.add_argument("--compare-paper", action="store_true",
                        help="also write compare_paper.md: ours against the paper's printed numbers")


def main(args: argparse.Namespace) -> int:
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    for f in formats:
        if f not in FORMATS:
            raise ConfigError(f"unknown format '{f}'; valid: {', '.join(FORMATS)}")
    written = write_reports(read_results(args.out), args.out, args.reports, formats, args.compare_paper)
    markdown = args.reports / "table2.md"
    if markdown in written:
        print(markdown.read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0

