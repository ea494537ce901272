"""Supervised bounds: what the labeled WLI images alone give, and what all training labels give.
Every table shows them so a reader sees what unlabeled data adds."""
from __future__ import annotations

import torch.nn.functional as F

from benchmark.kit.contract import RunContext, Trained
from benchmark.kit.data.types import SemiSupervisedSplit
from benchmark.kit.models import create_backbone
from benchmark.kit.schema import RunConfig
from benchmark.kit.training import TrainingLoop

from .common import LabeledBatches, WLIClassifier, probe_wli_head
from .registry import register_method


def _train_supervised(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    model = WLIClassifier(create_backbone(cfg.model, data.num_classes)).to(ctx.device)
    probe_wli_head(model, data.labeled, ctx.device, cfg.train)
    batches = LabeledBatches(data.labeled, cfg.train.batch_size, ctx.seed, ctx.device)
    forward = ctx.distribute(model)  # under torchrun: gradients averaged across processes

    def step(it: int) -> dict:
        x, y = batches(it)
        loss = F.cross_entropy(forward(x), y)
        return {"loss": loss, "sup_loss": loss.detach()}

    return TrainingLoop(model, cfg.train, ctx, data.val).run(step)


@register_method("supervised", modes=("single",), label="Supervised",
                 description="lower bound: labeled WLI images only",
                 unlabeled=False, uses_unlabeled=False)
def train_supervised(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    return _train_supervised(data, cfg, ctx)


@register_method("fullysupervised", modes=("single",), fixed_labels=100.0, label="Fully supervised",
                 description="upper bound: every training image labeled", unlabeled=False, uses_unlabeled=False)
def train_fullysupervised(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    return _train_supervised(data, cfg, ctx)
