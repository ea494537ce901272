"""What `perf` observes of a training loop while it runs, without changing it: the clocks of a step, the
outermost module calls one step makes (what `benchmark.harness.bareloop` replays), the host syncs inside
timed steps and the dtypes autocast really computes in.

Wall and CPU time (`time.process_time`, every thread of the process) are both kept: on a shared
machine the wall figures move with the load, the CPU figures much less.
"""
from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

Stamp = tuple[float, float]  # (wall, CPU) seconds


def now(device: torch.device) -> Stamp:
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
