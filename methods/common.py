"""Pieces the single-backbone methods share: the WLI classifier and labeled batches."""
from __future__ import annotations

import torch
from torch import nn

from benchmark.contract import Batch
from benchmark.data.loaders import BatchStream, step_generator, to_tensor, weak_augment
from benchmark.data.types import PairedArrays


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
    """Weakly augmented labeled WLI batches; batch `it` depends only on (seed, it)."""

    def __init__(self, part: PairedArrays, batch_size: int, seed: int, device: torch.device):
        self.part, self.device, self.seed = part, device, seed
        self.stream = BatchStream(len(part), batch_size, seed, salt=1)

    def __call__(self, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.stream.indices(it)
        x = weak_augment(to_tensor(self.part.wli[idx], self.device), step_generator(self.seed, it, salt=1))
        return x, torch.as_tensor(self.part.labels[idx], device=self.device)
