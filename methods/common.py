"""Pieces the single-backbone methods share: the WLI classifier, labeled and unlabeled batches."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from benchmark.contract import Batch
from benchmark.data.loaders import BatchStream, step_generator, to_tensor, weak_augment
from benchmark.data.types import PairedArrays
from benchmark.distributed import shard_rows


class WLIClassifier(nn.Module):
    """A timm backbone that classifies the white-light image of a pair (NBI is ignored at test)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features, (N, D)."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def predict(self, batch: Batch) -> torch.Tensor:
        return self.backbone(batch["wli"])

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.features(batch["wli"])


class LabeledBatches:
    """Weakly augmented labeled WLI batches; batch `it` depends only on (seed, it). Under torchrun,
    this process's share of the global batch (`benchmark.distributed`)."""

    def __init__(self, part: PairedArrays, batch_size: int, seed: int, device: torch.device):
        self.part, self.device, self.seed = part, device, seed
        self.stream = BatchStream(len(part), batch_size, seed, salt=1)

    def __call__(self, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.stream.indices(it)
        x = weak_augment(to_tensor(self.part.wli[idx], self.device), step_generator(self.seed, it, salt=1))
        return x, torch.as_tensor(self.part.labels[idx], device=self.device)


class UnlabeledBatches:
    """Unlabeled (weak, strong) views, the only place where the two modes differ.

    single: weak = WLI flipped and pad-cropped; strong = WLI through USB's own RandAugment(3, 5)
            with Cutout, then flipped and pad-cropped (USB crops before RandAugment; the two commute
            in distribution).
    multi:  weak = the same; strong = the paired NBI image, flipped and pad-cropped independently
            ("one modality is the optimal augmented sample of the other").
    """

    MODES = ("single", "multi")

    def __init__(self, part: PairedArrays, batch_size: int, seed: int, device: torch.device, mode: str):
        if mode not in self.MODES:
            raise ValueError(f"unlabeled views exist for modes {self.MODES}, not {mode!r}")
        self.part, self.device, self.seed, self.mode = part, device, seed, mode
        self.stream = BatchStream(len(part), batch_size, seed, salt=2)
        self._randaugment = None

    def strong_source(self, idx: np.ndarray, it: int) -> np.ndarray:
        """uint8 (n, H, W, 3) images the strong view is made from."""
        if self.mode == "multi":
            return self.part.nbi[idx]
        if self._randaugment is None:
            from semilearn.datasets.augmentation import RandAugment  # USB's own policy

            self._randaugment = RandAugment(3, 5)
        # USB's RandAugment draws from the global `random` and `np.random`: seed them from the step
        # so batch `it` is the same in a resumed run.
        state = np.random.SeedSequence([self.seed, it, 3]).generate_state(2)
        random.seed(int(state[0]))
        np.random.seed(int(state[1]))
        from PIL import Image

        return np.stack([np.asarray(self._randaugment(Image.fromarray(img)).convert("RGB"))
                         for img in self.part.wli[idx]])

    def __call__(self, it: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weak (n, 3, H, W), strong (n, 3, H, W), dataset-local indices (n,)): this process's share.

        RandAugment draws one random stream per global batch, image after image, so under torchrun
        every process makes the strong sources of the whole global batch and keeps its share: the
        views stay a single-process run's, at the price of not splitting that CPU work."""
        everything = self.stream.global_indices(it)
        idx = shard_rows(everything)
        weak = weak_augment(to_tensor(self.part.wli[idx], self.device), step_generator(self.seed, it, salt=2))
        source = shard_rows(self.strong_source(everything, it))
        strong = weak_augment(to_tensor(source, self.device), step_generator(self.seed, it, salt=4))
        return weak, strong, torch.as_tensor(idx, device=self.device)
