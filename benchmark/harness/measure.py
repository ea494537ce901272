"""What a training step costs: the measurements behind `python -m benchmark perf` (`benchmark.harness.estimate`
turns them into a grid's wall time).

Ours against bare. `measure_method` runs a method's real `train` (its TrainingLoop, its batch assembly
and augmentation from the cached arrays) for a few steps, watching the end of every step through the
`RunContext.progress` hook. During one step a `CallRecorder` notes the outermost module calls the step
makes: which networks, on which inputs, with or without gradients. `BareLoop` replays exactly those
calls on the recorded tensors (pre-built, so no data work), with a cross-entropy loss, backward and an
AdamW step: the same forward and backward passes on the same model and batch shapes, without anything
the harness or the method adds around them. The hook runs one bare step after each timed step of
ours, so the two alternate step by step in one process and machine load slows both alike; their
throughput ratio is the harness overhead figure. Throughput counts image passes: the images that go
through a network in one step (for an SSL method, labeled + weak + strong batch).

Wall and CPU time (`time.process_time`, every thread of the process) are both kept: on a shared
machine the wall figures move with the load, the CPU figures much less.

A method with several training loops (its `Cost` stages, e.g. MICS's pre-training and fine-tuning)
gets the figures of each; the measured run's config comes from its `Cost.shorten`.
"""
from __future__ import annotations

import copy
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

import methods
from benchmark.harness.runner import Cell, cell_configs, run_cell
from benchmark.kit import budget
from benchmark.kit.contract import VIEW_MODES, RunContext
from benchmark.kit.data import load_dataset, make_split
from benchmark.kit.data.types import SemiSupervisedSplit
from benchmark.kit.records import write_json_atomic
from benchmark.kit.runtime import code_version, peak_rss_mb, resolve_amp, seed_everything
from benchmark.kit.training import predict_logits
from methods.common import LabeledBatches, UnlabeledBatches, import_semilearn
from methods.registry import REFERENCE

PERF_FILE = "perf.json"
SKIP = 3  # untimed first steps of a loop: allocation, optimizer state, the first-call costs of libraries
LABELS = 50.0  # label ratio of the measured runs (batch shapes do not depend on it)
SEED = 0
SUPERVISED = (REFERENCE, "single")  # its config is always built: the runner-overhead cell

Pair = tuple[str, str]  # (method, mode)

Stamp = tuple[float, float]  # (wall, CPU) seconds


def _now(device: torch.device) -> Stamp:
    """Wall and CPU clocks, after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


@dataclass
class StepTimes:
    """Wall and CPU seconds of the timed steps of one loop."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, start: Stamp, end: Stamp) -> None:
        self.wall.append(end[0] - start[0])
        self.cpu.append(end[1] - start[1])

    def step_s(self) -> float:
        """The median: a step slowed by another process's burst does not move it."""
        return statistics.median(self.wall)

    def cpu_step_s(self) -> float:
        return statistics.median(self.cpu)


# ------------------------------------------------------------------------------------ bare replay


@dataclass
class ModuleCall:
    """One outermost module call of a training step, with its inputs detached and copied."""

    module: nn.Module
    args: tuple
    kwargs: dict
    grad: bool  # whether autograd recorded it (False under torch.no_grad)

    def images(self) -> int:
        """Image passes: the batch size of each 4-D floating-point input, (N, C, H, W)."""
        return sum(int(a.shape[0]) for a in self.args
                   if isinstance(a, torch.Tensor) and a.dim() == 4 and a.is_floating_point())


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a module's output, however nested (tuples, named tuples, dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


