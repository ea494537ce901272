"""Tables from `results.csv` as pandas frames, in the paper's layout; `benchmark.reports.render` prints them.
Only our own numbers go into these tables; the paper's printed numbers appear only in the separate
comparison (`benchmark.reports.texts.compare_paper`).

Table II: rows are the single-mode baselines, then the multi-mode baselines (with, in parentheses,
the change against their single-mode row), then the fused methods (MICS, CMC, RFPMSS), then the supervised bounds in a block of their
own that is not ranked; columns are datasets x label ratios (50, 30, 10, 5). The best value of each
column is bold. With several seeds a cell is mean +- standard deviation; with one seed the
Markdown table also shows the run's bootstrap 95% interval."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from benchmark.reports.comparison import paired_differences
from benchmark.reports.names import (
    ABLATION,
    BOUNDS,
    FULL,
    dataset_order,
    in_group,
    in_table2,
    method_names,
    method_order,
)
from benchmark.reports.reference import COMPONENT_NAMES, COMPONENTS, ablation_layout

Row = tuple[str, str]  # (method, mode)
Column = tuple[str, float]  # (dataset, labels)


def collapsed_column(results: pd.DataFrame) -> pd.Series:
    """results.csv's `collapsed` as booleans (False for tables written before the column existed)."""
    if "collapsed" not in results:
        return pd.Series(False, index=results.index)
    return results["collapsed"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, method, mode, labels): mean and standard deviation of test_top1 over
    seeds, the number of seeds, for a single seed its bootstrap 95% interval (low, high), and how many
    of its seeds collapsed (`benchmark.kit.health`)."""
    results = results.assign(collapsed=collapsed_column(results))
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


def table2(results: pd.DataFrame) -> Table | None:
    """Table II from results.csv rows (ablation presets are left out); None without any row."""
    results = results[in_table2(results)]
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
    delta = _no_delta(f["mean"])
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


def _no_delta(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(math.nan, index=frame.index, columns=frame.columns)


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
    rows = [(method, "fused") for method in names if method in set(summary["method"])]
    title = {"III": "pre-training", "IV": "fine-tuning"}[table]
    return _ablation(summary, rows, presets, labels={(m, "fused"): label for m, label, _ in layout},
                     mark_names=tuple(COMPONENT_NAMES[c] for c in COMPONENTS[table]),
                     marks={(m, "fused"): flags for m, _, flags in layout},
                     title=f"Ablation of the {title} components of MICS (Table {table}): top-1 test accuracy (%). ")


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
    rows = [(method, "fused") for method in names if method in set(summary["method"])]
    descriptions = dict(zip(rows_of_family["method"], rows_of_family["description"]))
    name = method_names(results).get(family, family)
    return _ablation(summary, rows, results[results["method"].isin(presets)],
                     labels={(m, "fused"): f"{name} (all)" if m == family else descriptions[m] for m, _ in rows},
                     mark_names=(), marks={r: () for r in rows},
                     title=f"Ablation of {name}: top-1 test accuracy (%). ")


def _ablation(summary: pd.DataFrame, rows: list[Row], presets: pd.DataFrame, labels: dict[Row, str],
              mark_names: tuple[str, ...], marks: dict[Row, tuple[bool, ...]], title: str) -> Table:
    """An ablation table: one ranked block of fused rows at the ratios the presets ran (`presets`, their
    records), with no changes and no marks against the bound."""
    f = _frames(summary, rows, _columns(summarize(presets)))
    delta = _no_delta(f["mean"])
    caption = title + "Best of each column in bold. " + _seeds_note(f["n"]) + " " + _data_note(presets)
    return Table(**f, delta=delta, best=_best(f["mean"], rows), blocks=[("", rows, True)], mark=_no_marks(delta),
                 labels=labels, mark_names=mark_names, marks=marks, caption=caption)


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
