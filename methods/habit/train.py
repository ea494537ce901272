"""HABIT: Hierarchical Bias Mitigation for semi-supervised medical image classification (Yang, Chen,
Yuan, IEEE TMI 2023; code: github.com/CityU-AIM-Group/HABIT). FixMatch-style pseudo-labelling with
one module against each of three biases: MRNet (perception, `mrnet.py`), RFC (selection, `rfc.py`)
and CMH (confirmation, `cmh.py`). docs/habit_siavc.md lists every choice and its source."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.kit.contract import VIEW_MODES, Batch, RunContext, Trained
from benchmark.kit.data.loaders import step_generator
from benchmark.kit.data.types import SemiSupervisedSplit
from benchmark.kit.health import PseudoLabels
from benchmark.kit.probe import probe_heads
from benchmark.kit.schema import RunConfig
from benchmark.kit.training import TrainingLoop

from ..common import LabeledBatches, UnlabeledBatches
from ..registry import register_method
from .cmh import ConsistencyAwareMomentumHeredity
from .config import HABITConfig
from .mrnet import MRNet
from .rfc import DistributionAlignment, band_consistency, compensate_features


class HABITModel(nn.Module):
    """The MRNet student, trained by the optimizer, and its CMH teacher, which is what predicts.

    A prediction reconciles the two paths: the mean of their logits."""

    def __init__(self, student: MRNet):
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student).requires_grad_(False)

    def predict(self, batch: Batch) -> torch.Tensor:
        return self.teacher(batch["wli"]).logits.mean(0)

    def embed(self, batch: Batch) -> torch.Tensor:
        """Both paths' pooled features side by side, (N, 2D)."""
        return torch.cat(tuple(self.teacher(batch["wli"]).features), dim=1)


@register_method("habit", modes=VIEW_MODES, label="HABIT",
                 description="HABIT (TMI 2023): MRNet two-path ViT, RFC, CMH teacher", config=HABITConfig)
def train(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    hp, tr = cfg.method, cfg.train
    student = MRNet(cfg.model, data.num_classes, hp.mrnet.window).to(ctx.device)
    probe_heads([(head, lambda batch, p=p: student(batch["wli"]).features[p]) for p, head in enumerate(student.heads)],
                data.labeled, ctx.device, tr)
    model = HABITModel(student).to(ctx.device)  # the teacher starts as a copy of the probed student
    batch = tr.batch_size
    labeled = LabeledBatches(data.labeled, batch, ctx.seed, ctx.device)
    unlabeled = UnlabeledBatches(data.unlabeled, batch * tr.uratio, ctx.seed, ctx.device, hp.mode)
    alignment = DistributionAlignment(hp.rfc.alignment_queue)
    band = hp.rfc.band
    threshold, lambda_u, rfc_weight = hp.threshold, hp.lambda_u, hp.rfc.weight
    # CMH replaces the loop's fixed-momentum EMA; its base momentum is the profile's.
    heredity = ConsistencyAwareMomentumHeredity(model.student, model.teacher, hp.cmh.momentum, hp.cmh.scale)

    def step(it: int) -> dict:
        x, y = labeled(it)
        weak, strong, idx = unlabeled(it)
        n = len(x)
        with torch.no_grad():
            weak_out = model.student(weak)
            weak_logits = weak_out.logits.mean(0)  # the reconciled prediction
            scores, pseudo = alignment(weak_logits.softmax(1)).max(1)
            mask = (scores >= threshold).float()
        out = model.student(torch.cat([x, strong]))
        logits_x, logits_s = out.logits[:, :n], out.logits[:, n:]
        sup = sum(F.cross_entropy(path, y) for path in logits_x) / 2
        ce_s = torch.stack([F.cross_entropy(path, pseudo, reduction="none") for path in logits_s])  # (2, n_u)
        unsup = (ce_s * mask).mean()
        recalibration = sum(band_consistency(weak_logits, path, scores, band) for path in logits_s) / 2

        confident = mask.bool()
        generator = step_generator(ctx.seed, it, salt=11)
        compensation = logits_x.new_zeros(())
        for p, head in enumerate(model.student.heads):
            pool = torch.cat([out.features[p, :n], weak_out.features[p, confident]])
            feats, labels = compensate_features(pool, torch.cat([y, pseudo[confident]]), data.num_classes,
                                                len(weak), generator)
            if len(labels):
                compensation = compensation + F.cross_entropy(head(feats), labels) / 2

        heredity.consistency = float(ce_s.detach().mean())
        loss = sup + lambda_u * (unsup + recalibration + rfc_weight * compensation)
        return {"loss": loss, "sup_loss": sup.detach(), "unsup_loss": unsup.detach(),
                "rfc_recalibration": recalibration.detach(), "rfc_compensation": compensation.detach(),
                "mask_ratio": mask.mean(), "cmh_momentum": heredity.momentum,
                "pseudo_labels": PseudoLabels(idx, mask, pseudo)}

    def save_state() -> dict:
        return {"alignment": alignment.state_dict(), "momentum": heredity.momentum}

    def load_state(state: dict) -> None:
        alignment.load_state_dict(state["alignment"], ctx.device)
        heredity.momentum = state["momentum"]

    # The teacher is part of `model`, so the loop's checkpoints carry it.
    loop = TrainingLoop(model, tr.model_copy(update={"ema_momentum": 0.0}), ctx, data.val,
                        params=model.student.named_parameters(),
                        extra_state=save_state, load_extra_state=load_state)
    loop.optimizer.register_step_post_hook(lambda *_: heredity.update())
    trained = loop.run(step)
    trained.info["predictor"] = "CMH teacher, mean of both MRNet paths"
    return trained
