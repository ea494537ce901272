"""Tables, figures and the comparison with the paper, on hand-made results and records."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmark.reports.plots
from benchmark.cli import main
from benchmark.kit.records import COLUMNS, method_columns, rebuild_results_csv, run_dir
from benchmark.reports.render import to_latex, to_markdown
from benchmark.reports.tables import table2
from benchmark.reports.texts import compare_paper
from methods import get_method

RATIOS = (5.0, 10.0, 30.0, 50.0)
CLASSES = ("a", "b", "c")


def _row(dataset: str, method: str, mode: str, labels: float, top1: float, seed: int = 0, **extra) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(dataset=dataset, method=method, mode=mode, labels=labels, seed=seed, test_top1=top1,
               ci95_low=top1 - 5, ci95_high=top1 + 5, profile="quick", nbi="spectral", image_size=64,
               arch="vit_tiny_patch16_224", data_root="/data/kvasir", **method_columns(get_method(method).describe()))
    row.update(extra)
    return row


def _results() -> pd.DataFrame:
    """Two datasets x four ratios, rows deliberately out of order. In every column MICS is best,
    except kvasir 5% where FlexMatch multi ties with it and kvasir-v2 50% where FixMatch multi is
    best; the fully supervised bound beats all (and must not be bold)."""
    rows = []
    for dataset in ("kvasir-v2", "kvasir"):
        for labels in RATIOS:
            rows += [
                _row(dataset, "flexmatch", "multi", labels, 60.0 if labels == 5 and dataset == "kvasir" else 52.0),
                _row(dataset, "mics", "fused", labels, 60.0),
                _row(dataset, "fixmatch", "single", labels, 50.0),
                _row(dataset, "fixmatch", "multi", labels,
                     70.0 if (dataset, labels) == ("kvasir-v2", 50) else 48.0),  # +20.00 / -2.00
                _row(dataset, "flexmatch", "single", labels, 51.0),
                _row(dataset, "supervised", "single", labels, 40.0),
                _row(dataset, "mics_t3_vanilla", "fused", labels, 99.0),  # an ablation preset: not in Table II
            ]
        rows.append(_row(dataset, "fullysupervised", "single", 100.0, 90.0))
    rows.append(_row("kvasir", "mics", "fused", 50.0, 62.0, seed=1))  # two seeds: 61.00 +- 1.41
    return pd.DataFrame(rows)


def test_table2_rows_columns_bold_and_deltas() -> None:
    t = table2(_results())
    assert [rows for _, rows, _ in t.blocks] == [
        [("fixmatch", "single"), ("flexmatch", "single")],
        [("fixmatch", "multi"), ("flexmatch", "multi")],
        [("mics", "fused")],
        [("supervised", "single"), ("fullysupervised", "single")],
    ]
    assert list(t.mean.columns) == [(d, r) for d in ("kvasir", "kvasir-v2") for r in (50.0, 30.0, 10.0, 5.0)]
    best = {col: sorted(t.best.index[t.best[col]]) for col in t.best.columns}
    assert best[("kvasir", 5.0)] == [("flexmatch", "multi"), ("mics", "fused")]  # a tie: both bold
    assert best[("kvasir-v2", 50.0)] == [("fixmatch", "multi")]
    assert best[("kvasir", 30.0)] == [("mics", "fused")]
    assert t.mean.at[("fullysupervised", "single"), ("kvasir", 10.0)] == 90.0  # shown, never bold
    assert t.delta.at[("fixmatch", "multi"), ("kvasir-v2", 50.0)] == 20.0
    assert t.delta.at[("fixmatch", "multi"), ("kvasir", 50.0)] == -2.0
    assert t.delta[[c for c in t.delta.columns]].loc[[("fixmatch", "single"), ("mics", "fused")]].isna().all().all()

    md = to_markdown(t)
    lines = md.splitlines()
    assert lines[0].startswith("| Method") and "Kvasir 50%" in lines[0] and lines[0].index("Kvasir 5%") < lines[0].index("Kvasir-v2 50%")
    mics = next(line for line in lines if line.startswith("| MICS"))
    assert "**61.00 ± 1.41**" in mics and "**60.00** [55.0, 65.0]" in mics
    fixmatch_multi = [line for line in lines if line.startswith("| FixMatch")][1]
    assert "(-2.00)" in fixmatch_multi and "**70.00** (+20.00)" in fixmatch_multi
    assert md.index("*single mode") < md.index("*multi mode") < md.index("*fused") < md.index("*bounds")
    assert "99.00" not in md and "mics_t3" not in md

    tex = to_latex(t, "tab:table2")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "\\checkmark" in tex
    assert "\\textbf{70.00} \\textcolor{green!50!black}{(+20.00)}" in tex
    assert "48.00 \\textcolor{red}{($-$2.00)}" in tex
    assert "\\textbf{61.00\\,$\\pm$\\,1.41}" in tex
    assert "\\multicolumn{4}{c}{Kvasir} & \\multicolumn{4}{c}{Kvasir-v2}" in tex
    assert tex.index("FixMatch & \\checkmark &  &") < tex.index("FixMatch & \\checkmark & \\checkmark") < tex.index("MICS &")
    assert tex.index("MICS &") < tex.index("bounds (not ranked)") < tex.index("Supervised &")


def test_table2_keeps_a_group_of_its_own_and_leaves_out_controls_and_presets() -> None:
    """Table II is every method but the ablation presets and the controls: a method registered in a group
    of its own (here "mine") is compared too."""
    rows = [_row("kvasir", "supervised", "single", 50.0, 40.0),
            _row("kvasir", "fixmatch", "single", 50.0, 50.0, group="mine", label="MyMatch"),
            _row("kvasir", "positive_control", "single", 50.0, 80.0),
            _row("kvasir", "mics_t3_vanilla", "fused", 50.0, 99.0)]
    md = to_markdown(table2(pd.DataFrame(rows)))
    assert "| MyMatch " in md and "| Supervised " in md
    assert "80.00" not in md and "99.00" not in md

def test_latex_tables_compile_with_pdflatex(tmp_path: Path) -> None:
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (`.ci/run` installs Debian's texlive-latex-recommended)")
    results = _results()
    results = pd.concat([results, pd.DataFrame([_row("kvasir", "mics_t4_wli", "fused", 50.0, 55.0)])])
    results.to_csv(tmp_path / "results.csv", index=False)
    assert main(["report", "--out", str(tmp_path), "--reports", str(tmp_path / "reports")]) == 0
    doc = tmp_path / "reports" / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{xcolor}\n\\usepackage{amssymb}\n"
                   "\\begin{document}\n\\input{table2.tex}\n\\input{table4.tex}\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=doc.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (doc.parent / "doc.pdf").stat().st_size > 0


def _write_record(out: Path, dataset: str, method: str, mode: str, labels: float, top1: float, **data) -> None:
    """A record as `run` writes it (only the fields reports use)."""
    config = {"data": {"name": dataset, "nbi": "spectral", "root": None, "image_size": 64, **data},
              "model": {"arch": "vit_tiny_patch16_224"}, "profile": "quick"}
    record = {"method": method, "mode": mode, "dataset": dataset, "labels": labels, "seed": 0, "profile": "quick",
              "test_top1": top1, "test_top1_ci95": [top1 - 4, top1 + 4], "config": config,
              **get_method(method).describe()}
    folder = run_dir(out, dataset, method, mode, labels, 0)
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(record))


def test_compare_with_the_paper_on_hand_made_records(tmp_path: Path) -> None:
    _write_record(tmp_path, "kvasir", "fixmatch", "single", 50.0, 70.0, root="/data/kvasir")
    _write_record(tmp_path, "kvasir", "mics", "fused", 50.0, 78.0, root="/data/kvasir")
    _write_record(tmp_path, "kvasir", "mics_t3_vanilla", "fused", 50.0, 69.0, root="/data/kvasir")
    _write_record(tmp_path, "synthetic", "fixmatch", "single", 50.0, 99.0)
    text = compare_paper(rebuild_results_csv(tmp_path))
    assert "| kvasir    | FixMatch | single | 50         | 70.00  | 71.67   | -1.67          |" in text
    assert "| kvasir    | MICS     | fused  | 50         | 78.00  | 76.67   | +1.33          |" in text  # Table II
    table3 = text[text.index("## Table III"):text.index("## Table IV")]
    assert "| 78.00  | 77.04   | +0.96" in table3 and "| 69.00  | 70.33   | -1.33" in table3
    assert "99.00" not in text  # synthetic has no paper counterpart
    assert "**kvasir**: images from /data/kvasir; NBI simulated from each WLI image by the spectral model" in text
    assert "profile quick" in text and "WtNGAN" in text

    assert main(["report", "--out", str(tmp_path), "--reports", str(tmp_path / "reports"), "--compare-paper"]) == 0
    ours = (tmp_path / "reports" / "table2.md").read_text()
    assert "71.67" not in ours and "76.67" not in ours  # the paper's numbers never enter our tables
    assert (tmp_path / "reports" / "compare_paper.md").read_text() == text
    assert (tmp_path / "reports" / "table3.md").exists() and not (tmp_path / "reports" / "table4.md").exists()


def test_no_common_cell_is_said_plainly(tmp_path: Path) -> None:
    _write_record(tmp_path, "synthetic", "fixmatch", "single", 50.0, 99.0)
    text = compare_paper(rebuild_results_csv(tmp_path))
    assert "No cell of ours is in the paper's tables: our datasets are synthetic; the paper reports kvasir, kvasir-v2." in text
    assert "embedded synthetic dataset" in text


def test_ablation_tables_follow_the_paper_rows(tmp_path: Path) -> None:
    rows = [_row("kvasir", m, "fused", 50.0, v) for m, v in
            (("mics_t3_vanilla", 70.0), ("mics_t3_consistency", 71.0), ("mics", 75.0), ("mics_t4_wli_nbi", 72.0))]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    assert main(["report", "--out", str(tmp_path), "--reports", str(tmp_path / "rep"), "--format", "markdown"]) == 0
    t3 = [[cell.strip() for cell in line.split("|")[1:-1]]
          for line in (tmp_path / "rep" / "table3.md").read_text().splitlines() if line.startswith("| ")]
    assert t3 == [["Method", "Consistency", "Reconstructive", "Aligned", "Kvasir 50%"],
                  ["Consistency", "✓", "", "", "71.00 [66.0, 76.0]"],
                  ["MICS (all)", "✓", "✓", "✓", "**75.00** [70.0, 80.0]"],
                  ["Vanilla", "", "", "", "70.00 [65.0, 75.0]"]]
    t4 = (tmp_path / "rep" / "table4.md").read_text()
    assert "WLI + NBI encoders" in t4 and "Vanilla" not in t4
    assert not (tmp_path / "rep" / "table2.tex").exists()  # --format markdown
    assert (tmp_path / "rep" / "accuracy_vs_labels.png").exists()


def _fake_runs(out: Path) -> None:
    """Finished-run outputs for two methods at 5% labels (features separate the classes)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(CLASSES)), 20)
    for method, mode in (("fixmatch", "single"), ("fixmatch", "multi"), ("mics", "fused")):
        _write_record(out, "synthetic", method, mode, 5.0, 80.0)  # what `umap` builds results.csv from
        folder = run_dir(out, "synthetic", method, mode, 5.0, 0)
        features = rng.normal(size=(len(labels), 8)) + labels[:, None] * 3
        logits = np.eye(len(CLASSES))[labels] + rng.normal(scale=0.8, size=(len(labels), len(CLASSES)))
        np.savez(folder / "test_outputs.npz", features=features, labels=labels, logits=logits,
                 index=np.arange(len(labels)), classes=np.asarray(CLASSES))


