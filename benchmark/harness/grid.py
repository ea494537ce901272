"""The grid: which cells a command runs, one (dataset, method, mode, label ratio, seed) each, their effective
configs, and the checks of the whole grid before the first cell starts.

A cell's folder holds, while it runs and after: `config_hash` (what the files there were computed
with), `run.log`, `curves.jsonl`, `tensorboard/`, the training loop's `*_checkpoint.pt`, and at the
end `test_outputs.npz` (what the reports and figures read), `model.pt` when `runtime.save_model` asks
for it, and last of all `result.json`; or `failed.json` when the run stopped with an error."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import methods
from benchmark.harness.config import config_values, set_dotted, validate_config
from benchmark.kit.contract import MODES
from benchmark.kit.data import DATASETS, check_ratio, labeled_subset, load_dataset, load_split_indices
from benchmark.kit.errors import ConfigError, unknown_name
from benchmark.kit.files import stable_hash
from benchmark.kit.records import run_dir
from benchmark.kit.schema import RunConfig

LOG = "run.log"

HASH = "config_hash"

CHECKPOINTS = "*_checkpoint.pt"

# The files saved with a record -> whether reading them must check every byte (small files), or only
# that they are whole zip files (the model, which may weigh hundreds of MB).
OUTPUTS = {"test_outputs.npz": True, "model.pt": False}

MODEL = "model.pt"  # written only with runtime.save_model

# `run --method` words -> the registry group they run: Table II, the ablations, the grid's controls.
GROUPS = {"all": "table2", "ablations": "ablation", "controls": "control"}


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its coordinates (what identifies it, its folder and its lock) and, once
    `configured` has built it, its effective config, validated against the schema (`cfg`)."""

    dataset: str
    method: str
    mode: str
    labels: float
    seed: int
    cfg: RunConfig | None = field(default=None, compare=False, repr=False)

    def folder(self, out: Path) -> Path:
        return run_dir(out, self.dataset, self.method, self.mode, self.labels, self.seed)

    def lock(self, out: Path) -> Path:
        """Beside the folder, not in it: a run that starts over may delete its folder, never its lock."""
        folder = self.folder(out)
        return folder.with_name(folder.name + ".lock")

    def __str__(self) -> str:
        return f"{self.dataset}/{self.method}/{self.mode}/labels{self.labels:g}/seed{self.seed}"


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _numbers(text: str, kind: str, cast) -> list:
    try:
        values = [cast(t) for t in _csv(text)]
    except ValueError:
        raise ConfigError(f"bad {kind} '{text}'; expected comma-separated numbers") from None
    if not values:
        raise ConfigError(f"no {kind} given")
    return values


def _folder_ratio(percent: float) -> float:
    """A ratio its folder name (`labels<NN>`, 6 significant digits) keeps exactly, so that two ratios
    never share one folder."""
    if float(f"{percent:g}") != percent:
        raise ConfigError(f"label ratio {percent!r} has more digits than its folder name labels{percent:g} "
                          "keeps; give at most 6 significant digits")
    return percent


def expand_grid(method: str, labels: str, dataset: str, modes: str | None = None, seeds: str = "0") -> list[Cell]:
    """Methods x modes x label ratios x seeds x datasets, in that nesting order (datasets outermost).

    `method` all | ablations | controls (a group of the registry, `GROUPS`) | comma-separated names.
    Each method runs in the modes it supports (baselines single and multi, MICS fused); a method
    with fixed labels (the fully supervised bound) runs once per dataset and seed. Arguments as `run` takes
    them, comma-separated."""
    if method in GROUPS:
        names = [s.name for s in methods.list_methods(GROUPS[method])]
    else:
        names = list(dict.fromkeys(_csv(method)))
    specs = [methods.get_method(n) for n in names]
    if not specs:
        raise ConfigError("no method to run; see `python -m benchmark list`")
    datasets = list(dict.fromkeys(_csv(dataset)))
    for d in datasets:
        if d not in DATASETS:
            raise unknown_name("dataset", d, DATASETS)
    if not datasets:
        raise ConfigError("no dataset given")
    ratios = [_folder_ratio(check_ratio(r)) for r in dict.fromkeys(_numbers(labels, "label ratios", float))]
    seed_list = list(dict.fromkeys(_numbers(seeds, "seeds", int)))
    for seed in seed_list:
        if not 0 <= seed < 2**32:
            raise ConfigError(f"bad seed {seed}; expected an integer from 0 to {2**32 - 1}")
    wanted = set(_csv(modes)) if modes else None
    for m in sorted((wanted or set()) - set(MODES)):
        raise unknown_name("mode", m, MODES)
    cells = []
    for data_name in datasets:
        for spec in specs:
            cell_modes = [m for m in spec.modes if wanted is None or m in wanted]
            cell_ratios = [spec.fixed_labels] if spec.fixed_labels is not None else ratios
            for mode in cell_modes:
                for ratio in cell_ratios:
                    for seed in seed_list:
                        cells.append(Cell(data_name, spec.name, mode, ratio, seed))
    if not cells:
        supported = "; ".join(f"{s.name}: {','.join(s.modes)}" for s in specs)
        raise ConfigError(f"no cell: none of the methods runs in modes {modes} ({supported})")
    return cells


def configured(cells: list[Cell], profile: str, overrides: dict | None, data_root: str | None,
               nbi: str | None) -> list[Cell]:
    """The cells, each with its effective config.

    An override applies to each cell whose config has its key, so `--set method.T=0.9` reaches the
    methods that have a `T` and leaves the others alone; a key that no cell has is an error (a typo
    must not be silently ignored), and so is a value the schema refuses."""
    values = [config_values(profile, c.method, c.mode, c.dataset, c.labels, c.seed, data_root, nbi) for c in cells]
    for key, value in (overrides or {}).items():
        error: ConfigError | None = None
        applied = False
        for cfg in values:
            try:
                set_dotted(cfg, key, value)
                applied = True
            except ConfigError as err:
                error = err
        if not applied and error is not None:
            raise error
    configs = [validate_config(cfg, "--set" if overrides else "config") for cfg in values]
    return [replace(cell, cfg=cfg) for cell, cfg in zip(cells, configs)]


def check_cells(cells: list[Cell]) -> None:
    """What would stop a cell for reasons of the whole grid, checked before the first one runs (a
    `BenchmarkError` naming the cause): every dataset loads (its cache is built now if missing), and
    every (dataset, seed, ratio) gives each class a labeled, a validation and a test image, and
    unlabeled images to the methods that train on them. Only indices are computed: it takes seconds."""
    seen: set[tuple] = set()
    for cell in cells:
        cfg, spec = cell.cfg, methods.get_method(cell.method)
        key = (stable_hash(cfg.data.model_dump()), cell.seed, cell.labels, spec.uses_unlabeled)
        if key in seen:
            continue
        seen.add(key)
        raw, cache = load_dataset(cfg.data)
        parts = load_split_indices(raw, cache, cfg.data, cell.seed)
        labeled = labeled_subset(raw, parts, cfg.data, cell.labels, cell.seed)
        if spec.uses_unlabeled and len(labeled) == len(parts["train"]):
            raise ConfigError(f"{cell.method} trains on unlabeled images, and {cell.labels:g}% labels of "
                              f"{cell.dataset} (seed {cell.seed}) leave none; use fullysupervised for the "
                              "all-labels bound")
