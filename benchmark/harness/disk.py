"""What a grid writes to disk, for `run --dry-run`: checked before the grid starts, as its time is.

Sizes come from the models themselves: each distinct method setup is built on the `meta` device (shapes,
no memory, no arithmetic) by its own `train`, which hands every `TrainingLoop` it builds to the harness
(`RunContext.on_loop`) and is stopped before its first step. A loop's checkpoint holds its weights, the
evaluated weights' EMA copy, the best validation copy and the optimizer's state (AdamW: two moments per
trained weight); a cell keeps `test_outputs.npz` (the evaluated model's test features and logits) and,
with `runtime.save_model`, `model.pt`. A loop a method builds only after another loop has trained (MICS's
fine-tuning, after its pre-training) is not reached: what it adds is named as not sized."""
from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

import methods
from benchmark.harness.grid import Cell
from benchmark.kit import budget
from benchmark.kit.contract import RunContext
from benchmark.kit.data import load_dataset, make_split
from benchmark.kit.health import PseudoLabelMonitor
from benchmark.kit.models import input_normalisation


class _Stop(Exception):
    """Raised by the probe's progress hook when a loop is about to take its first step."""


@dataclass(frozen=True)
class LoopSize:
    name: str
    checkpoint: int  # bytes of its checkpoint file, about
    evaluated: int  # bytes of its evaluated model's weights (model.pt when it trains the evaluated model)
    features: int  # width of the evaluated model's `embed`


def _bytes(state: dict) -> int:
    return sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))


def _loop_size(loop, image_size: int) -> LoopSize:
    model, evaluated = loop.model.state_dict(), loop.eval_model.state_dict()
    moments = 2 if loop.cfg.optimizer == "adamw" else 1
    trained = sum(p.numel() * p.element_size() for group in loop.optimizer.param_groups for p in group["params"])
    checkpoint = (_bytes(model) + moments * trained + (_bytes(evaluated) if loop.ema is not None else 0)
                  + (_bytes(evaluated) if loop.val is not None else 0))
    features = 0
    if hasattr(loop.eval_model, "embed"):
        x = torch.empty(1, 3, image_size, image_size, device="meta")
        with torch.no_grad():
            features = int(loop.eval_model.embed({"wli": x, "nbi": x}).shape[-1])
    return LoopSize(loop.name, checkpoint, _bytes(evaluated), features)


def probe_loops(cell: Cell) -> list[LoopSize]:
    """The training loops a cell builds before its first step, built on the meta device."""
    spec, cfg = methods.get_method(cell.method), cell.cfg
    raw, cache = load_dataset(cfg.data)
    split = make_split(raw, cache, cfg.data, cell.labels, cell.seed)
    cfg = budget.apply(cfg, spec.stage_iterations(cfg, split.sizes()))
    cfg.model = cfg.model.model_copy(update=input_normalisation(cfg.model))
    cfg.train.probe_head = False  # a head's starting values need arithmetic, and change no size
    health = PseudoLabelMonitor(raw.labels[split.unlabeled.index])  # as the runner's: the controls read it
    loops: list = []

    def stop(loop: str, done: int, total: int) -> None:
        raise _Stop

    with tempfile.TemporaryDirectory() as tmp, torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loading weights into meta tensors warns that it copies nothing
        ctx = RunContext(device=torch.device("meta"), seed=cell.seed, run_dir=Path(tmp), cache_dir=Path(tmp),
                         progress=stop, on_loop=loops.append, health=health)
        try:
            spec.train(split, cfg, ctx)
        except _Stop:
            pass
        return [_loop_size(loop, cfg.data.image_size) for loop in loops]


@dataclass
class GridDisk:
    cells: int = 0
    outputs: int = 0  # test_outputs.npz of every cell
    models: int = 0  # model.pt of every cell (runtime.save_model)
    save_model: bool = False
    checkpoint: int = 0  # the largest cell's checkpoints, while it runs
    largest: str = ""
    caches: dict[str, int] = field(default_factory=dict)  # dataset cache folder -> bytes
    not_sized: list[str] = field(default_factory=list)

    def lines(self, out: Path) -> list[str]:
        models = (f"model.pt {_size(self.models)}" if self.save_model
                  else "model.pt not written: runtime.save_model=false")
        lines = [f"disk, kept in {out}: {_size(self.outputs + self.models)} for {self.cells} cells "
                 f"(test outputs {_size(self.outputs)}; {models}); curves and logs besides "
                 "(about 100 bytes per value logged, every 10 steps)",
                 f"disk, while a cell runs: up to {_size(self.checkpoint)} of checkpoints ({self.largest}; "
                 "deleted once its record is written)"]
        for folder, size in self.caches.items():
            lines.append(f"disk, dataset cache: {_size(size)} in {folder}")
        if self.not_sized:
            lines.append("disk, not sized: the training loops that start after another one has trained, in "
                         + ", ".join(sorted(set(self.not_sized))))
        return lines


def grid_disk(cells: list[Cell]) -> GridDisk:
    """The disk `cells` take (their datasets are loaded: `check_cells` has run)."""
    disk = GridDisk(cells=len(cells))
    probed: dict[str, list[LoopSize]] = {}
    for cell in cells:
        spec, cfg = methods.get_method(cell.method), cell.cfg
        setup = json.dumps({"method": cell.method, "mode": cell.mode, "model": cfg.model.model_dump(),
                            "m": cfg.method.model_dump(), "data": cfg.data.model_dump(),
                            "train": cfg.train.model_dump()}, sort_keys=True, default=str)
        if setup not in probed:
            probed[setup] = probe_loops(cell)
        loops = probed[setup]
        by_name = {loop.name: loop for loop in loops}
        last = by_name.get(spec.cost.stages[-1].loop)
        if last is None:
            disk.not_sized.append(f"{cell.method}/{cell.mode} (reached: {', '.join(by_name) or 'none'})")
        raw, folder = load_dataset(cfg.data)
        disk.caches[str(folder)] = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        n_test = round(len(raw) * cfg.data.split[2] / sum(cfg.data.split))
        if last is not None:
            disk.outputs += n_test * (last.features + len(raw.classes)) * 4 + n_test * 16
            disk.models += last.evaluated if cfg.runtime.save_model else 0
        checkpoint = sum(loop.checkpoint for loop in loops)
        if checkpoint > disk.checkpoint:
            disk.checkpoint, disk.largest = checkpoint, f"{cell.method}/{cell.mode}"
        disk.save_model |= cfg.runtime.save_model
    return disk


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
