"""One cell's run itself: its data, its budget-scaled config and run context, the method's training, the
test pass of the selected and the last model, the saved outputs and the record (`result.json`)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import methods
from benchmark.harness.config import config_hash
from benchmark.harness.grid import CHECKPOINTS, MODEL, Cell
from benchmark.kit import budget, distributed
from benchmark.kit.contract import RunContext, Trained
from benchmark.kit.curves import CurveWriter
from benchmark.kit.data import load_dataset, make_split
from benchmark.kit.data.loaders import eval_batches, normalised_with
from benchmark.kit.files import atomic_write
from benchmark.kit.health import PseudoLabelMonitor, collapsed
from benchmark.kit.models import input_normalisation
from benchmark.kit.records import RECORD, bootstrap_ci95, write_json_atomic
from benchmark.kit.runtime import (
    code_version,
    configure_threads,
    peak_rss_mb,
    resolve_amp,
    resolve_amp_dtype,
    resolve_device,
    seed_everything,
)
from benchmark.kit.training import atomic_save, predict_logits

_log = logging.getLogger(__name__)

class RunProgress:
    """A progress bar for one run, fed through `RunContext.progress(loop, done, total)` by the
    training loop; it starts a new bar when the loop changes (e.g. pre-training, then fine-tuning).
    It also times each loop from its first report to its last (`stage_s`, what the grid's cost
    estimate learns a shared stage's cost from: a stage reused from a cache never reports)."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled
        self.loop: str | None = None
        self.bar: tqdm | None = None
        self.times: dict[str, list[float]] = {}  # loop -> [first report, last report]

    @property
    def stage_s(self) -> dict[str, float]:
        return {loop: round(last - first, 2) for loop, (first, last) in self.times.items()}

    def __call__(self, loop: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.times.setdefault(loop, [now, now])[1] = now
        if self.bar is None or loop != self.loop:
            self.close()
            self.loop = loop
            self.bar = tqdm(total=total, initial=done, desc=f"{self.label} {loop}", unit="it",
                            position=1, leave=False, disable=None if self.enabled else True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def train_and_evaluate(cell: Cell, out: Path, show_progress: bool) -> dict | None:
    """The run itself: train, evaluate the selected and the last model on test, write the record
    (rank 0's part; under torchrun the other processes only train, and get None)."""
    start = time.perf_counter()  # the record's wall_s: the whole cell, its test pass and outputs included
    spec = methods.get_method(cell.method)
    folder = cell.folder(out)
    cfg = cell.cfg
    chash = config_hash(cfg)
    dev = resolve_device(cfg.runtime.device)
    _log.info("run %s on %s, config %s, code %s", cell, dev, chash, code_version())
    configure_threads(cfg.runtime.threads)
    seed_everything(cell.seed)
    raw, cache = load_dataset(cfg.data)
    split = make_split(raw, cache, cfg.data, cell.labels, cell.seed)
    cfg = budget.apply(cfg, spec.stage_iterations(cfg, split.sizes()))  # the method and the record get scaled constants
    cfg.model = cfg.model.model_copy(update=input_normalisation(cfg.model))  # recorded: what inputs were normalised with
    health = PseudoLabelMonitor(raw.labels[split.unlabeled.index])  # withheld labels: diagnosis only
    main = distributed.is_main()  # under torchrun the others train along and write nothing
    curves = CurveWriter(folder, logger=_log) if main else None
    progress = RunProgress(str(cell), show_progress and main)
    # `cache_dir` is absolute and fixed per output folder: every cell (and process) of this output
    # folder shares it, e.g. one MICS pre-training per (dataset, seed, profile).
    ctx = RunContext(device=dev, seed=cell.seed, run_dir=folder, cache_dir=out.resolve() / "cache",
                     amp=resolve_amp(cfg.runtime.amp, dev), amp_dtype=resolve_amp_dtype(cfg.runtime.amp_dtype),
                     compile=cfg.runtime.compile,
                     curves=curves, progress=progress, health=health)
    with normalised_with(cfg.model.mean, cfg.model.std):  # training and the test pass
        try:
            trained: Trained = spec.train(split, cfg, ctx)
        finally:
            progress.close()
            if curves is not None:
                curves.close()
        if not main:
            return None

        batch = cfg.train.eval_batch_size
        best_logits = predict_logits(trained.best, split.test, dev, batch)
        last_logits = best_logits if trained.last is trained.best else predict_logits(trained.last, split.test, dev, batch)
        correct = (best_logits.argmax(1).numpy() == split.test.labels)
        _save_outputs(folder, trained, split, best_logits, dev, batch, cfg.runtime.save_model)
    wall = time.perf_counter() - start
    record = {
        "method": cell.method, "mode": cell.mode, "dataset": cell.dataset, "labels": cell.labels,
        "seed": cell.seed, "profile": cfg.profile, **spec.describe(),
        "test_top1": float(correct.mean() * 100),
        "test_top1_last": float((last_logits.argmax(1).numpy() == split.test.labels).mean() * 100),
        "val_top1_best": trained.val_top1_best,
        "test_top1_ci95": list(bootstrap_ci95(correct, seed=cell.seed)),
        "n_labeled": len(split.labeled), "n_unlabeled": len(split.unlabeled),
        "n_val": len(split.val), "n_test": len(split.test),
        "iterations": trained.iterations, "wall_s": round(wall, 2), "stage_s": progress.stage_s, "device": str(dev),
        "peak_rss_mb": round(peak_rss_mb(), 1), "config": cfg.plain(), "config_hash": chash,
        "code_version": code_version(), "info": trained.info,
        **health.summary(), "collapsed": collapsed(best_logits.argmax(1).numpy(), split.num_classes),
    }
    write_json_atomic(folder / RECORD, record)
    for checkpoint in folder.glob(CHECKPOINTS):  # only after the record: a kill in between loses nothing
        checkpoint.unlink()
    _log.info("finished: test_top1 %.2f, val_top1_best %.2f, %.1f s", record["test_top1"],
              record["val_top1_best"], wall)
    return record


@torch.no_grad()
def _save_outputs(folder: Path, trained: Trained, split, logits: torch.Tensor, device, batch_size: int,
                  save_model: bool) -> None:
    """The selected model's test-set features (with the class names, for legends), so figures never
    retrain anything, and its weights when asked for. Both files are complete before the record exists."""
    model = trained.best.eval()
    feats = [model.embed(b).float().cpu() for b, _ in eval_batches(split.test, batch_size, device)]
    with atomic_write(folder / "test_outputs.npz") as tmp, open(tmp, "wb") as f:
        # a file object: np.savez would append ".npz" to a name
        np.savez(f, features=torch.cat(feats).numpy(), labels=split.test.labels, logits=logits.numpy(),
                 index=split.test.index, classes=np.asarray(split.classes))
    if save_model:
        atomic_save(trained.best.state_dict(), folder / MODEL)
