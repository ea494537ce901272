"""Ours against bare, step by step: the `RunContext.progress` hook of a measured run and the bare loop it
runs beside ours.

During one step a `CallRecorder` notes the outermost module calls the step makes: which networks, on
which inputs, with or without gradients. `BareLoop` replays exactly those calls on the recorded tensors
(pre-built, so no data work), with a cross-entropy loss, backward and an AdamW step: the same forward and
backward passes on the same model and batch shapes, without anything the harness or the method adds
around them. The hook runs one bare step after each timed step of ours, so the two alternate step by
step in one process and machine load slows both alike; their throughput ratio is the harness overhead
figure. Throughput counts image passes: the images that go through a network in one step (for an SSL
method, labeled + weak + strong batch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from benchmark.harness.timing import CallRecorder, DtypeRecorder, ModuleCall, Stamp, StepTimes, SyncCounter, now


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


class BareLoop:
    """The recorded calls on their recorded inputs, a cross-entropy loss on every (N, C) output that carries a
    gradient, backward and an AdamW step over the parameters those calls reach: what a plain PyTorch loop would
    do with the same networks. Another output with a gradient (a scalar loss a model computes itself, the
    features or tokens one call of a method's piecewise pass hands the next) gets the gradient of its mean, given
    rather than computed: a plain loop computes no loss on them, so neither does the replay."""

    def __init__(self, calls: list[ModuleCall], lr: float, amp: bool, device: torch.device):
        self.calls, self.amp, self.device = calls, amp, device
        params = {id(p): p for c in calls if c.grad for p in c.module.parameters() if p.requires_grad}
        if not params:
            raise RuntimeError("the recorded step trained no parameter")
        self.optimizer = torch.optim.AdamW(params.values(), lr=lr)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)
        self._targets: dict[int, torch.Tensor] = {}
        self._mean_grads: dict[tuple, torch.Tensor] = {}

    def images(self) -> int:
        return sum(c.images() for c in self.calls)

    def _loss(self, scores: torch.Tensor) -> torch.Tensor:
        n = scores.shape[0]
        if n not in self._targets:
            self._targets[n] = torch.zeros(n, dtype=torch.long, device=scores.device)
        return F.cross_entropy(scores.float(), self._targets[n])

    def _mean_grad(self, out: torch.Tensor) -> torch.Tensor:
        """d mean(out) / d out, made once per shape."""
        key = (out.shape, out.dtype, out.device)
        if key not in self._mean_grads:
            self._mean_grads[key] = torch.full_like(out, 1.0 / out.numel(), memory_format=torch.contiguous_format)
        return self._mean_grads[key]

    def step(self) -> None:
        losses, others = [], []
        for call in self.calls:
            with torch.set_grad_enabled(call.grad), torch.autocast(self.device.type, enabled=self.amp):
                out = call.module(*call.args, **call.kwargs)
            if call.grad:
                for t in _tensors(out):
                    if t.requires_grad and t.is_floating_point():
                        (losses if t.dim() == 2 else others).append(t)
        self.optimizer.zero_grad(set_to_none=True)
        roots = [self.scaler.scale(torch.stack([self._loss(t) for t in losses]).sum())] if losses else []
        grads = [None] * len(roots) + [self.scaler.scale(self._mean_grad(t)) for t in others]
        torch.autograd.backward(roots + others, grads)
        self.scaler.step(self.optimizer)
        self.scaler.update()


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
        entered = now(self.device)
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
            start = now(self.device)
            figures.bare_loop.step()
            figures.bare.add(start, now(self.device))
        if done == self.skip - 1:
            self._recorder = CallRecorder().__enter__()
            self._dtypes = DtypeRecorder().__enter__()
        self._last = now(self.device)
        self.hook_s += self._last[0] - entered[0]
        if done >= self.skip:
            self.syncs.resume(loop)
