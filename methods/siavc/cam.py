"""Cross-set Augmentation Module (CAM; SIAVC's Video Cross-set Augmentation Module, VCAM): labeled
data are scarce, so SIAVC builds more diverse training pairs across the labeled and unlabeled sets.
A pool of one-hot labeled samples, the labeled batch plus the unlabeled samples predicted with high
confidence, is interpolated with the unlabeled batch (mixup, one ratio per pair from Beta(a, a)); the
target mixes the pool's one-hot label with the unlabeled sample's predicted distribution in the same
ratio. A small discriminator head learns to tell, from the mixed sample's features, how much of it
came from each set (as the authors' code; ADA-Net's cross-set interpolation is its origin).

Video to image: clips are mixed frame by frame in the original; here whole images are mixed."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class CrossSetBatch(NamedTuple):
    images: torch.Tensor  # (n_u, 3, H, W) mixed images
    targets: torch.Tensor  # (n_u, num_classes) mixed class distributions
    ratios: torch.Tensor  # (n_u, 2) (share of the pool sample, share of the unlabeled sample)


def cross_set_mix(labeled: torch.Tensor, labels: torch.Tensor, unlabeled: torch.Tensor, probs: torch.Tensor,
                  confidence: float, alpha: float, rng: np.random.Generator) -> CrossSetBatch:
    """Pair every unlabeled image with a pool image and mix each pair with its own Beta ratio.

    The pool (labeled images, and unlabeled ones whose top probability reaches `confidence`, with
    their arg-max as one-hot label) is repeated to the unlabeled batch's size and shuffled, so each
    pool sample is used about equally often."""
    num_classes = probs.shape[1]
    scores, pseudo = probs.max(1)
    confident = scores >= confidence
    pool = torch.cat([labeled, unlabeled[confident]])
    pool_targets = F.one_hot(torch.cat([labels, pseudo[confident]]), num_classes).float()
    n = len(unlabeled)
    order = rng.permutation(np.resize(np.arange(len(pool)), max(n, len(pool))))[:n]
    order = torch.as_tensor(order, device=pool.device)
    lam = torch.as_tensor(rng.beta(alpha, alpha, n), dtype=pool.dtype, device=pool.device)
    images = lam.view(-1, 1, 1, 1) * pool[order] + (1 - lam.view(-1, 1, 1, 1)) * unlabeled
    targets = lam[:, None] * pool_targets[order] + (1 - lam[:, None]) * probs
    return CrossSetBatch(images, targets, torch.stack([lam, 1 - lam], dim=1))


class MixRatioDiscriminator(nn.Module):
    """Features -> logits over (pool share, unlabeled share); the layer sizes of the authors' head."""

    def __init__(self, dim: int, hidden: Sequence[int]):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden[0]), nn.ReLU(inplace=True), nn.Linear(hidden[0], hidden[1]),
                                 nn.ReLU(inplace=True), nn.Linear(hidden[1], 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def cross_set_loss(logits: torch.Tensor, ratio_logits: torch.Tensor, batch: CrossSetBatch) -> torch.Tensor:
    """Soft cross-entropy to the mixed targets plus the discriminator's soft cross-entropy to the ratios."""
    return F.cross_entropy(logits, batch.targets) + F.cross_entropy(ratio_logits, batch.ratios)
