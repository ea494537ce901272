"""Controls that measure what the grid can see, kept out of Table II (`run --method controls`).

Both are semilearn's own FixMatch, its loss and its confidence mask unchanged (`methods.usb.USBRun`), with
the pseudo-labels its `gen_ulb_targets` hook would give replaced:

- positive control: the withheld true labels of the unlabeled images. What pseudo-labelling reaches on
  this grid when every pseudo-label is right: if it is not above the supervised bound, no method can be.
- negative control: one label per unlabeled image drawn at random (uniformly, once per run seed), so about
  five in six are wrong in a way the model can fit. What wrong pseudo-labels cost.

The harness holds the true labels for the health figures (`RunContext.health`); these two controls are
the only methods that read them. The positive control's pseudo-label accuracy is 100 % by construction,
which also checks that the health figures compare each pseudo-label with its own image's label."""
from __future__ import annotations

import numpy as np
import torch

from benchmark.kit.contract import VIEW_MODES, RunContext, Trained
from benchmark.kit.data.types import SemiSupervisedSplit
from benchmark.kit.schema import RunConfig

from .registry import register_method
from .usb.adapter import USBRun
from .usb.config import FixMatchConfig


def _true_labels(ctx: RunContext) -> torch.Tensor:
    return ctx.health.truth


def _random_labels(ctx: RunContext, num_classes: int) -> torch.Tensor:
    rng = np.random.default_rng([ctx.seed, 7])
    return torch.as_tensor(rng.integers(0, num_classes, size=len(ctx.health.truth)), dtype=torch.long)


def _with_targets(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext, targets: torch.Tensor) -> Trained:
    """FixMatch whose pseudo-label of unlabeled image i is `targets[i]`."""
    targets = targets.to(ctx.device)
    return USBRun("fixmatch", data, cfg, ctx, targets=lambda idx: targets[idx]).fit()


@register_method("positive_control", VIEW_MODES, group="control", config=FixMatchConfig,
                 label="Positive control (true pseudo-labels)",
                 description="control: FixMatch's loss and mask on the withheld true labels")
def train_positive_control(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    return _with_targets(data, cfg, ctx, _true_labels(ctx))


@register_method("negative_control", VIEW_MODES, group="control", config=FixMatchConfig,
                 label="Negative control (random pseudo-labels)",
                 description="control: FixMatch's loss and mask on random pseudo-labels")
def train_negative_control(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    return _with_targets(data, cfg, ctx, _random_labels(ctx, data.num_classes))
