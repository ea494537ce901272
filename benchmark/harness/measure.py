"""What a training step costs: the measurements behind `python -m benchmark perf` (`benchmark.harness.estimate`
turns them into a grid's wall time).

Ours against bare. `measure_method` runs a method's real `train` (its TrainingLoop, its batch assembly
and augmentation from the cached arrays) for a few steps, watching the end of every step through the
`RunContext.progress` hook, which replays the step's module calls on a bare loop after each timed step
of ours (`benchmark.harness.bareloop`). Besides: the loader's own throughput (`measure_loader`) and what
the runner adds to a cell (`measure_cell_overhead`); `measure` gathers them into perf.json's record
(`benchmark.harness.perf_record`).

A method with several training loops (its `Cost` stages, e.g. MICS's pre-training and fine-tuning)
gets the figures of each; the measured run's config comes from its `Cost.shorten`.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import methods
from benchmark.harness.bareloop import Interleaver, LoopFigures
from benchmark.harness.cell import run_cell
from benchmark.harness.grid import Cell, configured
from benchmark.harness.perf_record import (
    consumed_img_s,
    load_average,
    loader_line,
    method_line,
    process_age_s,
    stage_figures,
    stages_line,
    step_settings,
)
from benchmark.harness.timing import now
from benchmark.kit import budget
from benchmark.kit.ahead import settle
from benchmark.kit.contract import VIEW_MODES, RunContext
from benchmark.kit.data import load_dataset, make_split
from benchmark.kit.data.types import SemiSupervisedSplit
from benchmark.kit.runtime import code_version, peak_rss_mb, resolve_amp, seed_everything
from benchmark.kit.schema import RunConfig
from benchmark.kit.training import predict_logits
from methods.common import LabeledBatches, UnlabeledBatches, augmenter_fits, import_semilearn, warm_augmenter
from methods.registry import REFERENCE

SKIP = 3  # untimed first steps of a loop: allocation, optimizer state, the first-call costs of libraries
LABELS = 50.0  # label ratio of the measured runs (batch shapes do not depend on it)
SEED = 0
SUPERVISED = (REFERENCE, "single")  # its config is always built: the runner-overhead cell

Pair = tuple[str, str]  # (method, mode)


# -------------------------------------------------------------------------------- one method


@dataclass
class MethodFigures:
    key: str  # "method/mode"
    loops: dict[str, LoopFigures]
    setup_s: float  # building the method and finishing the run, beyond steps and evaluation
    eval_img_s: float  # validation/test images per second through the trained predictor
    extras: dict[str, float]  # once-per-run costs a stage declares (`Stage.extra`), e.g. MICS's dictionary_s
    device: dict  # what the device did: linear layers' output dtypes, CUDA's peak memory and host syncs per step

    def summary(self) -> dict:
        main = list(self.loops.values())[-1]  # the loop that trains the evaluated model
        return {**main.summary(), "setup_s": self.setup_s, "eval_img_s": self.eval_img_s, **self.extras,
                "device_path": self.device,
                "loops": {name: {**f.summary(), "iterations_measured": f.iterations} for name, f in self.loops.items()}}


def skip_steps(warmup: int) -> int:
    """Untimed first steps: SKIP, after a supervised warm-up and the first step after it (Dash's computes
    the validation loss): those are not the method's training step."""
    return SKIP + (warmup + 1 if warmup else 0)


