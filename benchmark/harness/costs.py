"""What a grid will cost, known before its first cell: measured cell costs, scaled to this machine by a short
calibration, scheduled on the grid's workers.

Where the costs come from. Every finished grid writes `<reports>/cell_costs.json` from its records: per
(method, mode, label ratio) the cell's own wall seconds, and per shared stage (a stage cells share through a
cache, as the registry declares, e.g. MICS's pre-training) the seconds of the run that computed it. With them,
the wall seconds of one calibration step measured on the same machine at that time. The package ships the same
file for its CPU profiles (`configs/reference/cell_costs_<profile>.json`, from the README's command on
the machine docs/perf.md describes), so a fresh clone knows its cost; a grid run here refreshes it.

The estimate. Each pending cell costs its measured seconds (a ratio not measured: the nearest measured ratio of
the same method and mode; iterations and batch other than measured: in proportion), each shared stage once per
cache key, all times the calibration ratio (this machine's calibration step now over the measured one). The
cells are then dealt to the workers in grid order, as the local pool deals them (a cell that waits for its
shared stage's leader starts after it), and the last worker's end is the estimate, plus the once-per-grid cost
(start-up, reports).
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import torch

import methods
from benchmark.harness.grid import Cell
from benchmark.kit.files import atomic_write
from benchmark.kit.models import create_backbone
from benchmark.kit.runtime import configure_threads
from benchmark.kit.schema import RunConfig

COSTS_FILE = "cell_costs.json"
CALIBRATION_STEPS = 7  # at least, per round; the first two steps are not counted (allocation, first calls)
CALIBRATION_S = 0.4  # at least, per round
CALIBRATION_ROUNDS = 5


def cost_settings(cfg: RunConfig) -> dict:
    """What a cell's cost depends on beyond its method, mode and ratio, other than the budget (scaled)."""
    return {"profile": cfg.profile, "dataset": cfg.data.name, "image_size": cfg.data.image_size,
            "synthetic": cfg.data.synthetic.model_dump() if cfg.data.name == "synthetic" else None,
            "model": {"arch": cfg.model.arch, "kwargs": cfg.model.kwargs}, "threads": cfg.runtime.threads,
            "batch_size": cfg.train.batch_size}  # a step's cost per image depends on it, as the calibration's


def _budget(cfg: RunConfig) -> float:
    """Image passes of a cell's training, the part of its cost that `train` overrides change."""
    train = cfg.train
    return float(train.iterations * train.batch_size * (1 + train.uratio))


def _key(method: str, mode: str, labels: float) -> str:
    return f"{method}/{mode}/{labels:g}"


def _shared_loops(method: str) -> list:
    return [s for s in methods.get_method(method).cost.stages if s.shared_key is not None]


