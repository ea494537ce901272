"""Figures: accuracy against label ratio, confusion matrices, and UMAP panels of test features (the
paper's Fig. 8). Each figure is written whole (a temporary file, then a rename), so a reader never
sees half an image. Nothing here trains or runs a model: the numbers come from results.csv and the
features and logits every finished run saved in `test_outputs.npz`."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmark.kit.contract import MODES  # noqa: E402
from benchmark.kit.files import write_if_changed  # noqa: E402
from benchmark.reports.names import BOUNDS, DATASET_NAMES, FULL, dataset_order, method_order  # noqa: E402
from benchmark.reports.reference import PAPER_METHOD  # noqa: E402

# The paper's Fig. 8 settings; the seed makes the layout reproducible (and UMAP single-threaded,
# which it would otherwise force with a warning).
UMAP_SETTINGS = {"n_components": 2, "n_neighbors": 30, "min_dist": 1.0, "random_state": 0, "n_jobs": 1}
PAPER_METHOD_STYLE = {"color": "crimson", "linewidth": 3.0, "marker": "*", "markersize": 12, "zorder": 5}


def save_figure(fig, path: Path) -> Path:
    buffer, fmt = io.BytesIO(), path.suffix.lstrip(".")
    metadata = {"CreationDate": None} if fmt == "pdf" else None  # the same figure gives the same bytes
    fig.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
    return write_if_changed(path, buffer.getvalue())


def accuracy_vs_labels(summary: pd.DataFrame, names: dict[str, str], path: Path) -> Path:
    """One panel per dataset: test accuracy against label ratio, one line per method and mode
    (single dashed, multi solid, the paper's method highlighted), supervised bounds in grey. `summary` is
    `report.summarize` of the Table II rows, `names` their labels (`report.method_names`)."""
    datasets = dataset_order(summary["dataset"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    baselines = [m for m in method_order(summary["method"]) if m not in BOUNDS and m != PAPER_METHOD]
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(baselines)}
    for ax, dataset in zip(axes[0], datasets):
        part = summary[summary["dataset"] == dataset]
        for method in method_order(part["method"]):
            for mode in MODES:
                line = part[(part["method"] == method) & (part["mode"] == mode)].sort_values("labels")
                if line.empty:
                    continue
                if method == FULL:
                    ax.axhline(line["mean"].iloc[-1], color="grey", linestyle="-.", label=f"{names[method]} (100%)")
                    continue
                if method == PAPER_METHOD:
                    style = PAPER_METHOD_STYLE
                elif method in BOUNDS:
                    style = {"color": "grey", "linestyle": ":", "marker": "o"}
                else:
                    style = {"color": colors[method], "linestyle": "--" if mode == "single" else "-", "marker": "o"}
                std = line["std"].where(line["n"] > 1)
                ax.errorbar(line["labels"], line["mean"], yerr=std.fillna(0).to_numpy(), capsize=3,
                            label=f"{names[method]} ({mode})", **style)
        ax.set_title(DATASET_NAMES.get(dataset, dataset))
        ax.set_xlabel("labeled training images (%)")
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.set_xticks(sorted(part.loc[part["method"] != FULL, "labels"].unique()))
        ax.grid(alpha=0.3)
    legend = {}  # label -> handle, over all panels: a method may miss a dataset
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title="dashed: single mode, solid: multi mode")
    fig.tight_layout()
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def confusion_figure(panels: list[tuple[str, np.ndarray]], classes: list[str], title: str, path: Path) -> Path:
    """One row-normalised confusion matrix per (title, counts) panel."""
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, counts) in zip(axes.flat, panels):
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(rates):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if value > 0.5 else "black")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=6)
        ax.set_yticks(range(len(classes)), classes, fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = save_figure(fig, path)
    plt.close(fig)
    return path


def umap_embedding(features: np.ndarray) -> np.ndarray:
    """(N, D) features -> (N, 2) with the paper's UMAP settings (fewer neighbours only when a test
    set is smaller than 31 images)."""
    import umap  # slow to import (numba); only this figure needs it

    settings = dict(UMAP_SETTINGS, n_neighbors=min(UMAP_SETTINGS["n_neighbors"], len(features) - 1))
    return umap.UMAP(**settings).fit_transform(features)


def umap_figure(panels: list[tuple[str, np.ndarray, np.ndarray]], classes: list[str], title: str,
                stem: Path) -> list[Path]:
    """One scatter panel per (title, 2-D points, labels), coloured by class with one shared legend;
    written as `<stem>.png` and `<stem>.pdf`."""
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    colors = [plt.cm.tab10(i % 10) for i in range(len(classes))]
    for ax, (name, points, labels) in zip(axes.flat, panels):
        for c in range(len(classes)):
            mine = labels == c
            ax.scatter(points[mine, 0], points[mine, 1], s=6, color=colors[c], label=classes[c])
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(classes)), markerscale=3,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    written = [save_figure(fig, stem.with_name(stem.name + ext)) for ext in (".png", ".pdf")]
    plt.close(fig)
    return written


def comparison_intervals(comparison: pd.DataFrame, names: dict[str, str], path: Path) -> Path:
    """The mean paired difference to the supervised bound with its 95 % interval, one row per method and mode,
    one panel per (dataset, ratio): rliable's interval-estimate plot for `benchmark.reports.comparison`'s rows."""
    comparison = comparison[comparison["diff_low"].notna()]
    panels = [(d, lab) for d in dataset_order(comparison["dataset"])
              for lab in sorted(comparison.loc[comparison["dataset"] == d, "labels"].unique(), reverse=True)]
    rows = [(m, mode) for m in method_order(comparison["method"]) for mode in MODES
            if ((comparison["method"] == m) & (comparison["mode"] == mode)).any()]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.2 * max(1, len(panels)), 0.32 * len(rows) + 1.5),
                             sharey=True, squeeze=False)
    colors = {"above": "tab:green", "below": "tab:red", "level": "tab:grey"}
    for ax, (dataset, labels) in zip(axes[0], panels):
        part = comparison[(comparison["dataset"] == dataset) & (comparison["labels"] == labels)]
        for y, (method, mode) in enumerate(rows):
            cell = part[(part["method"] == method) & (part["mode"] == mode)]
            if cell.empty:
                continue
            r = cell.iloc[0]
            ax.plot([r["diff_low"], r["diff_high"]], [y, y], color=colors[r["mark"]], linewidth=4, alpha=0.6)
            ax.plot([r["diff"]], [y], "|", color="black", markersize=10)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)} {labels:g}%")
        ax.set_xlabel("difference to supervised (points)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(rows)), [f"{names[m]} ({mode})" for m, mode in rows])
    axes[0][0].invert_yaxis()
    fig.suptitle("Mean paired difference to the supervised bound over seeds, 95 % interval "
                 "(green: above, red: below, grey: not distinguishable)", fontsize=9)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out
