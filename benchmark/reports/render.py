"""A `Table` (`benchmark.reports.tables`) as text: a Markdown pipe table and a LaTeX (booktabs) `table*`.
Both writers read one `Layout` of the table, built once, so they cannot disagree on which cell holds what
or which value is bold; each only decides how a cell looks."""
from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
from tabulate import tabulate

from benchmark.reports.comparison import ABOVE, BELOW, LEVEL
from benchmark.reports.names import DATASET_NAMES
from benchmark.reports.tables import Column, Row, Table

MARK_SYMBOLS = {ABOVE: "▲", BELOW: "▼", LEVEL: "≈"}
_LATEX_MARKS = {ABOVE: r"$^{\blacktriangle}$", BELOW: r"$^{\blacktriangledown}$", LEVEL: r"$^{\approx}$"}
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$",
                  "▲": r"$\blacktriangle$", "▼": r"$\blacktriangledown$", "≈": r"$\approx$"}


@dataclass(frozen=True)
class Cell:
    """One cell with a run: the numbers as every format prints them, and what a format may add to them."""

    value: str  # the mean, two decimals
    std: str | None  # the standard deviation over seeds, two decimals; None for a single seed
    best: bool  # the best of its column among the ranked rows
    delta: float | None  # multi mode: the change against the single-mode row
    interval: tuple[float, float] | None  # a single seed's bootstrap 95 % interval
    mark: str | None  # ABOVE / BELOW / LEVEL against the supervised bound
    collapsed: bool  # at least one seed collapsed


@dataclass(frozen=True)
class Line:
    """One body row: its label, its check marks and its cells (None where there is no run)."""

    label: str
    checks: tuple[bool, ...]
    cells: list[Cell | None]


@dataclass(frozen=True)
class Layout:
    """What a rendered table shows, in order, before any format is chosen."""

    caption: str
    check_names: tuple[str, ...]  # the check-mark columns
    groups: list[tuple[str, int]]  # each dataset's printed name and how many columns it spans
    columns: list[tuple[str, str]]  # (dataset's printed name, label ratio as printed)
    blocks: list[tuple[str, bool, list[Line]]]  # (heading, ranked, lines)
    collapsed: bool  # some cell collapsed in at least one seed: the note explains the sign

    @property
    def width(self) -> int:
        return 1 + len(self.check_names) + len(self.columns)


def layout(t: Table) -> Layout:
    """The one reading of `t` both writers format."""
    columns = list(t.mean.columns)
    datasets = [d for d, _ in columns]
    return Layout(
        caption=t.caption, check_names=t.mark_names,
        groups=[(DATASET_NAMES.get(d, d), datasets.count(d)) for d in dict.fromkeys(datasets)],
        columns=[(DATASET_NAMES.get(d, d), f"{lab:g}") for d, lab in columns],
        blocks=[(heading, ranked, [Line(t.labels[row], t.marks[row], [_cell(t, row, col) for col in columns])
                                   for row in rows]) for heading, rows, ranked in t.blocks],
        collapsed=bool((t.collapsed > 0).any().any()))


def _cell(t: Table, row: Row, col: Column) -> Cell | None:
    mean = t.mean.at[row, col]
    if pd.isna(mean):
        return None
    delta, low, mark = t.delta.at[row, col], t.low.at[row, col], t.mark.at[row, col]
    return Cell(value=f"{mean:.2f}", std=f"{t.std.at[row, col]:.2f}" if int(t.n.at[row, col]) > 1 else None,
                best=bool(t.best.at[row, col]), delta=None if pd.isna(delta) else delta,
                interval=None if pd.isna(low) else (low, t.high.at[row, col]),
                mark=mark if mark in MARK_SYMBOLS else None, collapsed=bool(t.collapsed.at[row, col] > 0))


