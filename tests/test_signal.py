"""What makes Table II tell methods apart: the probed heads, the evaluation sets, the split seed, the paired
comparison with the bound, and the controls that measure the grid's power."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.cli import main
from benchmark.harness.config import build_config
from benchmark.harness.grid import expand_grid
from benchmark.kit.data import load_dataset, make_split
from benchmark.kit.probe import fit_linear_probe, probe_heads
from benchmark.kit.records import COLUMNS, method_columns
from benchmark.reports.comparison import detectable_difference, paired_differences
from benchmark.reports.render import to_latex, to_markdown
from benchmark.reports.tables import table2
from benchmark.reports.texts import comparison_report
from methods import get_method


def _row(dataset: str, method: str, mode: str, labels: float, top1: float, seed: int = 0) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(dataset=dataset, method=method, mode=mode, labels=labels, seed=seed, test_top1=top1,
               ci95_low=top1 - 2, ci95_high=top1 + 2, profile="quick", nbi="spectral", collapsed=False,
               **method_columns(get_method(method).describe()))
    return row


# -- the probed head ----------------------------------------------------------------------------------------
def test_the_probe_fits_separable_features_and_depends_on_them_only() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 3
    y = torch.arange(60) % 3
    x = centres[y] + torch.randn(60, 8, generator=g)
    weight, bias = fit_linear_probe(x, y, 3)
    assert ((x @ weight.T + bias).argmax(1) == y).float().mean() > 0.95
    again = fit_linear_probe(x.clone(), y.clone(), 3)
    assert torch.equal(weight, again[0]) and torch.equal(bias, again[1])  # from zero weights: one answer


def test_probe_heads_sets_the_head_unless_switched_off() -> None:
    cfg = build_config("smoke", "supervised", "single", "synthetic", 50, 0)
    raw, folder = load_dataset(cfg.data)
    split = make_split(raw, folder, cfg.data, 50, 0)
    head = torch.nn.Linear(4, 6)
    before = head.weight.detach().clone()
    features = lambda batch: batch["wli"].mean(dim=(2, 3)).repeat(1, 2)[:, :4]  # noqa: E731 - any fixed feature
    probe_heads([(head, features)], split.labeled, torch.device("cpu"), cfg.train.model_copy(update={"probe_head": False}))
    assert torch.equal(head.weight, before)
    probe_heads([(head, features)], split.labeled, torch.device("cpu"), cfg.train)
    assert not torch.equal(head.weight, before)


# -- evaluation sets and the split seed -----------------------------------------------------------------------
def test_synthetic_parts_take_their_per_class_counts_and_split_seed_fixes_the_split() -> None:
    cfg = build_config("smoke", "supervised", "single", "synthetic", 50, 0,
                       {"data.synthetic.val_per_class": 20, "data.synthetic.test_per_class": 30})
    raw, folder = load_dataset(cfg.data)
    a = make_split(raw, folder, cfg.data, 50, 0)
    assert (len(a.labeled) + len(a.val) + len(a.test), len(a.val), len(a.test)) == (6 * (12 + 20 + 30), 120, 180)
    b = make_split(raw, folder, cfg.data, 50, 1)
    assert np.array_equal(a.labeled.index, b.labeled.index)  # one labeled subset (data.labeled_seed 0) ...
    assert np.array_equal(a.test.index, b.test.index)  # ... of one fixed partition (data.split_seed 0)
    e = make_split(raw, folder, cfg.data.model_copy(update={"split_seed": None}), 50, 1)
    assert not np.array_equal(a.test.index, e.test.index)  # null: each seed its own partition
    d = make_split(raw, folder, cfg.data.model_copy(update={"labeled_seed": None}), 50, 1)
    assert not np.array_equal(a.labeled.index, d.labeled.index)  # null: each seed its own labeled subsets


# -- the paired comparison ---------------------------------------------------------------------------------
def _seeded(method: str, mode: str, labels: float, values: list[float]) -> list[dict]:
    return [_row("synthetic", method, mode, labels, v, seed=s) for s, v in enumerate(values)]


def _three_seeds() -> pd.DataFrame:
    rows = []
    for labels in (5.0, 50.0):
        rows += _seeded("supervised", "single", labels, [50.0, 55.0, 60.0])
        rows += _seeded("fixmatch", "single", labels, [53.0, 57.9, 63.1])  # +3, +2.9, +3.1: above
        rows += _seeded("flexmatch", "single", labels, [45.0, 51.0, 54.0])  # -5, -4, -6: below
        rows += _seeded("dash", "single", labels, [52.0, 53.0, 61.0])  # +2, -2, +1: level
    rows += _seeded("fullysupervised", "single", 100.0, [70.0, 74.0, 77.0])
    return pd.DataFrame(rows, columns=COLUMNS)


def test_paired_differences_mark_above_below_and_level() -> None:
    comparison = paired_differences(_three_seeds()).set_index(["method", "labels"])
    assert comparison.loc[("fixmatch", 5.0), "mark"] == "above"
    assert comparison.loc[("flexmatch", 5.0), "mark"] == "below"
    assert comparison.loc[("dash", 50.0), "mark"] == "level"
    fix = comparison.loc[("fixmatch", 5.0)]
    assert fix["diff"] == pytest.approx(3.0) and fix["diff_low"] < 3.0 < fix["diff_high"]
    assert fix["p_improvement"] == pytest.approx(6 / 9)  # 53 > 50; 57.9 > 50, 55; 63.1 > all three
    assert comparison.loc[("flexmatch", 5.0), "p_improvement"] == pytest.approx(2 / 9)  # 51 > 50; 54 > 50
    # the fully supervised bound stands beside the supervised one at each of its ratios
    assert comparison.loc[("fullysupervised", 5.0), "diff"] == pytest.approx(56 / 3)  # 20, 19, 17
    assert set(comparison.loc["fullysupervised"].index) == {5.0, 50.0}


def test_detectable_difference_from_the_pooled_paired_spread() -> None:
    comparison = paired_differences(_three_seeds())
    mdd = detectable_difference(comparison)
    assert mdd["seeds"] == 3 and mdd["effect_size"] == pytest.approx(3.264, abs=1e-3)
    assert mdd["points"] == pytest.approx(mdd["effect_size"] * mdd["pooled_sd"])
    assert 0 < mdd["pooled_sd"] < 10
    assert math.isnan(detectable_difference(comparison[comparison["seeds"] < 2])["points"])


def test_table2_carries_the_marks_and_one_seed_says_it_cannot_compare() -> None:
    md = to_markdown(table2(_three_seeds()))
    assert "58.00 ± 5.05** ▲" in next(line for line in md.splitlines() if line.startswith("| FixMatch"))
    assert "▼" in next(line for line in md.splitlines() if line.startswith("| FlexMatch"))
    assert "≈" in next(line for line in md.splitlines() if line.startswith("| Dash"))
    assert "above, below or not distinguishable" in md
    tex = to_latex(table2(_three_seeds()), "tab:t")
    assert "$^{\\blacktriangle}$" in tex and "$\\blacktriangle$" in tex  # the cell and the caption's legend
    one = pd.DataFrame([r for r in _three_seeds().to_dict("records") if r["seed"] == 0], columns=COLUMNS)
    assert "▲" not in to_markdown(table2(one)) and "needs at least two seeds" in to_markdown(table2(one))
    assert "One seed per cell: a paired comparison needs at least two" in comparison_report(one)


def test_comparison_report_puts_controls_apart_and_prints_the_detectable_difference() -> None:
    rows = _three_seeds().to_dict("records")
    rows += _seeded("positive_control", "single", 5.0, [60.0, 66.0, 70.0])
    results = pd.DataFrame(rows, columns=COLUMNS)
    text = comparison_report(results)
    assert "Smallest detectable difference" in text and "With 3 seeds" in text
    assert text.index("## Table II") < text.index("## The fully supervised") < text.index("## Controls")
    assert "Positive control" not in to_markdown(table2(results))


# -- the controls -------------------------------------------------------------------------------------------
def test_the_positive_control_learns_from_the_true_labels_of_its_own_images(tmp_path: Path) -> None:
    """Its pseudo-labels are the withheld labels, looked up through the same indices the health figures use:
    their accuracy must be 100 % (a misalignment of images and labels would show here)."""
    out = tmp_path / "out"
    assert {c.method for c in expand_grid("controls", "10", "synthetic")} == {"positive_control", "negative_control"}
    args = ["run", "--profile", "smoke", "--device", "cpu", "--method", "supervised,positive_control,negative_control",
            "--modes", "single",
            "--labels", "10", "--workers", "1", "--out", str(out), "--reports", str(tmp_path / "rep"),
            "--set", "method.p_cutoff=0.0"]  # every pseudo-label used
    assert main([*args, "--dry-run"]) == 0  # sizing the controls' loops gives them their withheld labels too
    assert not out.exists()
    assert main(args) == 0
    records = {m: json.loads((out / "runs/synthetic" / m / "single/labels10/seed0/result.json").read_text())
               for m in ("positive_control", "negative_control")}
    assert records["positive_control"]["pseudo_label_acc"] == 100.0
    assert records["positive_control"]["unlabeled_mask_rate"] == 1.0
    assert records["negative_control"]["pseudo_label_acc"] < 50.0
    assert "control" not in (tmp_path / "rep" / "table2.md").read_text()
    assert "## Controls" in (tmp_path / "rep" / "comparison.md").read_text()
