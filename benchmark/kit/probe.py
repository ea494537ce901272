"""The classifier heads' starting point: a linear probe on the labeled images (`train.probe_head`).

Why. Fine-tuning a pre-trained backbone under a random head distorts its features: the first gradients
that reach the backbone come from a classifier that knows nothing yet (Kumar et al., "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution", ICLR 2022: LP-FT). On the quick profile the
supervised bounds gain 18-19 points from a probed head, at 50 % labels and with every label (docs/protocol.md
§5, rows c1 and P150). Every method fits each of its classifier heads this way, on
the features that head reads, before its training starts: the same starting rule for all, as the
backbone weights are.

The probe is multinomial logistic regression on the frozen features of the labeled images, unaugmented,
with the L2 penalty of scikit-learn's default (C = 1), solved by L-BFGS in torch from zero weights: a
convex problem with one solution, so the head depends only on the features and labels. It reads no
unlabeled, validation or test label."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.kit.contract import Batch
from benchmark.kit.data.loaders import eval_batches
from benchmark.kit.data.types import PairedArrays
from benchmark.kit.schema import TrainConfig

FeatureFn = Callable[[Batch], torch.Tensor]  # a batch of pairs -> (N, D): what a head reads
STEPS = 100  # L-BFGS iterations; the problem is small (D <= 1,000 per class) and converges well before


@torch.no_grad()
def labeled_features(features: FeatureFn, labeled: PairedArrays, device: torch.device,
                     batch_size: int = 256) -> torch.Tensor:
    """(n, D) float features of every labeled pair, in order."""
    return torch.cat([features(batch).float() for batch, _ in eval_batches(labeled, batch_size, device)])


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (C, D), bias (C,)) minimising mean cross-entropy + |weight|^2 / (2 n)."""
    weight = torch.zeros(num_classes, x.shape[1], device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=x.device, requires_grad=True)
    solver = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=STEPS, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        solver.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + weight.pow(2).sum() / (2 * len(x))
        loss.backward()
        return loss

    with torch.enable_grad():
        solver.step(objective)
    return weight.detach(), bias.detach()


@torch.no_grad()
def probe_heads(heads: list[tuple[nn.Linear, FeatureFn]], labeled: PairedArrays, device: torch.device,
                train_cfg: TrainConfig) -> None:
    """Each head's weights set to the linear probe of its features, when `train.probe_head` is on."""
    if not train_cfg.probe_head:
        return
    y = torch.as_tensor(labeled.labels, device=device)
    for head, features in heads:
        x = labeled_features(features, labeled, device, train_cfg.eval_batch_size)
        weight, bias = fit_linear_probe(x, y, head.out_features)
        head.weight.copy_(weight.to(head.weight.dtype))
        head.bias.copy_(bias.to(head.bias.dtype))