@torch.no_grad()
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def calibration_s(cfg: RunConfig, device: torch.device) -> float:
    """Wall seconds of one training step of the profile's backbone (random weights, random images,
    `train.batch_size` of them at most 32, forward, backward and AdamW) on `device`, with a cell's
    `runtime.threads`: how fast a cell runs on this machine now. The least of CALIBRATION_ROUNDS round
    medians, each round at least CALIBRATION_S: one median over a single second moved by up to a quarter
    between two measurements on the same idle machine (a burst of another process, a descheduled
    thread), and such a burst slows one round, not all (docs/perf.md)."""
    threads = torch.get_num_threads()
    configure_threads(cfg.runtime.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            size = cfg.data.image_size
            model = create_backbone(cfg.model.model_copy(update={"init": "random", "weights": None}), num_classes=6).to(device)
            optimizer = torch.optim.AdamW(model.parameters())
            x = torch.randn(min(32, cfg.train.batch_size), 3, size, size, device=device)
            y = torch.zeros(len(x), dtype=torch.long, device=device)
            medians: list[float] = []
            for _ in range(CALIBRATION_ROUNDS):
                times: list[float] = []
                began = time.perf_counter()
                while len(times) < CALIBRATION_STEPS or time.perf_counter() - began < CALIBRATION_S:
                    _sync(device)
                    start = time.perf_counter()
                    with torch.enable_grad():
                        loss = torch.nn.functional.cross_entropy(model(x), y)
                        optimizer.zero_grad()
                        loss.backward()
                    optimizer.step()
                    _sync(device)
                    times.append(time.perf_counter() - start)
                medians.append(statistics.median(times[2:]))
        return min(medians)
    finally:
        torch.set_num_threads(threads)


def costs_from_records(records: list[dict]) -> dict:
    """{"cells": {key: own seconds}, "shared": {"method/loop": seconds}, "budget": image passes}, means over
    seeds. A cell's own seconds leave out the shared stages it computed; those are kept apart."""
    own: dict[str, list[float]] = {}
    shared: dict[str, list[float]] = {}
    for rec in records:
        stages = rec.get("stage_s") or {}
        loops = [s.loop for s in _shared_loops(rec["method"])] if _known(rec["method"]) else []
        for loop in loops:
            if loop in stages:
                shared.setdefault(f"{rec['method']}/{loop}", []).append(stages[loop])
        seconds = rec["wall_s"] - sum(stages.get(loop, 0.0) for loop in loops)
        own.setdefault(_key(rec["method"], rec["mode"], rec["labels"]), []).append(seconds)
    mean = lambda values: round(statistics.fmean(values), 2)  # noqa: E731
    return {"cells": {k: mean(v) for k, v in own.items()}, "shared": {k: mean(v) for k, v in shared.items()}}


def _known(method: str) -> bool:
    try:
        methods.get_method(method)
        return True
    except Exception:  # noqa: BLE001 - a record of a method no longer registered
        return False


def _in_steps(costs: dict) -> dict:
    """`costs` with every duration in calibration steps (seconds / calibration_s): comparable across machines
    and loads."""
    step = costs["calibration_s"]
    return {**costs, "fixed_s": costs["fixed_s"] / step, "cells": {k: v / step for k, v in costs["cells"].items()},
            "shared": {k: v / step for k, v in costs["shared"].items()}}


def _read(path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_costs(records: list[dict], configs: list[RunConfig], reports: Path, elapsed_s: float, workers: int,
                device: torch.device) -> Path | None:
    """Refresh `<reports>/cell_costs.json` with the records of cells a grid has just run (their settings all
    alike), measured against this machine's calibration step now; what the file held for other cells of the
    same settings stays. The once-per-grid cost is what the wall time leaves after the cells' schedule.
    None when nothing ran or the grid mixes settings."""
    settings = {json.dumps(cost_settings(cfg), sort_keys=True) for cfg in configs}
    budgets = {_budget(cfg) for cfg in configs}
    if not records or len(settings) != 1 or len(budgets) != 1:
        return None
    step = calibration_s(configs[0], device)
    measured = costs_from_records(records)
    fixed = max(0.0, elapsed_s - schedule([r["wall_s"] for r in records], workers, {}))
    path = Path(reports) / COSTS_FILE
    old = _read(path)
    cells, shared = {}, {}
    if old is not None and old.get("settings") == json.loads(settings.copy().pop()) and old.get("budget") == budgets.copy().pop():
        kept = _in_steps(old)
        cells = {k: v * step for k, v in kept["cells"].items()}
        shared = {k: v * step for k, v in kept["shared"].items()}
    costs = {"settings": json.loads(settings.pop()), "budget": budgets.pop(), "calibration_s": step,
             "fixed_s": round(fixed, 2), "device": device.type, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
             "cells": {**cells, **measured["cells"]}, "shared": {**shared, **measured["shared"]}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(costs, indent=1, sort_keys=True))
    return path


def shipped_costs(profile: str):
    return files("configs") / "reference" / f"cell_costs_{profile}.json"


def load_costs(reports: Path, cfg: RunConfig) -> tuple[dict, str] | None:
    """(costs in calibration steps, where from) for cells of `cfg`'s settings: the shipped ones, overlaid
    with this machine's own from its last grids where both have the same budget; None when neither fits."""
    wanted = json.loads(json.dumps(cost_settings(cfg)))
    found = []
    for name, source in (("the shipped costs", shipped_costs(cfg.profile)),
                         ("this machine's costs", Path(reports) / COSTS_FILE)):
        costs = _read(source)
        if costs is not None and costs.get("settings") == wanted:
            found.append((_in_steps(costs), f"{name} ({source})"))
    if len(found) == 2 and found[0][0]["budget"] == found[1][0]["budget"]:
        (shipped, a), (own, b) = found
        return {**own, "cells": {**shipped["cells"], **own["cells"]},
                "shared": {**shipped["shared"], **own["shared"]}}, f"{a} and {b}"
    return found[-1] if found else None


@dataclass
class Estimate:
    seconds: float
    cells: int
    workers: int
    source: str
    approximate: list[str]  # method/mode whose cost is borrowed from another ratio or scaled
    durations: list[float]  # per cell, in the order given

    def line(self) -> str:
        text = (f"estimated wall time: {self.seconds:.0f} s ({self.seconds / 60:.1f} min) for {self.cells} cells on "
                f"{self.workers} worker{'s' * (self.workers != 1)}, from {self.source}, scaled to this machine")
        if self.approximate:
            text += f"; approximate for {', '.join(sorted(set(self.approximate)))}"
        return text


def _cell_seconds(cell: Cell, costs: dict) -> tuple[float | None, bool]:
    """(own seconds, whether approximate) of one cell from `costs`; None when its method and mode were never
    measured."""
    measured = {}
    for key, seconds in costs["cells"].items():
        method, mode, labels = key.split("/")
        if (method, mode) == (cell.method, cell.mode):
            measured[float(labels)] = seconds
    if not measured:
        return None, True
    nearest = min(measured, key=lambda r: (abs(r - cell.labels), r))
    scale = _budget(cell.cfg) / costs["budget"]
    return measured[nearest] * scale, nearest != cell.labels or scale != 1.0


def schedule(durations: list[float], workers: int, leaders: dict[int, int]) -> float:
    """When the last of `durations` ends if `workers` take them as the local pool does: a free worker takes
    the first waiting cell whose leader (`leaders[i]`, the cell computing its shared stage) has ended."""
    free = [0.0] * max(1, workers)  # when each worker is next free
    ends: dict[int, float] = {}
    waiting = list(range(len(durations)))
    while waiting:
        now = min(free)
        ready = [i for i in waiting if i not in leaders or ends.get(leaders[i], float("inf")) <= now]
        if not ready:  # every waiting cell waits for a leader still running: idle until the next one ends
            free[free.index(now)] = min(e for e in ends.values() if e > now)
            continue
        i = ready[0]
        waiting.remove(i)
        ends[i] = now + durations[i]
        free[free.index(now)] = ends[i]
    return max(ends.values(), default=0.0)


def estimate(cells: list[Cell], reports: Path, workers: int, device: torch.device) -> Estimate | None:
    """The wall time of running `cells` on `workers`, or None without measured costs for their settings."""
    if not cells:
        return Estimate(0.0, 0, workers, "nothing to run", [], [])
    first_cfg = cells[0].cfg
    found = load_costs(reports, first_cfg)
    if found is None or any(cost_settings(cell.cfg) != cost_settings(first_cfg) for cell in cells):
        return None
    costs, source = found
    scale = calibration_s(first_cfg, device)  # costs are in calibration steps
    durations, approximate, unmeasured = [], [], []
    first: dict[tuple, int] = {}
    leaders: dict[int, int] = {}
    for i, cell in enumerate(cells):
        seconds, approx = _cell_seconds(cell, costs)
        if seconds is None:
            unmeasured.append(f"{cell.method}/{cell.mode}")
            seconds = statistics.median(costs["cells"].values())
        if approx:
            approximate.append(f"{cell.method}/{cell.mode}")
        for stage in _shared_loops(cell.method):
            key = (stage.loop, stage.shared_key(cell.cfg))
            if key in first:
                leaders.setdefault(i, first[key])
            else:
                first[key] = i
                seconds += costs["shared"].get(f"{cell.method}/{stage.loop}", 0.0)
        durations.append(seconds * scale)
    total = schedule(durations, min(workers, len(cells)), leaders) + costs["fixed_s"] * scale
    return Estimate(total, len(cells), min(workers, len(cells)), source, approximate + unmeasured, durations)
