"""`report`: from `<out>/results.csv`, Table II (and Tables III/IV when ablation records exist) as
LaTeX and Markdown, the accuracy-vs-labels and confusion-matrix figures, and with
`--compare-paper` our numbers against the paper's (`benchmark.publish`, which `run` calls when it ends)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..publish import FORMATS, write_reports
from ..results import read_results


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


def write_reports(results: pd.DataFrame, out: Path, reports: Path, formats=FORMATS,
                  compare: bool = False) -> list[Path]:
    """Every table and figure the results allow; returns the files written."""
    from .. import plots  # matplotlib is slow to import: only when figures are drawn

    written = []
    tables = [("table2", table2(results), "tab:table2"),
              ("table3", ablation_table(results, "III"), "tab:table3"),
              ("table4", ablation_table(results, "IV"), "tab:table4")]
    for name, table, label in tables:
        if table is None:
            continue
        if "latex" in formats:
            written.append(_write(reports / f"{name}.tex", to_latex(table, label)))
        if "markdown" in formats:
            written.append(_write(reports / f"{name}.md", f"# {TITLES[name]}\n\n{to_markdown(table)}"))
    written.append(_write(reports / "health.md", health_report(results)))
    main_rows = results[~results["method"].isin(ablation_presets())]
    if not main_rows.empty:
        written.append(plots.accuracy_vs_labels(summarize(main_rows), reports / "accuracy_vs_labels.png"))
        written += _confusion_figures(main_rows, out, reports, plots)
    if compare:
        written.append(_write(reports / "compare_paper.md", compare_paper(results)))
    return written


def _confusion_figures(results: pd.DataFrame, out: Path, reports: Path, plots) -> list[Path]:
    """Per dataset, one confusion matrix per method and mode at the lowest label ratio, pooled over
    seeds, in Table II's row order, from the test outputs each run saved (runs whose files are gone
    are left out)."""
    written = []
    for dataset in dataset_order(results["dataset"]):
        rows = results[(results["dataset"] == dataset) & (results["method"] != FULL)]
        if rows.empty:
            continue
        lowest = rows["labels"].min()
        rows = rows[rows["labels"] == lowest]
        panels, classes = [], []
        for mode in MODES:
            for method in method_order(rows.loc[rows["mode"] == mode, "method"]):
                counts = None
                for seed in rows.loc[(rows["method"] == method) & (rows["mode"] == mode), "seed"]:
                    path = run_dir(out, dataset, method, mode, lowest, int(seed)) / "test_outputs.npz"
                    if not path.exists():
                        continue
                    with np.load(path) as saved:
                        classes = [str(c) for c in saved["classes"]]
                        cm = plots.confusion(saved["labels"], saved["logits"].argmax(1), len(classes))
                    counts = cm if counts is None else counts + cm
                if counts is not None:
                    panels.append((f"{method_name(method)} ({mode})", counts))
        if panels:
            title = f"{dataset}: confusion matrices at {lowest:g}% labels (rows: true class)"
            written.append(plots.confusion_figure(panels, classes, title,
                                                  reports / f"confusion_{dataset}_labels{lowest:g}.png"))
    return written


def _write(path: Path, text: str) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
