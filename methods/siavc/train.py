"""SIAVC: semi-supervised framework for industrial accident video classification (Li, Lin, Fan, Zhao,
Zhang, IEEE TCSVT 2024; code: github.com/AlchemyEmperor/SIAVC), adapted from video clips to images.
Self-adaptive pseudo-labelling (`threshold.py`) with the paper's two modules: the Super Augmentation
Block (`sab.py`) and the Cross-set Augmentation Module (`cam.py`). docs/habit_siavc.md lists every
adaptation and its source."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.kit.contract import VIEW_MODES, RunContext, Trained
from benchmark.kit.data.types import SemiSupervisedSplit
from benchmark.kit.health import PseudoLabels
from benchmark.kit.models import create_backbone
from benchmark.kit.schema import RunConfig
from benchmark.kit.training import TrainingLoop

from ..common import LabeledBatches, UnlabeledBatches, WLIClassifier, probe_wli_head
from ..registry import register_method
from .cam import MixRatioDiscriminator, cross_set_loss, cross_set_mix
from .config import SIAVCConfig
from .sab import Draws, SuperAugmentationBlock
from .threshold import SelfAdaptiveThreshold


class SIAVCNet(WLIClassifier):
    """The backbone classifier plus CAM's mix-ratio discriminator on its pooled features."""

    def __init__(self, backbone: nn.Module, hidden: Sequence[int]):
        super().__init__(backbone)
        self.discriminator = MixRatioDiscriminator(backbone.num_features, hidden)

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.backbone.get_classifier()(features), features


@register_method("siavc", modes=VIEW_MODES, label="SIAVC",
                 description="SIAVC (TCSVT 2024), video->image: super augmentation block, cross-set augmentation",
                 config=SIAVCConfig)
def train(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    hp, tr = cfg.method, cfg.train
    backbone = create_backbone(cfg.model, data.num_classes)
    model = SIAVCNet(backbone, hp.cam.hidden).to(ctx.device)
    probe_wli_head(model, data.labeled, ctx.device, tr)
    batch = tr.batch_size
    labeled = LabeledBatches(data.labeled, batch, ctx.seed, ctx.device)
    unlabeled = UnlabeledBatches(data.unlabeled, batch * tr.uratio, ctx.seed, ctx.device, hp.mode)
    sat = SelfAdaptiveThreshold(data.num_classes, hp.sat_momentum, ctx.device)
    sab = SuperAugmentationBlock(len(data.unlabeled), hp.sab.history, hp.sab.mask_prob, hp.sab.noise_std,
                                 backbone.patch_embed.patch_size[0], ctx.device)
    strong_shape = torch.Size((len(unlabeled.stream.indices(0)), 3, *data.unlabeled.wli.shape[1:3]))
    drawn = Draws(sab, strong_shape, ctx.seed, ctx.device)
    temperature, lambda_u, lambda_f = hp.T, hp.lambda_u, hp.lambda_fairness

    def step(it: int) -> dict:
        x, y = labeled(it)
        weak, strong, idx = unlabeled(it)
        with torch.no_grad():
            probs = (model(weak) / temperature).softmax(1)
        mask, pseudo = sat(probs)
        selected = sab.select(idx)
        strong = sab.augment(strong, selected, drawn(it))
        rng = np.random.default_rng([ctx.seed, it, 22])
        mixed = cross_set_mix(x, y, weak, probs, hp.cam.confidence, hp.cam.alpha, rng)

        logits, features = model.logits_and_features(torch.cat([x, strong, mixed.images]))
        n, n_u = len(x), len(weak)
        logits_x, logits_s, logits_m = logits[:n], logits[n:n + n_u], logits[n + n_u:]
        sup = F.cross_entropy(logits_x, y)
        ce_s = F.cross_entropy(logits_s, pseudo, reduction="none")
        unsup = (ce_s * mask).mean()
        sab.record(idx, ce_s)
        fairness = sat.fairness(logits_s, mask)
        cross_set = cross_set_loss(logits_m, model.discriminator(features[n + n_u:]), mixed)
        loss = sup + lambda_u * unsup + cross_set + lambda_f * fairness
        return {"loss": loss, "sup_loss": sup.detach(), "unsup_loss": unsup.detach(), "cam_loss": cross_set.detach(),
                "fairness": fairness.detach(), "mask_ratio": mask.mean(), "sab_ratio": selected.float().mean(),
                "threshold": sat.tau, "pseudo_labels": PseudoLabels(idx, mask, pseudo)}

    def save_state() -> dict:
        return {"sat": sat.state_dict(), "sab": sab.state_dict()}

    def load_state(state: dict) -> None:
        sat.load_state_dict(state["sat"])
        sab.load_state_dict(state["sab"])

    return TrainingLoop(model, tr, ctx, data.val, extra_state=save_state, load_extra_state=load_state).run(step)
