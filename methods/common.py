"""Pieces the methods share: the WLI classifier, labeled, unlabeled and paired batches."""
from __future__ import annotations

import functools
import itertools
import random
import time
import warnings

import numpy as np
import torch
from torch import nn

from benchmark.kit.ahead import MadeAhead
from benchmark.kit.contract import VIEW_MODES, Batch
from benchmark.kit.data.loaders import BatchStream, step_generator, to_tensor, weak_augment
from benchmark.kit.data.types import PairedArrays
from benchmark.kit.distributed import shard_rows
from benchmark.kit.probe import probe_heads
from benchmark.kit.runtime import spare_cores
from benchmark.kit.schema import TrainConfig

from .augmenter import Augmenter, WorkerLost
from .augmenter import augmenter as start_augmenter


class WLIClassifier(nn.Module):
    """A timm backbone that classifies the white-light image of a pair (NBI is ignored at test)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features, (N, D)."""
        return pooled(self.backbone, x)

    def predict(self, batch: Batch) -> torch.Tensor:
        return self.backbone(batch["wli"])

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.features(batch["wli"])


def probe_wli_head(model: WLIClassifier, labeled: PairedArrays, device: torch.device, train_cfg: TrainConfig) -> None:
    """The classifier's head from a linear probe of its pooled WLI features (`benchmark.kit.probe`)."""
    probe_heads([(model.backbone.get_classifier(), lambda batch: model.features(batch["wli"]))], labeled, device,
                train_cfg)


def pooled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A timm ViT's pooled pre-logit feature: (N, 3, H, W) -> (N, D)."""
    return encoder.forward_head(encoder.forward_features(x), pre_logits=True)


def stage_cfg(train_cfg: TrainConfig, iterations: int, reference: int, **changes) -> TrainConfig:
    """The profile's train settings for a stage of `iterations`: its lr warm-up, given for a stage of
    `reference` iterations (the run's `train` stage, to which `benchmark.kit.budget` scaled it), keeps its share."""
    warmup = round(train_cfg.warmup_iterations * iterations / max(1, reference))
    return train_cfg.model_copy(update={"warmup_iterations": warmup, **changes})