class CallRecorder:
    """While active, records every outermost nn.Module call (one not made from inside another module's
    forward): together they are everything a step runs through its networks, whichever way a method
    calls them (its model, a submodule, a backbone's blocks from its own code)."""

    def __init__(self):
        self.calls: list[ModuleCall] = []
        self._depth = 0
        self._handles: list = []

    def __enter__(self) -> "CallRecorder":
        self._handles = [register_module_forward_pre_hook(self._enter),
                         register_module_forward_hook(self._exit, with_kwargs=True, always_call=True)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _enter(self, module: nn.Module, args: tuple) -> None:
        self._depth += 1

    def _exit(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.calls.append(ModuleCall(module, _detached(args), _detached(kwargs), torch.is_grad_enabled()))


class BareLoop:
    """The recorded calls on their recorded inputs, a cross-entropy loss on every output that carries a
    gradient (the mean square for outputs that are not (N, C) scores), backward and an AdamW step over
    the parameters those calls reach: what a plain PyTorch loop would do with the same networks."""

    def __init__(self, calls: list[ModuleCall], lr: float, amp: bool, device: torch.device):
        self.calls, self.amp, self.device = calls, amp, device
        params = {id(p): p for c in calls if c.grad for p in c.module.parameters() if p.requires_grad}
        if not params:
            raise RuntimeError("the recorded step trained no parameter")
        self.optimizer = torch.optim.AdamW(params.values(), lr=lr)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)
        self._targets: dict[int, torch.Tensor] = {}

    def images(self) -> int:
        return sum(c.images() for c in self.calls)

    def _loss(self, out: torch.Tensor) -> torch.Tensor:
        if out.dim() == 2:
            n = out.shape[0]
            if n not in self._targets:
                self._targets[n] = torch.zeros(n, dtype=torch.long, device=out.device)
            return F.cross_entropy(out.float(), self._targets[n])
        return out.float().square().mean()

    def step(self) -> None:
        losses = []
        for call in self.calls:
            with torch.set_grad_enabled(call.grad), torch.autocast(self.device.type, enabled=self.amp):
                out = call.module(*call.args, **call.kwargs)
            if call.grad:
                losses += [self._loss(t) for t in _tensors(out) if t.requires_grad and t.is_floating_point()]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(torch.stack(losses).sum()).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


# -------------------------------------------------------------------------------- one method


@dataclass
class LoopFigures:
    """One training loop of a method (a `Stage` of its `Cost`: usually `train`)."""

    ours: StepTimes = field(default_factory=StepTimes)
    bare: StepTimes = field(default_factory=StepTimes)
    images: int = 0  # image passes per step
    iterations: int = 0  # of the measured (shortened) run
    bare_loop: BareLoop | None = None
    dtypes: set[str] = field(default_factory=set)  # of its linear layers' outputs in the recorded step

    def summary(self) -> dict:
        ours_s, bare_s = self.ours.step_s(), self.bare.step_s()
        ours_img_s, bare_img_s = self.images / ours_s, self.images / bare_s
        return {"ours_img_s": ours_img_s, "bare_img_s": bare_img_s, "overhead_ratio": ours_img_s / bare_img_s,
                "images_per_step": self.images, "ours_step_s": ours_s, "bare_step_s": bare_s,
                "ours_cpu_step_s": self.ours.cpu_step_s(), "bare_cpu_step_s": self.bare.cpu_step_s(),
                "timed_steps": len(self.ours.wall)}


class Interleaver:
    """`RunContext.progress` hook of a measured run: times each step of ours, records step `skip - 1`'s
    module calls, and after every timed step runs (and times) one bare step.

    The time spent in the hook itself (bare steps, building the replay) is kept apart in `hook_s`, so
    ours' step intervals and the run's setup figure exclude it."""

    def __init__(self, skip: int, lr: float, amp: bool, device: torch.device):
        self.skip, self.lr, self.amp, self.device = skip, lr, amp, device
        self.loops: dict[str, LoopFigures] = {}
        self.syncs = SyncCounter(device)  # on CUDA: host syncs inside ours' timed steps
        self.steps_s = 0.0  # wall time of every step of ours, timed or not
        self.hook_s = 0.0
        self._recorder: CallRecorder | None = None
        self._dtypes: DtypeRecorder | None = None
        self._last: Stamp | None = None

    def __call__(self, loop: str, done: int, total: int) -> None:
        self.syncs.pause(loop)
        entered = _now(self.device)
        figures = self.loops.setdefault(loop, LoopFigures())
        figures.iterations = total
        if done > 0:
            self.steps_s += entered[0] - self._last[0]
            if done > self.skip:
                figures.ours.add(self._last, entered)
        if done == self.skip and self._recorder is not None:
            self._recorder.__exit__(None, None, None)
            self._dtypes.__exit__(None, None, None)
            figures.dtypes = self._dtypes.dtypes
            figures.bare_loop = BareLoop(self._recorder.calls, self.lr, self.amp, self.device)
            figures.images = figures.bare_loop.images()
            self._recorder = None
            for _ in range(2):  # its own first steps: optimizer state, allocations
                figures.bare_loop.step()
        if done > self.skip and figures.bare_loop is not None:
            start = _now(self.device)
            figures.bare_loop.step()
            figures.bare.add(start, _now(self.device))
        if done == self.skip - 1:
            self._recorder = CallRecorder().__enter__()
            self._dtypes = DtypeRecorder().__enter__()
        self._last = _now(self.device)
        self.hook_s += self._last[0] - entered[0]
        if done >= self.skip:
            self.syncs.resume(loop)


class SyncCounter:
    """On CUDA, the host syncs a training step makes (`torch.cuda.set_sync_debug_mode`: each synchronizing
    call warns while it is on): counted only inside ours' timed steps, between two calls of the hook."""

    def __init__(self, device: torch.device):
        self.enabled = device.type == "cuda"
        self.counts: dict[str, int] = {}
        self._caught: list | None = None
        self._context = None

    def resume(self, loop: str) -> None:
        if not self.enabled:
            return
        self.counts.setdefault(loop, 0)
        self._context = warnings.catch_warnings(record=True)
        self._caught = self._context.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def pause(self, loop: str) -> None:
        if self._context is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self.counts[loop] += sum("synchroniz" in str(w.message) for w in self._caught)
        self._context.__exit__(None, None, None)
        self._context = self._caught = None


class DtypeRecorder:
    """The dtypes of every nn.Linear output while active: what autocast really computes in."""

    def __init__(self):
        self.dtypes: set[str] = set()

    def __enter__(self) -> "DtypeRecorder":
        self._handle = register_module_forward_hook(self._record)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _record(self, module: nn.Module, args: tuple, output: Any) -> None:
        if isinstance(module, nn.Linear) and isinstance(output, torch.Tensor):
            self.dtypes.add(str(output.dtype).removeprefix("torch."))


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


def measure_method(name: str, mode: str, cfg: dict, split: SemiSupervisedSplit, device: torch.device,
                   steps: int, workdir: Path) -> MethodFigures:
    """Ours and bare, step by step, for one method and mode (see the module's docstring)."""
    spec = methods.get_method(name)
    n_train = len(split.train_index)

    def measured_config(iterations: int) -> dict:  # time constants scaled to the measured run, as the runner does
        short = spec.cost.shorten(cfg, iterations, n_train)
        return budget.apply(short, spec.stage_iterations(short, split.sizes()))

    skip = skip_steps(spec.cost.warmup(measured_config(SKIP + steps)))
    run_cfg = measured_config(skip + steps)
    amp = resolve_amp(cfg["runtime"]["amp"], device)
    hook = Interleaver(skip, float(cfg["train"]["lr"]), amp, device)
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-{mode}-", dir=workdir))
    ctx = RunContext(device=device, seed=SEED, run_dir=folder, cache_dir=folder / "cache", amp=amp,
                     compile=bool(cfg["runtime"]["compile"]), progress=hook)
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

    batch = int(cfg["train"]["eval_batch_size"])
    start = time.perf_counter()
    predict_logits(trained.best, split.val, device, batch)
    eval_s = time.perf_counter() - start
    extras = {stage.extra: trained.info[stage.loop][stage.extra] for stage in spec.cost.stages
              if stage.extra is not None and stage.extra in trained.info.get(stage.loop, {})}
    setup_s = max(0.0, train_s - hook.steps_s - hook.hook_s - eval_s - sum(extras.values()))
    return MethodFigures(f"{name}/{mode}", hook.loops, setup_s, len(split.val) / eval_s, extras, path)


# -------------------------------------------------------------------------------------- loader


def measure_loader(split: SemiSupervisedSplit, cfg: dict, mode: str, device: torch.device, steps: int) -> dict:
    """Images per second the training loader alone delivers (labeled + weak + strong batch, augmented),
    called back to back as the training loop calls it."""
    batch = int(cfg["train"]["batch_size"])
    unlabeled_batch = batch * int(cfg["train"]["uratio"])
    labeled = LabeledBatches(split.labeled, batch, SEED, device)
    unlabeled = UnlabeledBatches(split.unlabeled, unlabeled_batch, SEED, device, mode)
    labeled(0), unlabeled(0)  # first calls: imports, the RandAugment policy
    start = _now(device)
    for it in range(1, steps + 1):
        labeled(it), unlabeled(it)
    end = _now(device)
    images = batch + 2 * unlabeled_batch
    return {"img_s": steps * images / (end[0] - start[0]), "images_per_step": images,
            "step_s": (end[0] - start[0]) / steps, "cpu_step_s": (end[1] - start[1]) / steps}


# ------------------------------------------------------------------------------- runner overhead


def measure_cell_overhead(supervised: tuple[dict, float], device: torch.device, workdir: Path) -> dict:
    """What a cell costs beyond its method's `train` and the three test passes (best, last, embed): the
    runner's split, files, record and results table (`cell_overhead_s`); and what the first cell of a
    process pays once more (`first_cell_extra_s`: TensorBoard's import, ...). From one tiny cell of the
    reference method (`methods.registry.REFERENCE`), trained bare-handed, then through `run_cell`, each twice."""
    cfg, labels = copy.deepcopy(supervised[0]), supervised[1]
    cfg["train"]["iterations"] = cfg["train"]["eval_every"] = 2
    split = split_for(cfg, labels)
    spec = methods.get_method(REFERENCE)
    amp = resolve_amp(cfg["runtime"]["amp"], device)
    train_s = []
    for _ in range(2):
        ctx = RunContext(device=device, seed=SEED, run_dir=Path(tempfile.mkdtemp(dir=workdir)),
                         cache_dir=workdir / "cache", amp=amp)
        start = time.perf_counter()
        trained = spec.train(split, cfg, ctx)
        train_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    predict_logits(trained.best, split.test, device, int(cfg["train"]["eval_batch_size"]))
    test_pass_s = time.perf_counter() - start
    cell_s = []
    for attempt in range(2):
        cell = Cell(split.dataset, REFERENCE, "single", labels, SEED)
        start = time.perf_counter()
        outcome = run_cell(cell, cfg, workdir / f"cells{attempt}", str(device))
        cell_s.append(time.perf_counter() - start)
        if outcome.status != "finished":
            raise RuntimeError(f"the runner-overhead cell did not finish: {outcome.status} {outcome.message}")
    return {"cell_overhead_s": max(0.0, cell_s[1] - train_s[1] - 3 * test_pass_s),
            "first_cell_extra_s": max(0.0, cell_s[0] - cell_s[1])}


# ------------------------------------------------------------------------------------ the record


def process_age_s() -> float:
    """Seconds since this process started: the start-up (interpreter, imports) a grid pays once."""
    import psutil

    return time.time() - psutil.Process(os.getpid()).create_time()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def read_record(reports: Path) -> dict | None:
    path = Path(reports) / PERF_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_record(record: dict, reports: Path) -> Path:
    path = Path(reports) / PERF_FILE
    write_json_atomic(path, record)
    return path


def consumed_img_s(method_figures: dict[str, dict], mode: str, images_per_step: int) -> float | None:
    """The fastest rate at which training in `mode` takes the loader's images: the loader's images per
    step over the quickest bare step (training with free data) among the methods that draw unlabeled
    batches in that mode (the supervised bounds draw labeled ones only)."""
    rates = [images_per_step / f["bare_step_s"] for key, f in method_figures.items()
             if key.split("/")[1] == mode and methods.get_method(key.split("/")[0]).unlabeled]
    return max(rates) if rates else None


def stage_figures(name: str, figures: dict) -> dict:
    """The stage costs of a method with several training loops (its `Cost` stages): each loop's step
    (wall, CPU, ours against bare) and each stage's once-per-run extra."""
    out = {}
    for stage in methods.get_method(name).cost.stages:
        loop = figures["loops"].get(stage.loop)
        if loop is not None:
            out[stage.loop] = {k: loop[k] for k in ("ours_step_s", "ours_cpu_step_s", "ours_img_s", "bare_img_s",
                                                    "overhead_ratio")}
        if stage.extra is not None and stage.extra in figures:
            out.setdefault(stage.loop, {})[stage.extra] = figures[stage.extra]
    return out


def step_settings(cfg: dict) -> dict:
    """What a measured step time depends on beyond the method: the input size, the backbone and the batch."""
    return {"image_size": cfg["data"]["image_size"], "arch": cfg["model"]["arch"], "kwargs": cfg["model"]["kwargs"],
            "batch_size": cfg["train"]["batch_size"], "uratio": cfg["train"]["uratio"]}


def measure(profile: str, pairs: list[Pair], configs: dict[Pair, tuple[dict, float]], device: torch.device,
            steps: int, log=print) -> dict:
    """Every figure of `perf` but the grid estimate, for the (method, mode) `pairs` of `profile`, each with
    its (config, label ratio) from `measured_configs`; `log` gets one line per finished measurement."""
    fixed_s = process_age_s()
    start = time.perf_counter()
    import_semilearn()  # every grid pays this import once, in its first USB cell
    fixed_s += time.perf_counter() - start
    record: dict = {"profile": profile, "device": str(device), "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "torch": torch.__version__, "code_version": code_version(),
                    "dataset": configs[SUPERVISED][0]["data"]["name"], "steps": steps, "load_avg_before": load_average(),
                    "fixed_s": fixed_s, "settings": step_settings(configs[SUPERVISED][0]), "methods": {}}
    splits: dict[float, SemiSupervisedSplit] = {}
    train_cfgs: dict[str, dict] = {}
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
                     nbi: str | None = None, overrides: dict | None = None) -> dict[Pair, tuple[dict, float]]:
    """(effective config, label ratio) of each pair and of SUPERVISED, built as `run` builds a cell on
    `dataset` (an override applies where a config has its key, as in `run`)."""
    wanted = list(dict.fromkeys([*pairs, SUPERVISED]))
    cells = []
    for name, mode in wanted:
        spec = methods.get_method(name)
        cells.append(Cell(dataset, name, mode, spec.fixed_labels if spec.fixed_labels is not None else LABELS, SEED))
    configs = cell_configs(cells, profile, overrides, data_root, nbi)
    for cfg in configs:
        cfg.pop("executor", None)  # where a cell runs is not part of what it computes
    return {pair: (cfg, cell.labels) for pair, cell, cfg in zip(wanted, cells, configs)}


