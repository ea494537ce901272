"""Run records: one `result.json` per finished run, and `results.csv`, their union.

Everything here may be called by several processes on one output folder at once (two `run`
commands, later workers or Slurm jobs): files are replaced atomically, and whatever must not
happen twice at the same time holds `benchmark.kit.files.file_lock`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.kit.errors import BenchmarkError
from benchmark.kit.files import atomic_write, file_lock, remove_stale_temporaries, warn_once, write_if_changed

RECORD = "result.json"
FAILED = "failed.json"  # marker of a run that stopped with an error; its log says why
RESULTS = "results.csv"


def run_dir(out: Path, dataset: str, method: str, mode: str, labels: float, seed: int) -> Path:
    return Path(out) / "runs" / dataset / method / mode / f"labels{labels:02g}" / f"seed{seed}"


def write_json_atomic(path: Path, obj) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=str))


# What every record has; a file without them is not a record (e.g. truncated, or edited by hand).
RECORD_KEYS = ("method", "mode", "dataset", "labels", "seed", "test_top1", "test_top1_ci95", "config")


def _read_json(path: Path, keys: tuple[str, ...], action: str) -> dict | None:
    """The JSON object in `path`, None when it is missing; a damaged one (not JSON, or without `keys`)
    is reported in one line and read as missing."""
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_bytes())
        missing = [k for k in keys if k not in obj] if isinstance(obj, dict) else ["an object"]
        problem = f"no {', '.join(missing)}" if missing else None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problem = f"{type(err).__name__}: {err}"
    if problem is None:
        return obj
    warn_once(path, problem, action)
    return None


def read_record(folder: Path) -> dict | None:
    """The cell's record, or None when it has none, or a damaged one (its cell then runs again)."""
    return _read_json(Path(folder) / RECORD, RECORD_KEYS, "ignored; its cell runs again")


def read_failure(folder: Path) -> dict | None:
    return _read_json(Path(folder) / FAILED, ("message",), "ignored")


def bootstrap_ci95(correct: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy (%) of a vector of 0/1 outcomes."""
    correct = np.asarray(correct, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), size=(resamples, len(correct)))].mean(axis=1) * 100
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def collect_records(out: Path) -> list[dict]:
    """Every readable record under `<out>/runs` (a damaged one is reported and left out)."""
    records = (read_record(p.parent) for p in sorted(Path(out).glob(f"runs/*/*/*/*/*/{RECORD}")))
    return [rec for rec in records if rec is not None]


COLUMNS = [
    "dataset", "method", "mode", "labels", "seed", "profile", "test_top1", "test_top1_last",
    "val_top1_best", "ci95_low", "ci95_high", "n_labeled", "n_unlabeled", "n_val", "n_test",
    "iterations", "wall_s", "device", "peak_rss_mb", "nbi", "data_root", "image_size", "arch", "init",
    "unlabeled_mask_rate", "pseudo_label_acc", "pseudo_label_acc_all", "collapsed", "config_hash", "code_version",
    "label", "family", "group", "description", "paper_rows",  # the method as its registration describes it
]


def _row(rec: dict) -> dict:
    """The flat results.csv row of a record; where the data came from is taken from its config, so
    a report can say which dataset files and NBI source its numbers stand on."""
    row = {k: rec.get(k) for k in COLUMNS}
    row["ci95_low"], row["ci95_high"] = rec["test_top1_ci95"]
    cfg = rec["config"]
    row["nbi"] = cfg["data"].get("nbi")
    row["data_root"] = cfg["data"].get("root")
    row["image_size"] = cfg["data"].get("image_size")
    row["arch"] = cfg["model"].get("arch")
    row["init"] = cfg["model"].get("init", "random")
    row.update(method_columns({"label": rec["method"], "family": rec["method"], "group": "table2", **rec}))
    return row


def method_columns(described: dict) -> dict:
    """results.csv's columns of what a record says of its method (`MethodSpec.describe`); a record written
    before they were kept reads as a Table II row under its registry name."""
    return {"label": described["label"], "family": described["family"], "group": described["group"],
            "description": described.get("description", ""), "paper_rows": json.dumps(described.get("paper_rows", []))}


def records_table(out: Path) -> pd.DataFrame:
    """The rows of every record under `<out>/runs`, sorted as in results.csv."""
    table = pd.DataFrame([_row(rec) for rec in collect_records(out)], columns=COLUMNS)
    if len(table):
        table = table.sort_values(["dataset", "method", "mode", "labels", "seed"]).reset_index(drop=True)
    return table


def rebuild_results_csv(out: Path) -> pd.DataFrame:
    """`<out>/results.csv` from every record under `<out>/runs`, written atomically, and only when it
    changes (so a finished, read-only output folder can be run again).

    Rebuilds are serialised by a lock: otherwise a process that read the records just before
    another one added its record could write its older table last."""
    path = Path(out) / RESULTS
    table = records_table(out)
    if path.exists() and path.read_bytes() == table.to_csv(index=False).encode():
        return table  # checked before the lock too: a read-only folder cannot take it
    with file_lock(Path(out) / ".results.lock"):
        remove_stale_temporaries(path)
        table = records_table(out)
        write_if_changed(path, table.to_csv(index=False).encode())
    return table


def read_results(out: Path) -> pd.DataFrame:
    """The results table, the only input of reports; an error if there is nothing in it.

    Where the records are (`<out>/runs`), it is rebuilt from them first, so a report never shows a
    stale `results.csv`; a `results.csv` alone (e.g. copied without its runs) is read as it is."""
    out, path = Path(out), Path(out) / RESULTS
    if (out / "runs").is_dir():
        try:
            table = rebuild_results_csv(out)
        except OSError as err:  # e.g. a read-only folder: the records are what counts
            warn_once(path, f"cannot be rewritten: {err.strerror}", "using the records themselves")
            table = records_table(out)
    elif path.exists():
        try:
            table = pd.read_csv(path)
        except pd.errors.EmptyDataError:  # a 0-byte file
            table = pd.DataFrame(columns=COLUMNS)
    else:
        table = pd.DataFrame(columns=COLUMNS)
    if table.empty:
        raise BenchmarkError(f"no results in {path}; run `python -m benchmark run` first")
    return table
