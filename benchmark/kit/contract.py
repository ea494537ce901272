"""What the harness hands a method (`RunContext`) and what a method hands back (`Trained`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from benchmark.kit import distributed

# How a method sees the two modalities, in the order of Table II's blocks. single: WLI only (strong view:
# RandAugment); multi: the strong view is the paired NBI image; fused: both encoders and a fusion (MICS).
MODES = ("single", "multi", "fused")
VIEW_MODES = MODES[:2]  # the modes with a weak and a strong unlabeled view

Batch = dict[str, torch.Tensor]  # "wli", "nbi": normalised (N, 3, H, W) on the run's device


class Predictor(Protocol):
    """An nn.Module that classifies paired batches; the harness only calls these two."""

    def predict(self, batch: Batch) -> torch.Tensor:  # (N, num_classes) logits
        ...

    def embed(self, batch: Batch) -> torch.Tensor:  # (N, D) features, for UMAP
        ...


class CurveLogger(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...


ProgressHook = Callable[[str, int, int], None]  # (loop name, iterations done, total iterations)


@dataclass
class RunContext:
    """Where and how one run happens; nothing here changes what it computes."""

    device: torch.device
    seed: int
    run_dir: Path  # checkpoints of this run
    cache_dir: Path  # caches shared between runs (e.g. MICS pre-training per dataset/seed/profile)
    amp: bool = False
    amp_dtype: torch.dtype | None = None  # autocast's dtype (runtime.amp_dtype); None: its default for the device
    compile: bool = False  # torch.compile each transformer block of a trained model (runtime.compile)
    curves: CurveLogger | None = None
    progress: ProgressHook | None = None  # the harness's per-run progress bar
    health: Any = None  # benchmark.kit.health.PseudoLabelMonitor: what a step's `pseudo_labels` are checked against
    on_loop: Callable[[Any], None] | None = None  # given every TrainingLoop built (`run --dry-run` sizes them)

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.curves is not None:
            self.curves.log(step, values)

    def advance(self, loop: str, done: int, total: int) -> None:
        """Tell the harness how far a training loop has come (it draws the run's progress bar)."""
        if self.progress is not None:
            self.progress(loop, done, total)

    def distribute(self, module: nn.Module, call: str = "forward") -> Callable:
        """What the training step calls instead of `module.<call>(...)`: that very method in a single
        process; under torchrun a DistributedDataParallel wrapper that averages the gradients of
        `module`'s parameters across the processes (see `benchmark.kit.distributed.distribute`).

        A method that trains under torchrun builds its batches from the harness's streams (each
        process gets its share) and calls its model only through this; the TrainingLoop checks that
        the processes' weights agree after the first step and at the end."""
        return distributed.distribute(module, call)


@dataclass
class Trained:
    """A finished run: the model selected on validation, the last iterate, and what it cost."""

    best: nn.Module  # a Predictor
    last: nn.Module  # a Predictor
    val_top1_best: float
    iterations: int
    info: dict[str, Any] = field(default_factory=dict)  # e.g. {"head": "tmc"}
