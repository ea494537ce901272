"""A grid's wall time, estimated from the figures `perf` measured (`benchmark.harness.measure`, `reports/perf.json`).

Per cell: the method's setup, each stage's iterations times that stage's measured step time, the
evaluations (every `eval_every` steps and after the last, on validation; three passes on test) and the
runner's own work. What a method runs beyond one training loop is declared where it is registered
(`methods.registry.Cost`): its stages, which of them cells share through a cache (counted once per
key), and supervised warm-up steps inside its budget (timed at the reference method's step), each after
the budget scaling the runner applies (`benchmark.kit.budget`). Nothing here names a method.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

import methods
from benchmark.harness.grid import Cell
from benchmark.harness.perf_record import PERF_FILE, read_record, step_settings
from benchmark.kit import budget
from benchmark.kit.data import dataset_key, split_ratios, split_seed
from benchmark.kit.data.cache import cache_root, key_of
from benchmark.kit.data.splits import labeled_indices, split_indices
from benchmark.kit.data.synthetic import synthetic_labels
from benchmark.kit.errors import BenchmarkError
from benchmark.kit.schema import DataConfig, RunConfig
from methods.registry import REFERENCE, Sizes

# Images per class of the official archives (Kvasir v1 and v2, the six classes Table II uses): their splits'
# sizes before any folder is at hand, e.g. for the paper grid's cost on a GPU with no dataset yet.
OFFICIAL_PER_CLASS = {"kvasir": 500, "kvasir-v2": 1000}


def _dataset_labels(data_cfg: DataConfig) -> np.ndarray | None:
    """Labels of a dataset without decoding it: from its cache, (synthetic) from its fixed order, or
    (Kvasir without a folder) from the official archive's counts; None when none is available."""
    if data_cfg.name in OFFICIAL_PER_CLASS and not data_cfg.root:
        return np.repeat(np.arange(6, dtype=np.int64), OFFICIAL_PER_CLASS[data_cfg.name])
    try:
        key = dataset_key(data_cfg)
    except BenchmarkError:
        return None
    cached = cache_root() / f"{key['name']}-{key_of(key)}" / "labels.npy"
    if cached.exists():
        return np.load(cached)
    if key["name"] == "synthetic":
        return synthetic_labels(int(key["num_per_class"]))
    return None


@lru_cache(maxsize=None)
def _split_sizes(data_json: str, labels: float, seed: int) -> Sizes | None:
    data_cfg = DataConfig.model_validate_json(data_json)
    y = _dataset_labels(data_cfg)
    if y is None:
        return None
    parts = split_indices(y, split_ratios(data_cfg), split_seed(data_cfg, seed))
    classes = tuple(str(c) for c in range(int(y.max()) + 1))
    n_labeled = len(labeled_indices(parts["train"], y, labels, split_seed(data_cfg, seed, "labeled"), classes))
    return {"train": len(parts["train"]), "labeled": n_labeled, "val": len(parts["val"]), "test": len(parts["test"])}


def split_sizes(cfg: RunConfig, record: dict) -> tuple[Sizes, bool]:
    """(sizes of the cell's split, whether exact); else those of the perf run's own split."""
    sizes = _split_sizes(json.dumps(cfg.data.model_dump(), sort_keys=True, default=str), cfg.labels, cfg.seed)
    return (sizes, True) if sizes is not None else (record["sizes"], False)


def _evaluations(iterations: int, eval_every: int) -> int:
    """TrainingLoop evaluates every `eval_every` steps and after the last."""
    return iterations // eval_every + (1 if iterations % eval_every else 0)


def _figures_for(method: str, mode: str, record: dict) -> dict | None:
    """The measured figures of a method and mode; else of its family in that mode (e.g. an ablation
    preset takes its full method's); else None."""
    measured = record["methods"]
    if f"{method}/{mode}" in measured:
        return measured[f"{method}/{mode}"]
    family = methods.get_method(method).family
    for key, figures in measured.items():
        name, key_mode = key.split("/")
        if key_mode == mode and methods.get_method(name).family == family:
            return figures
    return None