def split_for(cfg: dict, labels: float) -> SemiSupervisedSplit:
    raw, folder = load_dataset(cfg["data"])
    return make_split(raw, folder, cfg["data"], labels, SEED)


# ----------------------------------------------------------------------------------- printing


def method_line(key: str, f: dict) -> str:
    ms = {k: 1000 * f[k] for k in ("ours_step_s", "ours_cpu_step_s", "bare_step_s", "bare_cpu_step_s")}
    path = f["device_path"]
    device = f"  {'amp' if path['amp'] else 'fp32'} {'/'.join(path['linear_dtypes'])}"
    if "peak_memory_mb" in path:
        syncs = max(path["host_syncs_per_step"].values(), default=0)
        device += f", peak {path['peak_memory_mb']:.0f} MB, {syncs:g} host syncs/step"
    return (f"{key:<22} ours {f['ours_img_s']:7.0f} img/s  bare {f['bare_img_s']:7.0f} img/s  "
            f"ratio {f['overhead_ratio']:5.2f}   step {ms['ours_step_s']:6.1f} ms (cpu {ms['ours_cpu_step_s']:6.1f}) "
            f"vs {ms['bare_step_s']:6.1f} ms (cpu {ms['bare_cpu_step_s']:6.1f})  {f['images_per_step']} img/step{device}")


def loader_line(mode: str, loader: dict) -> str:
    consumed = loader["consumed_img_s"]
    margin = f"{loader['img_s'] / consumed:.1f}x" if consumed else "n/a"
    return (f"loader {mode:<6} {loader['img_s']:7.0f} img/s delivered ({loader['images_per_step']} img/step, "
            f"{1000 * loader['step_s']:.1f} ms, cpu {1000 * loader['cpu_step_s']:.1f} ms); training consumes at most "
            f"{consumed or 0:.0f} img/s: {margin}")


def stages_line(key: str, stages: dict) -> str:
    parts = []
    for loop, f in stages.items():
        if "ours_step_s" in f:
            parts.append(f"{loop} step {1000 * f['ours_step_s']:.1f} ms (cpu {1000 * f['ours_cpu_step_s']:.1f}, "
                         f"ratio {f['overhead_ratio']:.2f})")
        parts += [f"{name} {value:.2f} s" for name, value in f.items() if name.endswith("_s") and "step" not in name]
    return f"{key} stages: " + ", ".join(parts)
