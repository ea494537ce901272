"""What every report shares about the rows of results.csv: the groups a method registers in, the names
printed for datasets and methods, and the order the paper puts them in, so that tables, texts and figures
agree."""
from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from benchmark.kit.data import DATASETS
from benchmark.reports.reference import paper_order

# The groups a method registers in (written into each record): Table II (`--method all`), ablation presets
# (their own tables), controls (the grid's power: in reports/comparison.md, not Table II).
ABLATION, CONTROL = "ablation", "control"
DATASET_NAMES = {"synthetic": "Synthetic", "kvasir": "Kvasir", "kvasir-v2": "Kvasir-v2", "paired": "Paired"}
BOUNDS = ("supervised", "fullysupervised")
FULL = "fullysupervised"  # trained on every label: one value per dataset, shown in every column


def method_names(results: pd.DataFrame) -> dict[str, str]:
    """Method -> the label its records carry (the paper's spelling, declared at registration)."""
    return dict(zip(results["method"], results["label"].fillna(results["method"])))


def in_group(results: pd.DataFrame, group: str) -> pd.Series:
    """Which rows belong to `group`: the records say, so a report needs no method registry."""
    return results["group"] == group


def in_table2(results: pd.DataFrame) -> pd.Series:
    """Table II's rows: every method but the ablation presets and the controls (which have tables and
    texts of their own), so a method registered in a group of its own is still compared."""
    return ~in_group(results, ABLATION) & ~in_group(results, CONTROL)


def method_order(names: Iterable[str]) -> list[str]:
    """Table II's order in the paper, then the methods it does not have, alphabetically."""
    known = [m for m in paper_order() if m in set(names)]
    return known + sorted(set(names) - set(known))


def dataset_order(names: Iterable[str]) -> list[str]:
    """The suite's order of datasets, then any other dataset alphabetically."""
    known = [d for d in DATASETS if d in set(names)]
    return known + sorted(set(names) - set(DATASETS))
