"""Runs grid cells: one (dataset, method, mode, label ratio, seed) each, one record each."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import methods

from .config import build_config, config_hash
from .contract import RunContext, Trained
from .curves import CurveWriter
from .data import load_dataset, make_split
from .data.loaders import eval_batches
from .results import RECORD, bootstrap_ci95, read_record, run_dir, write_json_atomic
from .runtime import code_version, configure_threads, peak_rss_mb, resolve_amp, resolve_device, seed_everything
from .training import predict_logits


@dataclass(frozen=True)
class Cell:
    dataset: str
    method: str
    mode: str
    labels: float
    seed: int

    def folder(self, out: Path) -> Path:
        return run_dir(out, self.dataset, self.method, self.mode, self.labels, self.seed)

    def __str__(self) -> str:
        return f"{self.dataset}/{self.method}/{self.mode}/labels{self.labels:g}/seed{self.seed}"


def cell_config(cell: Cell, profile: str, overrides: dict | None, data_root: str | None, nbi: str | None) -> dict:
    return build_config(profile, cell.method, cell.mode, cell.dataset, cell.labels, cell.seed,
                        overrides, data_root, nbi)


def run_cell(cell: Cell, cfg: dict, out: Path, device: str = "auto") -> dict:
    """Train and evaluate one cell; the record is written only once the run has finished."""
    spec = methods.get_method(cell.method)
    folder = cell.folder(out)
    chash = config_hash(cfg)
    done = read_record(folder)
    if done is not None and done.get("config_hash") == chash:
        return done
    if done is not None or _stale_checkpoints(folder, chash):  # a changed config starts over
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config_hash").write_text(chash)

    dev = resolve_device(device if device != "auto" else cfg["runtime"]["device"])
    configure_threads(cfg["runtime"].get("threads"))
    seed_everything(cell.seed)
    raw, cache = load_dataset(cfg["data"])
    split = make_split(raw, cache, cfg["data"], cell.labels, cell.seed)
    curves = CurveWriter(folder)
    ctx = RunContext(device=dev, seed=cell.seed, run_dir=folder, cache_dir=Path(out) / "cache",
                     amp=resolve_amp(cfg["runtime"].get("amp", "auto"), dev), curves=curves)
    start = time.perf_counter()
    try:
        trained: Trained = spec.train(split, cfg, ctx)
    finally:
        curves.close()
    wall = time.perf_counter() - start

    batch = int(cfg["train"].get("eval_batch_size", 256))
    best_logits = predict_logits(trained.best, split.test, dev, batch)
    last_logits = predict_logits(trained.last, split.test, dev, batch)
    correct = (best_logits.argmax(1).numpy() == split.test.labels)
    _save_outputs(folder, trained, split.test, best_logits, dev, batch)
    record = {
        "method": cell.method, "mode": cell.mode, "dataset": cell.dataset, "labels": cell.labels,
        "seed": cell.seed, "profile": cfg["profile"],
        "test_top1": float(correct.mean() * 100),
        "test_top1_last": float((last_logits.argmax(1).numpy() == split.test.labels).mean() * 100),
        "val_top1_best": trained.val_top1_best,
        "test_top1_ci95": list(bootstrap_ci95(correct, seed=cell.seed)),
        "n_labeled": len(split.labeled), "n_unlabeled": len(split.unlabeled),
        "n_val": len(split.val), "n_test": len(split.test),
        "iterations": trained.iterations, "wall_s": round(wall, 2), "device": str(dev),
        "peak_rss_mb": round(peak_rss_mb(), 1), "config": cfg, "config_hash": chash,
        "code_version": code_version(), "info": trained.info,
    }
    for stale in folder.glob("*_checkpoint.pt"):
        stale.unlink()
    write_json_atomic(folder / RECORD, record)
    return record


def _stale_checkpoints(folder: Path, chash: str) -> bool:
    marker = folder / "config_hash"
    return marker.exists() and marker.read_text().strip() != chash


@torch.no_grad()
def _save_outputs(folder: Path, trained: Trained, test, logits: torch.Tensor, device, batch_size: int) -> None:
    """The selected model and its test-set features, so figures never retrain anything."""
    model = trained.best.eval()
    feats = [model.embed(b).float().cpu() for b, _ in eval_batches(test, batch_size, device)]
    np.savez(folder / "test_outputs.npz", features=torch.cat(feats).numpy(), labels=test.labels,
             logits=logits.numpy(), index=test.index)
    torch.save(trained.best.state_dict(), folder / "model.pt")
