"""`umap`: the paper's Fig. 8. For one dataset and label ratio, one panel per method with its test-set
features reduced to 2-D by UMAP (n_components=2, n_neighbors=30, min_dist=1.0, fixed seed),
coloured by class with one shared legend; PNG and PDF in the reports folder.

Nothing is retrained or even re-run: each finished run saved its test features (extracted on the
run's own device, CUDA when present) in `test_outputs.npz` beside its record."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmark.kit.errors import BenchmarkError, ConfigError
from benchmark.kit.files import zip_problem
from benchmark.kit.records import read_results, run_dir
from benchmark.reports.names import ABLATION, FULL, dataset_order, in_group, method_names, method_order

# Per method, the mode its panel shows unless --mode says otherwise: its multimodal one first.
MODE_PREFERENCE = ("fused", "multi", "single")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results", type=Path, help="output folder of `run`")
    parser.add_argument("--reports", default="reports", type=Path, help="folder for the figure")
    parser.add_argument("--dataset", default=None,
                        help="dataset of the runs (default: kvasir-v2 as in the paper when present, else the first one)")
    parser.add_argument("--labels", type=float, default=5.0, help="label ratio in percent (paper: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the runs")
    parser.add_argument("--mode", default=None, choices=MODE_PREFERENCE,
                        help="show this mode of every method (default: each method's fused, else multi, else single run)")


def main(args: argparse.Namespace) -> int:
    from benchmark.reports import plots  # matplotlib and umap are slow to import: only for this command

    results = read_results(args.out)
    results = results[~in_group(results, ABLATION) & (results["method"] != FULL)]
    names = method_names(results)
    at = results[(results["labels"] == args.labels) & (results["seed"] == args.seed)]
    if at.empty:
        raise BenchmarkError(f"no finished run at {args.labels:g}% labels, seed {args.seed} in {args.out}; "
                             f"ratios there: {', '.join(f'{v:g}' for v in sorted(results['labels'].unique()))}")
    datasets = dataset_order(at["dataset"])
    dataset = args.dataset or ("kvasir-v2" if "kvasir-v2" in datasets else datasets[0])
    if dataset not in datasets:
        raise ConfigError(f"no run of dataset '{dataset}' at {args.labels:g}% labels; valid: {', '.join(datasets)}")
    at = at[at["dataset"] == dataset]

    panels, classes = [], []
    for method in tqdm(method_order(at["method"]), desc="umap", unit="panel", disable=None):
        modes = set(at.loc[at["method"] == method, "mode"])
        mode = args.mode if args.mode else next(m for m in MODE_PREFERENCE if m in modes)
        if mode not in modes:
            continue
        path = run_dir(args.out, dataset, method, mode, args.labels, args.seed) / "test_outputs.npz"
        if not path.exists():
            raise BenchmarkError(f"{path} is missing; re-run that cell to get its test features")
        if (problem := zip_problem(path, full=True)) is not None:
            raise BenchmarkError(f"{path} is damaged ({problem}); `run` the same grid again to redo that cell")
        with np.load(path) as saved:
            classes = [str(c) for c in saved["classes"]]
            panels.append((f"{names[method]} ({mode})", plots.umap_embedding(saved["features"]), saved["labels"]))
    if not panels:
        raise BenchmarkError(f"no {args.mode} run of {dataset} at {args.labels:g}% labels, seed {args.seed}")
    title = f"UMAP of test features: {dataset}, {args.labels:g}% labels, seed {args.seed}"
    stem = args.reports / f"umap_{dataset}_labels{args.labels:g}"
    written = plots.umap_figure(panels, classes, title, stem)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