class LabeledBatches(MadeAhead):
    """Weakly augmented labeled WLI batches; batch `it` depends only on (seed, it), so it is made a step
    ahead where a core is spare (`benchmark.kit.ahead`). Under torchrun, this process's share of the global
    batch (`benchmark.kit.distributed`)."""

    def __init__(self, part: PairedArrays, batch_size: int, seed: int, device: torch.device):
        super().__init__(device)
        self.part, self.device, self.seed = part, device, seed
        self.stream = BatchStream(len(part), batch_size, seed, salt=1)

    def make(self, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.stream.indices(it)
        x = weak_augment(to_tensor(self.part.wli[idx], self.device), step_generator(self.seed, it, salt=1))
        return x, torch.as_tensor(self.part.labels[idx], device=self.device)


class PairedBatches(MadeAhead):
    """Shuffled (WLI, NBI[, label]) batches. Both images of a pair get the same flip and crop, so
    their patches stay registered for the cross-attention; batch `it` depends only on (seed, it), and is
    made a step ahead where a core is spare. Under torchrun, this process's share of the global batch."""

    def __init__(self, wli: np.ndarray, nbi: np.ndarray, labels: np.ndarray | None, batch_size: int,
                 seed: int, device: torch.device, salt: int):
        super().__init__(device)
        self.wli, self.nbi, self.labels, self.seed, self.device, self.salt = wli, nbi, labels, seed, device, salt
        self.stream = BatchStream(len(wli), batch_size, seed, salt)

    def make(self, it: int) -> tuple[torch.Tensor, ...]:
        idx = self.stream.indices(it)
        views = tuple(weak_augment(to_tensor(images[idx], self.device), step_generator(self.seed, it, self.salt))
                      for images in (self.wli, self.nbi))
        if self.labels is None:
            return views
        return (*views, torch.as_tensor(self.labels[idx], device=self.device))


_STREAM_IDS = itertools.count()


class UnlabeledBatches(MadeAhead):
    """Unlabeled (weak, strong) views, the only place where the two modes differ.

    single: weak = WLI flipped and pad-cropped; strong = WLI through USB's own RandAugment(3, 5)
            with Cutout, then flipped and pad-cropped (USB crops before RandAugment; the two commute
            in distribution).
    multi:  weak = the same; strong = the paired NBI image, flipped and pad-cropped independently
            ("one modality is the optimal augmented sample of the other").

    RandAugment works image by image in PIL, mostly in Python, and is the costliest part of a batch: in
    single mode, when a core is free for it (`augmenter_fits`), a worker process (`augmenter()`) makes
    the strong sources of the next batches while batch it trains (a thread would hold the interpreter
    lock the training step needs). Each batch's RandAugment seeds the generators it draws from with
    (seed, it), so batch it is the same wherever and in whatever order it is made: a resumed run
    gets exactly the views of an uninterrupted one. Until the worker is ready (it starts a fresh interpreter,
    which takes seconds), strong sources are made in this process; after, a batch asked for is waited for. The rest of a
    batch (its weak view, the crops of its strong view) is made a step ahead where a core is spare.
    """

    AHEAD = 2  # batches whose strong sources are in the making at once

    def __init__(self, part: PairedArrays, batch_size: int, seed: int, device: torch.device, mode: str):
        if mode not in VIEW_MODES:
            raise ValueError(f"unlabeled views exist for modes {VIEW_MODES}, not {mode!r}")
        super().__init__(device)
        self.part, self.device, self.seed, self.mode = part, device, seed, mode
        self.stream = BatchStream(len(part), batch_size, seed, salt=2)
        self._from_worker = mode == "single" and augmenter_fits(device)  # decided once per run, not per step
        self._stream_id = next(_STREAM_IDS)  # names this stream's requests to the worker

    def _randaugment_seeds(self, it: int) -> tuple[int, int]:
        py_seed, np_seed = np.random.SeedSequence([self.seed, it, 3]).generate_state(2)
        return int(py_seed), int(np_seed)

    def strong_source(self, idx: np.ndarray, it: int) -> np.ndarray:
        """uint8 (n, H, W, 3) images the strong view is made from."""
        if self.mode == "multi":
            return self.part.nbi[idx]
        return randaugment(self.part.wli[idx], *self._randaugment_seeds(it))

    def _strong_source_ahead(self, everything: np.ndarray, it: int) -> np.ndarray:
        """`strong_source(everything, it)`, from the worker process when it was asked for ahead (else made
        here: the first batch of a run, batches asked for out of order, a lost worker); then the next
        AHEAD batches' are asked for, so the worker always has one to make."""
        worker = augmenter()
        try:
            source = worker.take((self._stream_id, it))
            worker.forget(lambda key: key[0] != self._stream_id or it < key[1] <= it + self.AHEAD)
            for k in range(it + 1, it + 1 + self.AHEAD) if worker.ready() else ():
                if not worker.asked((self._stream_id, k)):
                    worker.ask((self._stream_id, k), self.part.wli, self.stream.global_indices(k),
                               *self._randaugment_seeds(k))
        except WorkerLost:
            augmenter(restart=True)
            source = None
        return self.strong_source(everything, it) if source is None else source

    def make(self, it: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weak (n, 3, H, W), strong (n, 3, H, W), dataset-local indices (n,)): this process's share.

        RandAugment draws one random stream per global batch, image after image, so under torchrun
        every process makes the strong sources of the whole global batch and keeps its share: the
        views stay a single-process run's, at the price of not splitting that CPU work."""
        everything = self.stream.global_indices(it)
        idx = shard_rows(everything)
        weak = weak_augment(to_tensor(self.part.wli[idx], self.device), step_generator(self.seed, it, salt=2))
        if self._from_worker:
            source = self._strong_source_ahead(everything, it)
        else:
            source = self.strong_source(everything, it)
        strong = weak_augment(to_tensor(shard_rows(source), self.device), step_generator(self.seed, it, salt=4))
        return weak, strong, torch.as_tensor(idx, device=self.device)


def augmenter_fits(device: torch.device) -> bool:
    """Whether the worker process has a core to itself: beside a GPU step always; on the CPU when torch's
    threads leave a core of this process's share free (e.g. `runtime.threads: 1` on two cores, one cell at
    a time). Else the worker would take its CPU time from a training step, this cell's or, in a pool of
    one cell per core, the next slot's, and its start-up and hand-overs cost more than making the strong
    sources in line (docs/perf.md)."""
    return torch.device(device).type == "cuda" or spare_cores() > 0


def augmenter(restart: bool = False) -> Augmenter:
    """The one worker process that makes single mode's strong sources (`randaugment`, PIL and NumPy work,
    no torch ops) for every run of this process (`methods.augmenter`). One worker next to the training
    step's threads is what two cores afford."""
    return start_augmenter(randaugment, restart)


def warm_augmenter() -> None:
    """Starts the worker process and waits until it is ready: a run's first seconds, when its batches are
    made in line, paid before a measurement rather than inside it."""
    worker = augmenter()
    while not worker.ready():
        time.sleep(0.05)


def randaugment(images: np.ndarray, py_seed: int, np_seed: int) -> np.ndarray:
    """USB's own RandAugment(3, 5) on each of uint8 (n, H, W, 3) `images`.

    semilearn's policy draws from the global `random` and `np.random` of the process it runs in:
    seeding them here makes batch `it` the same in the worker process, in line, and in a resumed run."""
    from PIL import Image

    policy = _usb_randaugment()
    random.seed(py_seed)
    np.random.seed(np_seed)
    return np.stack([np.asarray(policy(Image.fromarray(image)).convert("RGB")) for image in images])


@functools.lru_cache(maxsize=1)
def _usb_randaugment():
    """semilearn's RandAugment(3, 5), built once per process (it keeps no state between images)."""
    import_semilearn()
    from semilearn.datasets.augmentation import RandAugment

    return RandAugment(3, 5)


def import_semilearn():
    """semilearn, imported on first use (it takes seconds) and quietly (its imports of timm.models.layers
    and aim's SQLAlchemy models warn about deprecations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import semilearn
    return semilearn