def test_umap_figure_one_panel_per_method(tmp_path: Path, monkeypatch, capsys) -> None:
    _fake_runs(tmp_path)
    seen = []
    monkeypatch.setattr(benchmark.reports.plots, "umap_embedding", lambda f: seen.append(f.shape) or f[:, :2])
    assert main(["umap", "--out", str(tmp_path), "--reports", str(tmp_path / "rep")]) == 0
    assert seen == [(60, 8), (60, 8)]  # FixMatch (its multi run) and MICS
    for ext in ("png", "pdf"):
        assert (tmp_path / "rep" / f"umap_synthetic_labels5.{ext}").stat().st_size > 0
    assert main(["report", "--out", str(tmp_path), "--reports", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "confusion_synthetic_labels5.png").exists()
    assert main(["umap", "--out", str(tmp_path), "--labels", "10"]) == 2
    assert "no finished run at 10% labels" in capsys.readouterr().err


@pytest.mark.slow
def test_umap_with_the_real_reducer(tmp_path: Path) -> None:
    _fake_runs(tmp_path)
    assert main(["umap", "--out", str(tmp_path), "--reports", str(tmp_path / "rep"), "--mode", "single"]) == 0
    assert (tmp_path / "rep" / "umap_synthetic_labels5.pdf").exists()
