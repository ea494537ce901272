"""Batches for training and evaluation, straight from the cached uint8 arrays.

Every random choice of a stream is a pure function of (seed, step), so a run resumed from a
checkpoint at step k draws exactly the batches an uninterrupted run would have drawn.
Augmentation is vectorised over the batch on the training device (no per-image Python loop).

Under torchrun (`benchmark.kit.distributed`) each process gets rows `rank::world` of every global batch:
the indices and the augmentations' random draws are those of the whole global batch, so the samples
the processes see together are exactly a single-process run's batch."""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch

from benchmark.kit.data.types import PairedArrays
from benchmark.kit.distributed import check_batch_size, shard_rows, world_size

# The suite's own statistics, ImageNet's: its label-free weights are trained with them
# (benchmark/harness/init_weights.py), and a model that starts from no weights gets them.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_statistics: list[tuple[float, ...]] = [MEAN, STD]  # what images are normalised with now: `normalised_with`


@contextmanager
def normalised_with(mean: Sequence[float], std: Sequence[float]) -> Iterator[None]:
    """For the `with` block, images become inputs normalised with `mean` and `std`: a run's, those of the
    weights its model starts from (`benchmark.kit.models.input_normalisation`). The runner sets them around
    a cell, so every batch helper and method sees them without passing them along."""
    before = list(_statistics)
    _statistics[:] = [tuple(float(v) for v in mean), tuple(float(v) for v in std)]
    try:
        yield
    finally:
        _statistics[:] = before


def normalisation(device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The current (mean, std) as (1, 3, 1, 1) tensors on `device` (shared: not to be changed in place)."""
    return _statistics_on(str(torch.device(device)), *_statistics)


@functools.lru_cache(maxsize=16)
def _statistics_on(device: str, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Made once per device and statistics, not at every batch."""
    return tuple(torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (mean, std))


def to_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W) on `device`.

    The uint8 images cross to the device (4x fewer bytes than floats) and become channels-first
    there, before the float work."""
    return _normalise(_to_device(images, device))


def _to_device(images: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """The images as a tensor on `device`; on CUDA copied from pinned memory without blocking, as a
    DataLoader with pin_memory=True hands batches over."""
    x = torch.as_tensor(images)
    if torch.device(device).type == "cuda":
        x = x.pin_memory()
    return x.to(device, non_blocking=True)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) on its device -> normalised float (N, 3, H, W), contiguous."""
    x = x.permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    mean, std = normalisation(x.device)
    return x.sub_(mean).div_(std)


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, salt)."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, step, salt]).generate_state(1)[0]))
    return g


def _reflect(k: torch.Tensor, size: int) -> torch.Tensor:
    """Where coordinate `k` of a reflect-padded axis reads from (the edge pixel is not repeated)."""
    return torch.where(k < 0, -k, torch.where(k >= size, 2 * (size - 1) - k, k))


def _crop_flip_index(n: int, h: int, w: int, generator: torch.Generator, pad_fraction: float) -> torch.Tensor:
    """(n, h * w) flat source pixel of every output pixel of USB's weak view: random horizontal flip
    and reflect-pad-and-crop, for this process's share of a global batch of n * world images.

    Padding by p and cropping at (oy, ox) reads row reflect(oy + r - p); the flip reads column
    w - 1 - c of the crop. So one gather from the unpadded images makes the view, with no padded copy
    and no flipped copy. The offsets and flips are drawn for the global batch and the share's rows
    kept, so each image gets the augmentation it gets in a single-process run."""
    total = n * world_size()
    pad = max(1, int(round(h * pad_fraction)))
    oy = shard_rows(torch.randint(0, 2 * pad + 1, (total,), generator=generator))
    ox = shard_rows(torch.randint(0, 2 * pad + 1, (total,), generator=generator))
    flip = shard_rows(torch.rand(total, generator=generator)) < 0.5
    rows = _reflect(oy[:, None] + torch.arange(h) - pad, h)  # (n, h)
    cols = torch.where(flip[:, None], torch.arange(w - 1, -1, -1), torch.arange(w))  # (n, w)
    cols = _reflect(ox[:, None] + cols - pad, w)
    return (rows[:, :, None] * w + cols[:, None, :]).reshape(n, h * w)


def weak_augment(x: torch.Tensor, generator: torch.Generator, pad_fraction: float = 0.125) -> torch.Tensor:
    """USB's weak view, batched: random horizontal flip and reflect-pad-and-crop.

    x: (N, C, H, W), this process's share of a global batch of N * world images (all of it in a
    single process) -> (N, C, H, W) contiguous, of x's dtype."""
    n, c, h, w = x.shape
    index = _crop_flip_index(n, h, w, generator, pad_fraction).to(x.device)
    return x.reshape(n, c, h * w).gather(2, index[:, None, :].expand(n, c, h * w)).view(n, c, h, w)


class BatchStream:
    """Endless shuffled mini-batches of indices into one part of a split, epoch after epoch.

    `batch_size` is the global batch: under torchrun each process draws it and keeps its share."""

    def __init__(self, size: int, batch_size: int, seed: int, salt: int = 0):
        if size <= 0:
            raise ValueError("cannot draw batches from an empty set")
        check_batch_size(batch_size)
        self.size, self.batch_size, self.seed, self.salt = size, batch_size, seed, salt
        self._permutations: dict[int, np.ndarray] = {}  # the epochs of the last batch drawn

    def _permutation(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s order, drawn once rather than at every step of the epoch."""
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:
                self._permutations.pop(min(self._permutations))
            self._permutations[epoch] = np.random.default_rng([self.seed, self.salt, epoch]).permutation(self.size)
        return self._permutations[epoch]

    def indices(self, step: int) -> np.ndarray:
        """This process's share of `global_indices(step)`: all of it in a single process."""
        return shard_rows(self.global_indices(step))

    def global_indices(self, step: int) -> np.ndarray:
        """Indices of global batch number `step` (batches wrap across epoch boundaries)."""
        start = step * self.batch_size
        out = []
        while len(out) < self.batch_size:
            epoch, offset = divmod(start + len(out), self.size)
            perm = self._permutation(epoch)
            take = min(self.batch_size - len(out), self.size - offset)
            out.extend(perm[offset : offset + take])
        return np.asarray(out, dtype=np.int64)


def eval_batches(
    part: PairedArrays, batch_size: int, device: torch.device | str
) -> Iterator[tuple[dict[str, torch.Tensor], np.ndarray]]:
    """Un-augmented batches in order: ({"wli", "nbi"} tensors, labels)."""
    for start in range(0, len(part), batch_size):
        sl = slice(start, start + batch_size)
        yield {"wli": to_tensor(part.wli[sl], device), "nbi": to_tensor(part.nbi[sl], device)}, part.labels[sl]
