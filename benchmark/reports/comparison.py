"""Every method against its supervised bound, paired by seed: which differences the grid can tell from noise.

A method's cell and the supervised bound at the same dataset, label ratio and seed train on the same labeled
split and are tested on the same test split, so their difference on that seed carries neither the split's
share of the spread nor the test set's. Per (dataset, method, mode, ratio), over the seeds both have:

- the mean paired difference (method − bound, points) and its 95 % interval from the paired t-test
  (`scipy.stats.ttest_rel`);
- the probability of improvement, P(a run of the method beats a run of the bound), the Mann-Whitney
  statistic over the two sets of runs divided by the number of pairs (`scipy.stats.mannwhitneyu`), as rliable
  defines it;
- a mark: above the bound when the interval lies above 0, below when it lies below, level otherwise;
  none with fewer than two seeds (one seed can only show each cell's own bootstrap interval).

The smallest difference the grid detects (`detectable_difference`): the mean paired difference that a
two-sided paired t-test at 5 % finds with 80 % power at the grid's number of seeds
(`statsmodels.stats.power.TTestPower`), from the pooled spread of the paired differences of its healthy rows.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestPower

BOUND = "supervised"
ABOVE, BELOW, LEVEL = "above", "below", "level"
ALPHA, POWER = 0.05, 0.8
KEYS = ["dataset", "method", "mode", "labels"]
COLUMNS = [*KEYS, "seeds", "mean", "bound_mean", "diff", "diff_low", "diff_high", "diff_sd", "p_improvement",
           "mark", "collapsed"]


def _collapsed(values: pd.Series) -> pd.Series:
    return values.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))


def _bound_runs(results: pd.DataFrame) -> pd.DataFrame:
    """The supervised bound's test accuracy per (dataset, labels, seed); the fully supervised bound is
    compared with it at every ratio of its dataset."""
    bound = results[results["method"] == BOUND]
    return bound.set_index(["dataset", "labels", "seed"])["test_top1"]


def paired_differences(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, method, mode, ratio) other than the supervised bound, `COLUMNS`."""
    results = results.assign(collapsed=_collapsed(results.get("collapsed", pd.Series(False, index=results.index))))
    bound = _bound_runs(results)
    ratios = {d: sorted(bound.loc[d].index.get_level_values("labels").unique()) if d in bound.index else []
              for d in results["dataset"].unique()}
    rows = []
    for (dataset, method, mode, labels), runs in results.groupby(KEYS, sort=False):
        if method == BOUND:
            continue
        # every label (the fully supervised bound): beside the supervised bound at each of its ratios
        targets = ratios[dataset] if labels == 100.0 else [labels]
        for target in targets:
            keys = [(dataset, target, seed) for seed in runs["seed"]]
            present = [k in bound.index for k in keys]
            ours = runs["test_top1"].to_numpy()[present]
            theirs = bound.loc[[k for k, p in zip(keys, present) if p]].to_numpy() if any(present) else np.array([])
            rows.append({"dataset": dataset, "method": method, "mode": mode, "labels": target,
                         **_compare(ours, theirs), "collapsed": int(runs["collapsed"].to_numpy()[present].sum())})
    return pd.DataFrame(rows, columns=COLUMNS)


def _compare(ours: np.ndarray, bound: np.ndarray) -> dict:
    n = len(ours)
    out = {"seeds": n, "mean": float(ours.mean()) if n else math.nan,
           "bound_mean": float(bound.mean()) if n else math.nan, "diff": math.nan, "diff_low": math.nan,
           "diff_high": math.nan, "diff_sd": math.nan, "p_improvement": math.nan, "mark": None}
    if n == 0:
        return out
    diff = ours - bound
    out["diff"] = float(diff.mean())
    if n < 2:
        return out
    out["diff_sd"] = float(diff.std(ddof=1))
    if out["diff_sd"] == 0.0:  # every seed the same difference: the t interval is that point
        low = high = out["diff"]
    else:
        low, high = stats.ttest_rel(ours, bound).confidence_interval(1 - ALPHA)
    out["diff_low"], out["diff_high"] = float(low), float(high)
    out["p_improvement"] = float(stats.mannwhitneyu(ours, bound).statistic / (n * n))
    out["mark"] = ABOVE if low > 0 else BELOW if high < 0 else LEVEL
    return out


def detectable_difference(comparison: pd.DataFrame, seeds: int | None = None) -> dict:
    """{"seeds", "pooled_sd", "effect_size", "points"}: the smallest mean paired difference found 80 % of the
    time at `seeds` seeds (default: the most seeds any row has), from the spread of the paired differences
    pooled over the rows without a collapsed run; empty values with fewer than two seeds."""
    healthy = comparison[(comparison["seeds"] >= 2) & (comparison["collapsed"] == 0) & comparison["diff_sd"].notna()]
    n = int(seeds or (comparison["seeds"].max() if len(comparison) else 0))
    if healthy.empty or n < 2:
        return {"seeds": n, "pooled_sd": math.nan, "effect_size": math.nan, "points": math.nan}
    dof = healthy["seeds"] - 1
    pooled = math.sqrt(float((dof * healthy["diff_sd"] ** 2).sum() / dof.sum()))
    effect = float(TTestPower().solve_power(nobs=n, alpha=ALPHA, power=POWER, alternative="two-sided"))
    return {"seeds": n, "pooled_sd": pooled, "effect_size": effect, "points": effect * pooled}