def to_markdown(t: Table) -> str:
    """A pipe table: one italic heading row per block, bold best values, signed changes and, for
    single-seed cells, the bootstrap 95% interval in brackets."""
    lay = layout(t)
    header = ["Method", *lay.check_names, *(f"{name} {ratio}%" for name, ratio in lay.columns)]
    body = []
    for heading, _, lines in lay.blocks:
        if heading:
            body.append([f"*{heading}*"] + [""] * (len(header) - 1))
        body += [[line.label, *("✓" if m else "" for m in line.checks), *map(_markdown_cell, line.cells)]
                 for line in lines]
    table = tabulate(body, headers=header, tablefmt="pipe", disable_numparse=True)
    note = " Brackets: bootstrap 95% interval of the test accuracy (single-seed cells)."
    if lay.collapsed:
        note += " ⚠: collapsed in at least one seed (one class takes > 80 % of the test predictions; reports/health.md)."
    return f"{table}\n\n{lay.caption}{note}\n"


def _markdown_cell(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    text = cell.value + (f" ± {cell.std}" if cell.std is not None else "")
    text = f"**{text}**" if cell.best else text
    if cell.delta is not None:
        text += f" ({cell.delta:+.2f})"
    if cell.interval is not None:
        text += " [{:.1f}, {:.1f}]".format(*cell.interval)
    if cell.mark is not None:
        text += " " + MARK_SYMBOLS[cell.mark]
    if cell.collapsed:
        text += " ⚠"
    return text


def _latex_escape(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^±▲▼≈]", lambda m: _LATEX_SPECIAL[m.group()], text)


def to_latex(t: Table, label: str) -> str:
    """A `table*` for `\\input`: booktabs rules, check marks (amssymb), gains in green and losses
    in red (xcolor)."""
    lay = layout(t)
    first = 1 + len(lay.check_names)
    lines = [
        "% Generated by `python -m benchmark report` from results.csv; do not edit by hand.",
        "% Needs \\usepackage{booktabs}, \\usepackage{xcolor} and \\usepackage{amssymb}.",
        "\\begin{table*}[t]",
        "\\centering",
        f"\\caption{{{_latex_escape(lay.caption)}}}",
        f"\\label{{{label}}}",
        "\\setlength{\\tabcolsep}{4pt}",
        f"\\begin{{tabular}}{{l{'c' * len(lay.check_names)}{'r' * len(lay.columns)}}}",
        "\\toprule",
    ]
    groups, rules, start = [], [], first + 1
    for name, k in lay.groups:
        groups.append(f"\\multicolumn{{{k}}}{{c}}{{{_latex_escape(name)}}}")
        rules.append(f"\\cmidrule(lr){{{start}-{start + k - 1}}}")
        start += k
    lines.append(" & " * first + " & ".join(groups) + " \\\\")
    lines.append(" ".join(rules))
    lines.append(" & ".join(["Method", *map(_latex_escape, lay.check_names), *(f"{ratio}\\%" for _, ratio in lay.columns)])
                 + " \\\\")
    for heading, ranked, block in lay.blocks:
        lines.append("\\midrule")
        if not ranked:
            lines.append(f"\\multicolumn{{{lay.width}}}{{l}}{{\\textit{{{_latex_escape(heading)}}}}} \\\\")
        lines += [" & ".join([_latex_escape(line.label), *("\\checkmark" if m else "" for m in line.checks),
                              *map(_latex_cell, line.cells)]) + " \\\\" for line in block]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table*}", ""]
    return "\n".join(lines)


def _latex_cell(cell: Cell | None) -> str:
    if cell is None:
        return "--"
    text = cell.value + (f"\\,$\\pm$\\,{cell.std}" if cell.std is not None else "")
    text = f"\\textbf{{{text}}}" if cell.best else text
    text += _LATEX_MARKS.get(cell.mark, "")
    if cell.delta is not None:
        text += " " + _latex_delta(cell.delta)
    return text


def _latex_delta(delta: float) -> str:
    shown = round(delta, 2)
    if shown > 0:
        return f"\\textcolor{{green!50!black}}{{(+{shown:.2f})}}"
    if shown < 0:
        return f"\\textcolor{{red}}{{($-${-shown:.2f})}}"
    return "(0.00)"
