"""Every table and figure a results table allows, written as files (`report`, and `run` when it ends): Table II,
Tables III/IV and the other fused methods' ablation tables when ablation records exist, figures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.kit.contract import MODES
from benchmark.kit.files import warn_once, write_if_changed, zip_problem
from benchmark.kit.records import run_dir
from benchmark.reports.comparison import paired_differences
from benchmark.reports.names import ABLATION, FULL, dataset_order, in_group, in_table2, method_names, method_order
from benchmark.reports.render import to_latex, to_markdown
from benchmark.reports.tables import ablation_table, preset_ablation_table, preset_families, summarize, table2
from benchmark.reports.texts import compare_paper, comparison_report, health_report

FORMATS = ("latex", "markdown")
TITLES = {"table2": "Table II: semi-supervised classification",
          "table3": "Table III: pre-training components of MICS",
          "table4": "Table IV: fine-tuning components of MICS"}


def write_reports(results: pd.DataFrame, out: Path, reports: Path, formats=FORMATS,
                  compare: bool = False) -> list[Path]:
    """Every table and figure the results allow; returns the files written."""
    from benchmark.reports import plots  # matplotlib is slow to import: only when figures are drawn

    written = []
    tables = [("table2", table2(results), "tab:table2", TITLES["table2"]),
              ("table3", ablation_table(results, "III"), "tab:table3", TITLES["table3"]),
              ("table4", ablation_table(results, "IV"), "tab:table4", TITLES["table4"])]
    names = method_names(results)
    tables += [(f"ablation_{family}", preset_ablation_table(results, family), f"tab:ablation_{family}",
                f"Ablation of {names.get(family, family)}") for family in preset_families(results)]
    for name, table, label, title in tables:
        if table is None:
            continue
        if "latex" in formats:
            written.append(_write(reports / f"{name}.tex", to_latex(table, label)))
        if "markdown" in formats:
            written.append(_write(reports / f"{name}.md", f"# {title}\n\n{to_markdown(table)}"))
    written.append(_write(reports / "health.md", health_report(results)))
    written.append(_write(reports / "comparison.md", comparison_report(results)))
    comparison = paired_differences(results[~in_group(results, ABLATION)])
    if comparison["diff_low"].notna().any():
        written.append(plots.comparison_intervals(comparison, names, reports / "comparison.png"))
    main_rows = results[in_table2(results)]
    if not main_rows.empty:
        written.append(plots.accuracy_vs_labels(summarize(main_rows), names, reports / "accuracy_vs_labels.png"))
        written += _confusion_figures(main_rows, out, reports, plots)
    if compare:
        written.append(_write(reports / "compare_paper.md", compare_paper(results)))
    return written


def _confusion_figures(results: pd.DataFrame, out: Path, reports: Path, plots) -> list[Path]:
    """Per dataset, one confusion matrix per method and mode at the lowest label ratio, pooled over
    seeds, in Table II's row order, from the test outputs each run saved (runs whose files are gone
    or damaged are left out)."""
    written, names = [], method_names(results)
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
                    if (problem := zip_problem(path, full=True)) is not None:
                        warn_once(path, problem, "left out of the confusion matrices; `run` redoes its cell")
                        continue
                    with np.load(path) as saved:
                        classes = [str(c) for c in saved["classes"]]
                        cm = plots.confusion(saved["labels"], saved["logits"].argmax(1), len(classes))
                    counts = cm if counts is None else counts + cm
                if counts is not None:
                    panels.append((f"{names[method]} ({mode})", counts))
        if panels:
            title = f"{dataset}: confusion matrices at {lowest:g}% labels (rows: true class)"
            written.append(plots.confusion_figure(panels, classes, title,
                                                  reports / f"confusion_{dataset}_labels{lowest:g}.png"))
    return written


def _write(path: Path, text: str) -> Path:
    return write_if_changed(path, text.encode("utf-8"))
