"""The Markdown reports beside the tables: the health of the runs (reports/health.md), every method against
the supervised bound (reports/comparison.md), and our numbers against the paper's (compare_paper.md, which
opens with the provenance of ours so that they are never taken for the paper's)."""
from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

from benchmark.kit.contract import MODES
from benchmark.reports.comparison import detectable_difference, paired_differences
from benchmark.reports.names import ABLATION, CONTROL, FULL, dataset_order, in_group, method_names, method_order
from benchmark.reports.reference import paper_numbers
from benchmark.reports.render import MARK_SYMBOLS
from benchmark.reports.tables import collapsed_column, summarize

NBI_SOURCES = {
    "spectral": "NBI simulated from each WLI image by the spectral model (benchmark/kit/data/spectral.py)",
    "paired": "NBI images supplied as pairs",
}


def health_report(results: pd.DataFrame) -> str:
    """reports/health.md: every collapsed run with its mask rate and pseudo-label accuracy, then those two
    per method and mode, averaged over its runs (`benchmark.kit.health`)."""
    results = results.assign(collapsed=collapsed_column(results))
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
