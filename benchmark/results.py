"""Run records: one `result.json` per finished run, and `results.csv`, their union."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

RECORD = "result.json"


def run_dir(out: Path, dataset: str, method: str, mode: str, labels: float, seed: int) -> Path:
    return Path(out) / "runs" / dataset / method / mode / f"labels{labels:02g}" / f"seed{seed}"


def write_json_atomic(path: Path, obj) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def read_record(folder: Path) -> dict | None:
    path = Path(folder) / RECORD
    return json.loads(path.read_text()) if path.exists() else None


def bootstrap_ci95(correct: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy (%) of a vector of 0/1 outcomes."""
    correct = np.asarray(correct, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), size=(resamples, len(correct)))].mean(axis=1) * 100
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def collect_records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob(f"runs/*/*/*/*/*/{RECORD}"))]


COLUMNS = [
    "dataset", "method", "mode", "labels", "seed", "profile", "test_top1", "test_top1_last",
    "val_top1_best", "ci95_low", "ci95_high", "n_labeled", "n_unlabeled", "n_val", "n_test",
    "iterations", "wall_s", "device", "peak_rss_mb", "config_hash", "code_version",
]


def rebuild_results_csv(out: Path) -> pd.DataFrame:
    """`<out>/results.csv` from every record under `<out>/runs`, written atomically."""
    rows = []
    for rec in collect_records(out):
        row = {k: rec.get(k) for k in COLUMNS}
        row["ci95_low"], row["ci95_high"] = rec["test_top1_ci95"]
        rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    if len(table):
        table = table.sort_values(["dataset", "method", "mode", "labels", "seed"]).reset_index(drop=True)
    path = Path(out) / "results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".results.csv.{os.getpid()}.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return table