def measure_method(name: str, mode: str, cfg: RunConfig, split: SemiSupervisedSplit, device: torch.device,
                   steps: int, workdir: Path) -> MethodFigures:
    """Ours and bare, step by step, for one method and mode (see the module's docstring)."""
    spec = methods.get_method(name)
    n_train = len(split.train_index)

    def measured_config(iterations: int) -> RunConfig:  # time constants scaled to the measured run, as the runner does
        short = spec.cost.shorten(cfg, iterations, n_train)
        return budget.apply(short, spec.stage_iterations(short, split.sizes()))

    skip = skip_steps(spec.cost.warmup(measured_config(SKIP + steps)))
    run_cfg = measured_config(skip + steps)
    amp = resolve_amp(cfg.runtime.amp, device)
    hook = Interleaver(skip, cfg.train.lr, amp, device)
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-{mode}-", dir=workdir))
    ctx = RunContext(device=device, seed=SEED, run_dir=folder, cache_dir=folder / "cache", amp=amp,
                     compile=cfg.runtime.compile, progress=hook)
    seed_everything(SEED)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    trained = spec.train(split, run_cfg, ctx)
    train_s = time.perf_counter() - start
    path = {"amp": amp, "linear_dtypes": sorted(set().union(*(f.dtypes for f in hook.loops.values())))}
    if device.type == "cuda":
        path["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        path["host_syncs_per_step"] = {loop: round(n / max(1, len(hook.loops[loop].ours.wall)), 2)
                                       for loop, n in hook.syncs.counts.items()}
    for loop, figures in hook.loops.items():
        if not figures.ours.wall or not figures.bare.wall:
            raise RuntimeError(f"{name}/{mode}: loop '{loop}' ran {figures.iterations} steps, none timed")

    batch = cfg.train.eval_batch_size
    start = time.perf_counter()
    predict_logits(trained.best, split.val, device, batch)
    eval_s = time.perf_counter() - start
    extras = {stage.extra: trained.info[stage.loop][stage.extra] for stage in spec.cost.stages
              if stage.extra is not None and stage.extra in trained.info.get(stage.loop, {})}
    setup_s = max(0.0, train_s - hook.steps_s - hook.hook_s - eval_s - sum(extras.values()))
    return MethodFigures(f"{name}/{mode}", hook.loops, setup_s, len(split.val) / eval_s, extras, path)


# -------------------------------------------------------------------------------------- loader


def measure_loader(split: SemiSupervisedSplit, cfg: RunConfig, mode: str, device: torch.device, steps: int) -> dict:
    """Images per second the training loader alone delivers (labeled + weak + strong batch, augmented),
    called back to back as the training loop calls it."""
    batch = cfg.train.batch_size
    unlabeled_batch = batch * cfg.train.uratio
    labeled = LabeledBatches(split.labeled, batch, SEED, device)
    unlabeled = UnlabeledBatches(split.unlabeled, unlabeled_batch, SEED, device, mode)
    labeled(0), unlabeled(0)  # first calls: imports, the RandAugment policy
    start = now(device)
    for it in range(1, steps + 1):
        labeled(it), unlabeled(it)
    end = now(device)
    settle()  # the next batches made ahead, before anything else is measured
    images = batch + 2 * unlabeled_batch
    return {"img_s": steps * images / (end[0] - start[0]), "images_per_step": images,
            "step_s": (end[0] - start[0]) / steps, "cpu_step_s": (end[1] - start[1]) / steps}


# ------------------------------------------------------------------------------- runner overhead


def measure_cell_overhead(supervised: tuple[RunConfig, float], device: torch.device, workdir: Path) -> dict:
    """What a cell costs beyond its method's `train` and the three test passes (best, last, embed): the
    runner's split, files, record and results table (`cell_overhead_s`); and what the first cell of a
    process pays once more (`first_cell_extra_s`: TensorBoard's import, ...). From one tiny cell of the
    reference method (`methods.registry.REFERENCE`), trained bare-handed, then through `run_cell`, each twice."""
    cfg, labels = supervised[0].model_copy(deep=True), supervised[1]
    cfg.train.iterations = cfg.train.eval_every = 2
    split = split_for(cfg, labels)
    spec = methods.get_method(REFERENCE)
    amp = resolve_amp(cfg.runtime.amp, device)
    train_s = []
    for _ in range(2):
        ctx = RunContext(device=device, seed=SEED, run_dir=Path(tempfile.mkdtemp(dir=workdir)),
                         cache_dir=workdir / "cache", amp=amp)
        start = time.perf_counter()
        trained = spec.train(split, cfg, ctx)
        train_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    predict_logits(trained.best, split.test, device, cfg.train.eval_batch_size)
    test_pass_s = time.perf_counter() - start
    cell_s = []
    for attempt in range(2):
        cell = Cell(split.dataset, REFERENCE, "single", labels, SEED, cfg=cfg)  # runs where `device` was resolved from
        start = time.perf_counter()
        outcome = run_cell(cell, workdir / f"cells{attempt}")
        cell_s.append(time.perf_counter() - start)
        if outcome.status != "finished":
            raise RuntimeError(f"the runner-overhead cell did not finish: {outcome.status} {outcome.message}")
    return {"cell_overhead_s": max(0.0, cell_s[1] - train_s[1] - 3 * test_pass_s),
            "first_cell_extra_s": max(0.0, cell_s[0] - cell_s[1])}


