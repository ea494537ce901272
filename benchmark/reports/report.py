"""Tables from `results.csv`: pandas frames first, then LaTeX (booktabs) and Markdown in the paper's
layout. Only our own numbers go into these tables; the paper's printed numbers appear only in the
separate comparison (`compare_paper`).

Table II: rows are the single-mode baselines, then the multi-mode baselines (with, in parentheses,
the change against their single-mode row), then the fused methods (MICS, CMC, RFPMSS), then the supervised bounds in a block of their
own that is not ranked; columns are datasets x label ratios (50, 30, 10, 5). The best value of each
column is bold. With several seeds a cell is mean +- standard deviation; with one seed the
Markdown table also shows the run's bootstrap 95% interval."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd
from tabulate import tabulate

from benchmark.kit.contract import MODES
from benchmark.kit.data import DATASETS
from benchmark.reports.comparison import ABOVE, BELOW, LEVEL, detectable_difference, paired_differences
from benchmark.reports.reference import COMPONENT_NAMES, COMPONENTS, ablation_layout, paper_numbers, paper_order

# The groups a method registers in (written into each record): Table II, ablation presets (their own tables),
# controls (the grid's power: in reports/comparison.md, not Table II).
TABLE2, ABLATION, CONTROL = "table2", "ablation", "control"
DATASET_NAMES = {"synthetic": "Synthetic", "kvasir": "Kvasir", "kvasir-v2": "Kvasir-v2", "paired": "Paired"}
BOUNDS = ("supervised", "fullysupervised")
FULL = "fullysupervised"  # trained on every label: one value per dataset, shown in every column
NBI_SOURCES = {
    "spectral": "NBI simulated from each WLI image by the spectral model (benchmark/kit/data/spectral.py)",
    "paired": "NBI images supplied as pairs",
}
Row = tuple[str, str]  # (method, mode)
Column = tuple[str, float]  # (dataset, labels)


def method_names(results: pd.DataFrame) -> dict[str, str]:
    """Method -> the label its records carry (the paper's spelling, declared at registration)."""
    return dict(zip(results["method"], results["label"].fillna(results["method"])))


def in_group(results: pd.DataFrame, group: str) -> pd.Series:
    return results["group"] == group


def method_order(names) -> list[str]:
    """Table II's order in the paper, then the methods it does not have, alphabetically."""
    known = [m for m in paper_order() if m in set(names)]
    return known + sorted(set(names) - set(known))


def dataset_order(names) -> list[str]:
    known = [d for d in DATASETS if d in set(names)]
    return known + sorted(set(names) - set(DATASETS))


def _collapsed_column(results: pd.DataFrame) -> pd.Series:
    """results.csv's `collapsed` as booleans (False for tables written before the column existed)."""
    if "collapsed" not in results:
        return pd.Series(False, index=results.index)
    return results["collapsed"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, method, mode, labels): mean and standard deviation of test_top1 over
    seeds, the number of seeds, for a single seed its bootstrap 95% interval (low, high), and how many
    of its seeds collapsed (`benchmark.kit.health`)."""
    results = results.assign(collapsed=_collapsed_column(results))
    summary = (results.groupby(["dataset", "method", "mode", "labels"])
               .agg(mean=("test_top1", "mean"), std=("test_top1", "std"), n=("seed", "nunique"),
                    low=("ci95_low", "first"), high=("ci95_high", "first"), collapsed=("collapsed", "sum"))
               .reset_index())
    summary.loc[summary["n"] > 1, ["low", "high"]] = math.nan
    return summary


@dataclass
class Table:
    """A paper-style table as pandas frames indexed by rows (method, mode) and columns
    (dataset, labels); the renderers only format what is here."""

    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame
    collapsed: pd.DataFrame  # how many seeds of the cell put > 80 % of the test set in one class
    mark: pd.DataFrame  # against the supervised bound, paired by seed: above / below / level / None
    delta: pd.DataFrame  # multi-mode rows: change against the single-mode row; NaN elsewhere
    best: pd.DataFrame  # bool: the best value of its column among the ranked rows
    blocks: list[tuple[str, list[Row], bool]]  # (heading, rows, ranked) in order
    labels: dict[Row, str]  # row label
    mark_names: tuple[str, ...]  # check-mark columns (modalities, or ablation components)
    marks: dict[Row, tuple[bool, ...]]
    caption: str


def _frames(summary: pd.DataFrame, rows: list[Row], columns: list[Column]) -> dict[str, pd.DataFrame]:
    wide = summary.set_index(["method", "mode", "dataset", "labels"]).unstack(["dataset", "labels"])
    index = pd.MultiIndex.from_tuples(rows, names=["method", "mode"])
    cols = pd.MultiIndex.from_tuples(columns, names=["dataset", "labels"])
    return {k: wide[k].reindex(index=index, columns=cols) for k in ("mean", "std", "n", "low", "high", "collapsed")}


def _best(mean: pd.DataFrame, ranked: list[Row]) -> pd.DataFrame:
    """True where a ranked row holds its column's best value as printed (ties are all bold)."""
    shown = mean.loc[ranked].astype(float).round(2)
    best = shown.eq(shown.max()) & shown.notna()
    return best.reindex(index=mean.index, fill_value=False)


def _columns(summary: pd.DataFrame) -> list[Column]:
    """Datasets in the suite's order, label ratios from high to low (the paper's 50, 30, 10, 5)."""
    cols = summary[["dataset", "labels"]].drop_duplicates()
    return [(d, lab) for d in dataset_order(cols["dataset"])
            for lab in sorted(cols.loc[cols["dataset"] == d, "labels"], reverse=True)]


def _spread_full(summary: pd.DataFrame, columns: list[Column]) -> pd.DataFrame:
    """The fully supervised bound, trained once per dataset on every label, in each column of its dataset."""
    full = summary[summary["method"] == FULL].sort_values("labels").groupby("dataset").tail(1)
    copies = [row._replace(labels=lab) for row in full.itertuples(index=False)
              for d, lab in columns if d == row.dataset]
    rest = summary[summary["method"] != FULL]
    if not copies:
        return rest
    return pd.concat([rest, pd.DataFrame(copies, columns=summary.columns)], ignore_index=True)


def provenance(results: pd.DataFrame) -> dict[str, str]:
    """Per dataset, where our numbers come from: profile, NBI source, image size, model, data folder."""
    out = {}
    for dataset in dataset_order(results["dataset"]):
        rows = results[results["dataset"] == dataset]

        def values(col: str) -> str:
            return ", ".join(sorted({str(v) for v in rows[col].dropna()})) or "unknown"

        if dataset == "synthetic":
            source = "the embedded synthetic dataset (both views rendered from one simulated multispectral scene)"
        else:
            nbi = "; ".join(_nbi_text(str(v)) for v in sorted(rows["nbi"].dropna().unique())) or "NBI source unknown"
            source = f"images from {values('data_root')}; {nbi}"
        seeds = ", ".join(str(s) for s in sorted(rows["seed"].unique()))
        out[dataset] = (f"{source}; profile {values('profile')}, images {values('image_size')} px, "
                        f"model {values('arch')}, seeds {seeds}")
    return out


def _nbi_text(nbi: str) -> str:
    if nbi.startswith("generator:"):
        return f"NBI produced from each WLI image by the user-supplied generator {nbi.partition(':')[2]}"
    return NBI_SOURCES.get(nbi, f"NBI source '{nbi}'")


def table2(results: pd.DataFrame) -> Table | None:
    """Table II from results.csv rows (ablation presets are left out); None without any row."""
    results = results[in_group(results, TABLE2)]
    if results.empty:
        return None
    names = method_names(results)
    summary = summarize(results)
    columns = _columns(summary[summary["method"] != FULL]) or _columns(summary)
    summary = _spread_full(summary, columns)
    present = set(zip(summary["method"], summary["mode"]))
    order = method_order(summary["method"])
    baselines = [m for m in order if m not in BOUNDS]

    def rows(mode: str, names: list[str]) -> list[Row]:
        return [(m, mode) for m in names if (m, mode) in present]

    blocks = [
        ("single mode (WLI)", rows("single", baselines), True),
        ("multi mode (WLI, NBI as the strong view)", rows("multi", baselines), True),
        ("fused (two encoders, WLI + NBI)", rows("fused", baselines), True),
        ("bounds (not ranked)", rows("single", [m for m in BOUNDS if m in order]), False),
    ]
    blocks = [b for b in blocks if b[1]]
    all_rows = [r for _, rs, _ in blocks for r in rs]
    ranked = [r for _, rs, rank in blocks if rank for r in rs]
    f = _frames(summary, all_rows, columns)
    delta = pd.DataFrame(math.nan, index=f["mean"].index, columns=f["mean"].columns)
    for method, mode in all_rows:
        if mode == "multi" and (method, "single") in all_rows:
            delta.loc[(method, mode)] = f["mean"].loc[(method, "multi")] - f["mean"].loc[(method, "single")]
    mark = _marks(paired_differences(results), f["mean"])
    labels = {r: names[r[0]] + (" (100% labels)" if r[0] == FULL else "") for r in all_rows}
    marks = {r: (True, r[1] != "single") for r in all_rows}
    caption = "Top-1 test accuracy (%) on the test split of the model selected on validation. Best of each column in bold. "
    if delta.notna().any().any():
        caption += "In parentheses: the change of the multi mode against the single mode. "
    if not blocks[-1][2]:
        caption += ("Bounds, not ranked: supervised trains on the labeled WLI images only, fully supervised on "
                    "every training label. ")
    caption += _seeds_note(f["n"]) + " " + _marks_note(mark) + " " + _data_note(results)
    return Table(**f, delta=delta, best=_best(f["mean"], ranked), blocks=blocks, labels=labels,
                 mark_names=("WLI", "NBI"), marks=marks, caption=caption, mark=mark)


def _marks(comparison: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Each cell's mark against the supervised bound (`benchmark.reports.comparison`), shaped as `frame`."""
    mark = _no_marks(frame)
    for r in comparison.itertuples():
        row, col = (r.method, r.mode), (r.dataset, r.labels)
        if row in mark.index and col in mark.columns:
            mark.at[row, col] = r.mark
    return mark


def _no_marks(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(None, index=frame.index, columns=frame.columns, dtype=object)


MARK_SYMBOLS = {ABOVE: "▲", BELOW: "▼", LEVEL: "≈"}
_LATEX_MARKS = {ABOVE: r"$^{\blacktriangle}$", BELOW: r"$^{\blacktriangledown}$", LEVEL: r"$^{\approx}$"}


def _marks_note(mark: pd.DataFrame) -> str:
    if mark.notna().any().any():
        return ("▲ / ▼ / ≈: above, below or not distinguishable from the supervised bound at the same ratio, by the "
                "95 % interval of the mean paired difference over seeds (reports/comparison.md).")
    return "No comparison with the supervised bound: it needs at least two seeds (reports/comparison.md)."


def ablation_table(results: pd.DataFrame, table: str) -> Table | None:
    """Table III (pre-training components) or IV (fine-tuning components); None unless at least one
    of its ablation presets has a record. The full model row is the family's Table II method at the same ratios."""
    layout = ablation_layout(table, results)
    names = [method for method, _, _ in layout]
    presets = results[results["method"].isin(names) & in_group(results, ABLATION)]
    if presets.empty:
        return None
    summary = summarize(results[results["method"].isin(names) & (results["mode"] == "fused")])
    columns = _columns(summarize(presets))
    rows = [(method, "fused") for method in names if method in set(summary["method"])]
    f = _frames(summary, rows, columns)
    delta = pd.DataFrame(math.nan, index=f["mean"].index, columns=f["mean"].columns)
    title = {"III": "pre-training", "IV": "fine-tuning"}[table]
    caption = (f"Ablation of the {title} components of MICS (Table {table}): top-1 test accuracy (%). "
               "Best of each column in bold. " + _seeds_note(f["n"]) + " " + _data_note(presets))
    return Table(**f, delta=delta, best=_best(f["mean"], rows), blocks=[("", rows, True)], mark=_no_marks(delta),
                 labels={(m, "fused"): label for m, label, _ in layout},
                 mark_names=tuple(COMPONENT_NAMES[c] for c in COMPONENTS[table]),
                 marks={(m, "fused"): flags for m, _, flags in layout}, caption=caption)


def preset_ablation_table(results: pd.DataFrame, family: str) -> Table | None:
    """The ablation presets of a fused method family other than MICS (e.g. CMC's), beside the full
    method at the ratios the presets ran; None unless a preset has a record. Rows are labelled by the
    presets' registered descriptions (each says which loss or module is off)."""
    rows_of_family = results[(results["family"] == family) & in_group(results, ABLATION)]
    presets = list(dict.fromkeys(rows_of_family["method"]))
    if not presets:
        return None
    names = [family, *presets]
    summary = summarize(results[results["method"].isin(names) & (results["mode"] == "fused")])
    columns = _columns(summarize(results[results["method"].isin(presets)]))
    rows = [(method, "fused") for method in names if method in set(summary["method"])]
    f = _frames(summary, rows, columns)
    delta = pd.DataFrame(math.nan, index=f["mean"].index, columns=f["mean"].columns)
    descriptions = dict(zip(rows_of_family["method"], rows_of_family["description"]))
    name = method_names(results).get(family, family)
    labels = {(m, "fused"): f"{name} (all)" if m == family else descriptions[m] for m, _ in rows}
    caption = (f"Ablation of {name}: top-1 test accuracy (%). Best of each column in bold. "
               + _seeds_note(f["n"]) + " " + _data_note(results[results["method"].isin(presets)]))
    return Table(**f, delta=delta, best=_best(f["mean"], rows), blocks=[("", rows, True)], labels=labels,
                 mark_names=(), marks={r: () for r in rows}, caption=caption, mark=_no_marks(delta))


def preset_families(results: pd.DataFrame) -> list[str]:
    """Method families with ablation records whose presets are not rows of the paper's Tables III/IV."""
    presets = results[in_group(results, ABLATION)]
    return sorted(set(presets.loc[presets["paper_rows"].isin(["[]", ""]) | presets["paper_rows"].isna(), "family"]))


def _seeds_note(n: pd.DataFrame) -> str:
    counts = sorted({int(v) for v in n.to_numpy(dtype=float).ravel() if not math.isnan(v)})
    if counts == [1]:
        return "One seed per cell."
    return f"Mean ± standard deviation over {'/'.join(map(str, counts))} seeds."


def _data_note(results: pd.DataFrame) -> str:
    """Which profile and NBI source the numbers stand on, per dataset: our tables must never pass
    for the paper's."""
    parts = []
    for dataset in dataset_order(results["dataset"]):
        rows = results[results["dataset"] == dataset]
        nbi = "rendered" if dataset == "synthetic" else ", ".join(sorted(rows["nbi"].dropna().astype(str).unique()))
        parts.append(f"{dataset}: profile {', '.join(sorted(rows['profile'].astype(str).unique()))}, NBI {nbi}")
    return "Our runs (" + "; ".join(parts) + ")."


def _cell_parts(t: Table, row: Row, col: Column) -> tuple[str, float, float, float] | None:
    """(value text, delta, low, high) of one cell, or None where there is no run."""
    mean = t.mean.at[row, col]
    if pd.isna(mean):
        return None
    n = int(t.n.at[row, col])
    return (f"{mean:.2f}" + (f" ± {t.std.at[row, col]:.2f}" if n > 1 else ""),
            t.delta.at[row, col], t.low.at[row, col], t.high.at[row, col])


def to_markdown(t: Table) -> str:
    """A pipe table: one italic heading row per block, bold best values, signed changes and, for
    single-seed cells, the bootstrap 95% interval in brackets."""
    columns = list(t.mean.columns)
    header = ["Method", *t.mark_names, *(f"{DATASET_NAMES.get(d, d)} {lab:g}%" for d, lab in columns)]
    body = []
    for heading, rows, _ in t.blocks:
        if heading:
            body.append([f"*{heading}*"] + [""] * (len(header) - 1))
        for row in rows:
            cells = []
            for col in columns:
                parts = _cell_parts(t, row, col)
                if parts is None:
                    cells.append("–")
                    continue
                value, delta, low, high = parts
                text = f"**{value}**" if t.best.at[row, col] else value
                if not pd.isna(delta):
                    text += f" ({delta:+.2f})"
                if not pd.isna(low):
                    text += f" [{low:.1f}, {high:.1f}]"
                if t.mark.at[row, col] in MARK_SYMBOLS:
                    text += " " + MARK_SYMBOLS[t.mark.at[row, col]]
                if t.collapsed.at[row, col] > 0:
                    text += " ⚠"
                cells.append(text)
            body.append([t.labels[row], *("✓" if m else "" for m in t.marks[row]), *cells])
    table = tabulate(body, headers=header, tablefmt="pipe", disable_numparse=True)
    note = " Brackets: bootstrap 95% interval of the test accuracy (single-seed cells)."
    if (t.collapsed > 0).any().any():
        note += " ⚠: collapsed in at least one seed (one class takes > 80 % of the test predictions; reports/health.md)."
    return f"{table}\n\n{t.caption}{note}\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$",
                  "▲": r"$\blacktriangle$", "▼": r"$\blacktriangledown$", "≈": r"$\approx$"}


def _latex_escape(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^±▲▼≈]", lambda m: _LATEX_SPECIAL[m.group()], text)


def to_latex(t: Table, label: str) -> str:
    """A `table*` for `\\input`: booktabs rules, check marks (amssymb), gains in green and losses
    in red (xcolor)."""
    columns = list(t.mean.columns)
    datasets = list(dict.fromkeys(d for d, _ in columns))
    first = 1 + len(t.mark_names)
    width = first + len(columns)
    lines = [
        "% Generated by `python -m benchmark report` from results.csv; do not edit by hand.",
        "% Needs \\usepackage{booktabs}, \\usepackage{xcolor} and \\usepackage{amssymb}.",
        "\\begin{table*}[t]",
        "\\centering",
        f"\\caption{{{_latex_escape(t.caption)}}}",
        f"\\label{{{label}}}",
        "\\setlength{\\tabcolsep}{4pt}",
        f"\\begin{{tabular}}{{l{'c' * len(t.mark_names)}{'r' * len(columns)}}}",
        "\\toprule",
    ]
    groups, rules, start = [], [], first + 1
    for d in datasets:
        k = sum(1 for dd, _ in columns if dd == d)
        groups.append(f"\\multicolumn{{{k}}}{{c}}{{{_latex_escape(DATASET_NAMES.get(d, d))}}}")
        rules.append(f"\\cmidrule(lr){{{start}-{start + k - 1}}}")
        start += k
    lines.append(" & " * first + " & ".join(groups) + " \\\\")
    lines.append(" ".join(rules))
    lines.append(" & ".join(["Method", *map(_latex_escape, t.mark_names), *(f"{lab:g}\\%" for _, lab in columns)]) + " \\\\")
    for heading, rows, ranked in t.blocks:
        lines.append("\\midrule")
        if not ranked:
            lines.append(f"\\multicolumn{{{width}}}{{l}}{{\\textit{{{_latex_escape(heading)}}}}} \\\\")
        for row in rows:
            cells = []
            for col in columns:
                parts = _cell_parts(t, row, col)
                if parts is None:
                    cells.append("--")
                    continue
                value, delta, _, _ = parts
                value = value.replace(" ± ", "\\,$\\pm$\\,")
                text = f"\\textbf{{{value}}}" if t.best.at[row, col] else value
                text += _LATEX_MARKS.get(t.mark.at[row, col], "")
                if not pd.isna(delta):
                    text += " " + _latex_delta(delta)
                cells.append(text)
            marks = ["\\checkmark" if m else "" for m in t.marks[row]]
            lines.append(" & ".join([_latex_escape(t.labels[row]), *marks, *cells]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table*}", ""]
    return "\n".join(lines)


def _latex_delta(delta: float) -> str:
    shown = round(delta, 2)
    if shown > 0:
        return f"\\textcolor{{green!50!black}}{{(+{shown:.2f})}}"
    if shown < 0:
        return f"\\textcolor{{red}}{{($-${-shown:.2f})}}"
    return "(0.00)"


def health_report(results: pd.DataFrame) -> str:
    """reports/health.md: every collapsed run with its mask rate and pseudo-label accuracy, then those two
    per method and mode, averaged over its runs (`benchmark.kit.health`)."""
    results = results.assign(collapsed=_collapsed_column(results))
    for column in ("unlabeled_mask_rate", "pseudo_label_acc", "pseudo_label_acc_all"):
        if column not in results:
            results[column] = math.nan
    lines = ["# Health of the runs", "",
             "A run is flagged when one class takes more than 80 % of its test predictions. Mask rate: mean "
             "mask weight of the unlabeled samples over the last tenth of the run; pseudo-label accuracy: of "
             "those samples, weighted by the mask, against the withheld labels (diagnosis only); of all: every "
             "pseudo-label, masked or not. Empty where a method has no mask.", ""]
    flagged = results[results["collapsed"]].sort_values(["dataset", "method", "mode", "labels", "seed"])
    keys = ["dataset", "method", "mode", "labels", "seed", "test_top1", "unlabeled_mask_rate", "pseudo_label_acc",
            "pseudo_label_acc_all"]
    if flagged.empty:
        lines += [f"No flagged run among {len(results)}.", ""]
    else:
        lines += [f"## {len(flagged)} flagged of {len(results)} runs", "",
                  tabulate(flagged[keys].to_numpy().tolist(), headers=keys, tablefmt="pipe", floatfmt=".3g",
                           missingval=""), ""]
    per_method = (results.groupby(["dataset", "method", "mode"], sort=False)
                  .agg(runs=("seed", "size"), flagged=("collapsed", "sum"),
                       mask_rate=("unlabeled_mask_rate", "mean"), pseudo_label_acc=("pseudo_label_acc", "mean"),
                       pseudo_label_acc_all=("pseudo_label_acc_all", "mean"))
                  .reset_index())
    per_method = per_method[per_method["mask_rate"].notna() | (per_method["flagged"] > 0)]
    if not per_method.empty:
        lines += ["## Per method (mean over its runs)", "",
                  tabulate(per_method.to_numpy().tolist(), headers=list(per_method.columns), tablefmt="pipe",
                           floatfmt=".3g", missingval=""), ""]
    return "\n".join(lines)


def comparison_report(results: pd.DataFrame) -> str:
    """reports/comparison.md: every method, the fully supervised bound and the controls against the supervised
    bound, paired by seed (`benchmark.reports.comparison`), and the smallest difference the grid detects."""
    comparison = paired_differences(results[~in_group(results, ABLATION)])
    controls = set(results.loc[in_group(results, CONTROL), "method"])
    names = method_names(results)
    lines = ["# Every method against the supervised bound", "",
             "A method and the supervised bound at the same ratio and seed share the labeled split and the test "
             "split, so each seed gives one paired difference (method − bound, points). Per cell: the mean "
             "difference over the seeds, its 95 % interval (paired t-test), the probability that a run of the "
             "method beats a run of the bound (Mann-Whitney, as rliable computes it), and the mark of Table II: "
             "▲ above the bound (the interval above 0), ▼ below it, ≈ not distinguishable.", ""]
    if comparison.empty:
        return "\n".join(lines + ["No method and supervised bound at the same ratio and seed yet.", ""])
    if comparison["seeds"].max() < 2:
        lines += ["One seed per cell: a paired comparison needs at least two (`run --seeds 0,1,2`). Until then "
                  "each cell shows only its own bootstrap 95 % interval of the test accuracy (Table II, brackets).", ""]
    else:
        mdd = detectable_difference(comparison)
        lines += [f"**Smallest detectable difference.** With {mdd['seeds']} seeds, a mean paired difference of "
                  f"**{mdd['points']:.1f} points** is found with 80 % power (paired t-test, two-sided, 5 %): "
                  f"{mdd['effect_size']:.2f} times the standard deviation of the paired differences, "
                  f"{mdd['pooled_sd']:.2f} points pooled over the rows without a collapsed run.", ""]
    order = {m: i for i, m in enumerate(method_order(comparison["method"]))}
    comparison = comparison.assign(order=comparison["method"].map(order), mode_order=comparison["mode"].map(MODES.index))
    headers = ["dataset", "method", "mode", "labels %", "seeds", "method", "bound", "difference [95 % CI]",
               "P(improvement)", "mark", "collapsed runs"]
    sections = (("Table II", ~comparison["method"].isin({FULL, *controls})),
                ("The fully supervised bound (every label)", comparison["method"] == FULL),
                ("Controls (the grid's power; not in Table II)", comparison["method"].isin(controls)))
    for title, rows in sections:
        part = comparison[rows].sort_values(["dataset", "order", "mode_order", "labels"], ascending=[True, True, True, False])
        if part.empty:
            continue
        body = [[r.dataset, names[r.method], r.mode, f"{r.labels:g}", r.seeds, f"{r.mean:.2f}",
                 f"{r.bound_mean:.2f}", _difference_text(r), "" if pd.isna(r.p_improvement) else f"{r.p_improvement:.2f}",
                 MARK_SYMBOLS.get(r.mark, ""), r.collapsed] for r in part.itertuples()]
        lines += [f"## {title}", "", tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True), ""]
    return "\n".join(lines)


def _difference_text(r) -> str:
    if pd.isna(r.diff_low):
        return f"{r.diff:+.2f}"
    return f"{r.diff:+.2f} [{r.diff_low:+.2f}, {r.diff_high:+.2f}]"


def compare_paper(results: pd.DataFrame) -> str:
    """Markdown: our value, the paper's, and the difference for every cell both have, after a plain
    statement of where our numbers come from."""
    ours = summarize(results)
    paper = paper_numbers(results)
    names = method_names(results)
    both = paper.merge(ours, on=["method", "mode", "dataset", "labels"], how="inner")
    lines = [
        "# Our results against the MICS paper's printed numbers",
        "",
        "The paper's numbers are Tables II-IV of arXiv 2509.17492 as printed (`configs/reference/`). "
        "The paper's NBI images were generated from WLI with WtNGAN, which is not public; "
        "ours come from the source stated below, so differences include the NBI source as well as "
        "the model, budget and seeds.",
        "",
        "Where our numbers come from:",
        "",
    ]
    lines += [f"- **{d}**: {text}" for d, text in provenance(results).items()]
    lines.append("")
    if both.empty:
        lines.append(f"No cell of ours is in the paper's tables: our datasets are "
                     f"{', '.join(dataset_order(results['dataset']))}; the paper reports "
                     f"{', '.join(dataset_order(paper['dataset']))}.")
        return "\n".join(lines) + "\n"
    for table in ("II", "III", "IV"):
        part = both[both["table"] == table]
        if part.empty:
            continue
        rank = {m: i for i, m in enumerate(method_order(both["method"]))}
        part = part.assign(diff=part["mean"] - part["top1"], order=part["method"].map(rank),
                           mode_order=part["mode"].map(MODES.index))
        part = part.sort_values(["dataset", "order", "mode_order", "labels"], ascending=[True, True, True, False])
        rows = [[r.dataset, names[r.method], r.mode, f"{r.labels:g}",
                 f"{r.mean:.2f}" + (f" ± {r.std:.2f} ({r.n} seeds)" if r.n > 1 else ""),
                 f"{r.top1:.2f}", f"{r.diff:+.2f}"] for r in part.itertuples()]
        lines += [f"## Table {table}", "",
                  tabulate(rows, headers=["dataset", "method", "mode", "labels %", "ours", "paper", "ours − paper"],
                           tablefmt="pipe", disable_numparse=True),
                  "", f"Mean difference {part['diff'].mean():+.2f} points over {len(part)} cells.", ""]
    return "\n".join(lines)
