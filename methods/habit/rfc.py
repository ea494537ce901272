"""Recalibrated Feature Compensation (RFC), HABIT's answer to *selection bias*: confidence-thresholded
pseudo-labels favour the classes and samples the model already knows. RFC has two parts.

Recalibration. The weak-view distribution is aligned to the running mean of past predictions
(`DistributionAlignment`, on by default in the authors' code), and samples just above the confidence
threshold, whose strong view still disagrees most, are pulled towards their weak view by a cosine
consistency (`band_consistency`): a "rational discrepancy" between the two augmented distributions
instead of a hard accept / reject at one threshold.

Compensation. Per class, Gaussian features drawn from the mean and covariance of that class's
features in the batch top every class up to the same count and train the classifier, so minority
classes weigh as much as majority ones (`compensate_features`)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


class DistributionAlignment:
    """Divides class probabilities by their mean over the last `queue` batches, then renormalises."""

    def __init__(self, queue: int):
        self.queue = queue
        self.history: list[torch.Tensor] = []

    @torch.no_grad()
    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        self.history = (self.history + [probs.mean(0)])[-self.queue:]
        aligned = probs / torch.stack(self.history).mean(0)
        return aligned / aligned.sum(1, keepdim=True)

    def state_dict(self) -> dict:
        return {"history": [h.cpu() for h in self.history]}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.history = [h.to(device) for h in state["history"]]


def band_consistency(weak_logits: torch.Tensor, strong_logits: torch.Tensor, scores: torch.Tensor,
                     band: Sequence[float]) -> torch.Tensor:
    """Negative cosine similarity of strong to (fixed) weak logits, averaged over the batch and counted
    only for samples whose confidence lies in [band[0], band[1])."""
    in_band = ((scores >= band[0]) & (scores < band[1])).float()
    return -(F.cosine_similarity(strong_logits, weak_logits.detach(), dim=1, eps=1e-6) * in_band).mean()


def compensate_features(features: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian features that top every class up to `per_class` samples.

    Each class with at least two features gets `per_class - count` draws from N(mean, cov) of its
    features (covariance + 1e-6 I, as the authors' code). A draw is the mean plus a standard-normal
    combination of the centred features, which has exactly that covariance without factorising a
    D x D matrix. Features are detached: compensation trains the classifier, not the backbone."""
    features = features.detach().float()
    drawn, drawn_labels = [], []
    for c in range(num_classes):
        members = features[labels == c]
        count = len(members)
        missing = per_class - count
        if count < 2 or missing <= 0:
            continue
        centred = (members - members.mean(0)) / (count - 1) ** 0.5
        z = torch.randn(missing, count, generator=generator).to(features.device)
        jitter = 1e-3 * torch.randn(missing, features.shape[1], generator=generator).to(features.device)
        drawn.append(members.mean(0) + z @ centred + jitter)
        drawn_labels.append(torch.full((missing,), c, dtype=torch.long, device=features.device))
    if not drawn:
        return features.new_zeros(0, features.shape[1]), labels.new_zeros(0)
    return torch.cat(drawn), torch.cat(drawn_labels)