# ------------------------------------------------------------------------------------ the record


def measure(profile: str, pairs: list[Pair], configs: dict[Pair, tuple[RunConfig, float]], device: torch.device,
            steps: int, log=print) -> dict:
    """Every figure of `perf` but the grid estimate, for the (method, mode) `pairs` of `profile`, each with
    its (config, label ratio) from `measured_configs`; `log` gets one line per finished measurement."""
    fixed_s = process_age_s()
    start = time.perf_counter()
    import_semilearn()  # every grid pays this import once, in its first USB cell
    fixed_s += time.perf_counter() - start
    if any(mode == "single" for _, mode in pairs) and augmenter_fits(device):
        warm_augmenter()  # its start-up is a run's first seconds; the timed steps are its steady state
    record: dict = {"profile": profile, "device": str(device), "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "torch": torch.__version__, "code_version": code_version(),
                    "dataset": configs[SUPERVISED][0].data.name, "steps": steps, "load_avg_before": load_average(),
                    "fixed_s": fixed_s, "settings": step_settings(configs[SUPERVISED][0]), "methods": {}}
    splits: dict[float, SemiSupervisedSplit] = {}
    train_cfgs: dict[str, RunConfig] = {}
    with tempfile.TemporaryDirectory(prefix="mics-bench-perf-") as tmp:
        workdir = Path(tmp)
        for name, mode in pairs:
            cfg, labels = configs[name, mode]
            if labels not in splits:
                splits[labels] = split_for(cfg, labels)
            figures = measure_method(name, mode, cfg, splits[labels], device, steps, workdir)
            record["methods"][figures.key] = figures.summary()
            train_cfgs.setdefault(mode, cfg)
            log(method_line(figures.key, record["methods"][figures.key]))
        split = splits.get(LABELS) or split_for(configs[SUPERVISED][0], LABELS)
        record["sizes"] = {"train": len(split.train_index), "labeled": len(split.labeled),
                           "val": len(split.val), "test": len(split.test)}
        modes = {}
        for mode in VIEW_MODES:
            if mode not in train_cfgs:
                continue
            loader = measure_loader(split, train_cfgs[mode], mode, device, steps)
            loader["consumed_img_s"] = consumed_img_s(record["methods"], mode, loader["images_per_step"])
            modes[mode] = loader
            log(loader_line(mode, loader))
        if modes:  # the headline: the mode where the loader has the least margin
            worst = min(modes.values(), key=lambda m: m["img_s"] / (m["consumed_img_s"] or math.inf))
            record["loader"] = {"img_s": worst["img_s"], "consumed_img_s": worst["consumed_img_s"], "modes": modes}
        for key, figures in record["methods"].items():
            name = key.split("/")[0]
            if len(methods.get_method(name).cost.stages) > 1:
                record.setdefault("stages", {})[key] = stage_figures(name, figures)
                log(stages_line(key, record["stages"][key]))
        overhead = measure_cell_overhead(configs[SUPERVISED], device, workdir)
        record["cell_overhead_s"] = overhead["cell_overhead_s"]
        record["fixed_s"] += overhead["first_cell_extra_s"]
    record["peak_rss_mb"] = peak_rss_mb()
    record["load_avg_after"] = load_average()
    record["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return record


def measured_configs(profile: str, pairs: list[Pair], dataset: str, data_root: str | None = None,
                     nbi: str | None = None, overrides: dict | None = None) -> dict[Pair, tuple[RunConfig, float]]:
    """(effective config, label ratio) of each pair and of SUPERVISED, built as `run` builds a cell on
    `dataset` (an override applies where a config has its key, as in `run`)."""
    wanted = list(dict.fromkeys([*pairs, SUPERVISED]))
    cells = []
    for name, mode in wanted:
        spec = methods.get_method(name)
        cells.append(Cell(dataset, name, mode, spec.fixed_labels if spec.fixed_labels is not None else LABELS, SEED))
    cells = configured(cells, profile, overrides, data_root, nbi)
    return {pair: (cell.cfg, cell.labels) for pair, cell in zip(wanted, cells)}


def split_for(cfg: RunConfig, labels: float) -> SemiSupervisedSplit:
    raw, folder = load_dataset(cfg.data)
    return make_split(raw, folder, cfg.data, labels, SEED)