@dataclass
class GridEstimate:
    seconds: float
    cells: int
    per_method: dict[str, float]  # method -> seconds
    unmeasured: list[str]  # method/mode without figures (not counted)
    approximate_sizes: bool  # some split sizes were not known and taken from the perf run's split

    def line(self) -> str:
        text = (f"estimated wall time: {self.seconds:.0f} s ({self.seconds / 60:.1f} min) for {self.cells} cells "
                f"run one after another in one process")
        if self.unmeasured:
            text += f"; not counted, no figures: {', '.join(sorted(set(self.unmeasured)))}"
        if self.approximate_sizes:
            text += "; split sizes of a dataset not cached yet taken from the perf run's"
        return text


def cell_seconds(method: str, cfg: RunConfig, figures: dict, sizes: Sizes, record: dict, shared: set) -> float:
    """Wall seconds of one cell of `method` from its measured `figures`; a shared stage whose key is in
    `shared` costs nothing (another cell computed it), else its key is added."""
    spec = methods.get_method(method)
    cost = spec.cost
    cfg = budget.apply(cfg, spec.stage_iterations(cfg, sizes))  # time constants as the runner scales them
    eval_per_image = 1.0 / figures["eval_img_s"]
    seconds = record["cell_overhead_s"] + figures["setup_s"] + 3 * sizes["test"] * eval_per_image
    last = cost.stages[-1]
    for stage in cost.stages:
        iterations = stage.iterations(cfg, sizes)
        if stage.shared_key is not None:
            key = (stage.loop, stage.shared_key(cfg))
            if not iterations or key in shared:
                continue
            shared.add(key)
        step_s = figures["loops"].get(stage.loop, figures)["ours_step_s"]
        warmup = cost.warmup(cfg) if stage is last else 0
        reference = record["methods"].get(f"{REFERENCE}/single", figures)
        seconds += (iterations - warmup) * step_s + warmup * reference["ours_step_s"]
        if stage.eval_every is not None:
            evaluations = _evaluations(iterations, stage.eval_every(cfg)) + (1 if warmup else 0)
            seconds += evaluations * sizes["val"] * eval_per_image
        if stage.extra is not None:
            seconds += figures.get(stage.extra, 0.0)
    return seconds


def estimate_grid(cells: list[Cell], record: dict) -> GridEstimate:
    """Wall seconds of running `cells` one after the other in one process, from `record` (perf.json):
    every cell's `cell_seconds`, plus once per process start-up and first-use imports (`fixed_s`)."""
    total = record["fixed_s"]
    per_method: dict[str, float] = {}
    unmeasured: list[str] = []
    shared: set = set()
    approximate = False
    for cell in cells:
        cfg, figures = cell.cfg, _figures_for(cell.method, cell.mode, record)
        if figures is None:
            unmeasured.append(f"{cell.method}/{cell.mode}")
            continue
        sizes, exact = split_sizes(cfg, record)
        approximate |= not exact
        seconds = cell_seconds(cell.method, cfg, figures, sizes, record, shared)
        total += seconds
        per_method[cell.method] = per_method.get(cell.method, 0.0) + seconds
    return GridEstimate(total, len(cells) - len(unmeasured), per_method, unmeasured, approximate)


def dry_run_estimate(cells: list[Cell], reports: Path, device: torch.device) -> str:
    """The line `run --dry-run` prints: the estimate for `cells` from the last `perf` of their profile, when
    that `perf` measured on this kind of device with these step settings (a step timed on the CPU at batch 2
    says nothing of a CUDA grid at batch 64)."""
    if not cells:
        return "estimated wall time: 0 s, nothing to run"
    record = read_record(reports)
    profiles = {cell.cfg.profile for cell in cells}
    which = ", ".join(sorted(profiles))
    again = f"(python -m benchmark perf --profile {which} with the grid's device and --set values)"
    if record is None or profiles != {record["profile"]}:
        return (f"estimated wall time: unknown, no measurement of profile {which} in {Path(reports) / PERF_FILE} "
                f"{again}")
    measured_on = torch.device(record["device"]).type
    if measured_on != device.type:
        return (f"estimated wall time: unknown, `perf` measured profile {which} on {measured_on}, this grid runs on "
                f"{device.type} {again}")
    wanted = json.loads(json.dumps(step_settings(cells[0].cfg)))
    if record.get("settings") != wanted:
        differ = sorted(k for k in wanted if (record.get("settings") or {}).get(k) != wanted[k])
        return (f"estimated wall time: unknown, `perf` measured profile {which} with other {', '.join(differ)} "
                f"than this grid's {again}")
    return estimate_grid(cells, record).line() + f" (figures of `perf` at {record['measured_at']})"
