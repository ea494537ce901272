"""RFPMSS behind the method contract: two stages inside the run's `train.iterations`, and its ablations.

    stage 1 "pretrain": every training pair, labels unused, encoders frozen: projections and anchors
                        learn L = w_sspc L_sspc (Eq. 6) + w_nce L_nce (Eq. 8-9)
    stage 2 "train":    everything but the anchors, cross-entropy on the labeled pairs
"""
from __future__ import annotations

import torch

from benchmark.kit.config_files import method_presets
from benchmark.kit.contract import RunContext, Trained
from benchmark.kit.data.types import SemiSupervisedSplit
from benchmark.kit.models import create_backbone
from benchmark.kit.probe import probe_heads
from benchmark.kit.schema import RunConfig
from benchmark.kit.training import TrainingLoop

from ..common import PairedBatches, stage_cfg
from ..registry import Cost, Stage, register_method
from .config import RFPMSSConfig
from .model import MODALITIES, AnchorSpaces, RFPMSSClassifier

PRESETS: dict[str, dict] = method_presets("rfpmss")


def stage_iterations(cfg: RunConfig) -> dict[str, int]:
    """Each stage's iterations: `pretrain.share` of the run's `train.iterations` (none when both stage-1
    losses are off), then the rest, so an RFPMSS cell costs the iterations of any other Table II cell."""
    settings: RFPMSSConfig = cfg.method
    share = settings.pretrain.share
    if settings.sspc.weight <= 0 and settings.nce.weight <= 0:
        share = 0.0
    total = cfg.train.iterations
    pretrain = round(share * total)
    return {"pretrain": pretrain, "train": total - pretrain}


def _pretrain(model: RFPMSSClassifier, data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext, iterations: int,
              reference: int) -> dict:
    """Stage 1 on every training pair with the encoders frozen -> what it used (for the record)."""
    settings: RFPMSSConfig = cfg.method
    train_cfg = cfg.train
    wli, nbi = data.train_pairs
    bank = min(settings.anchors.bank, len(wli))  # more would hold stale copies of the same pairs
    dim = model.encoders["wli"].num_features
    spaces = AnchorSpaces(model.projections, dim, settings.joint_dim, settings.anchors, settings.sspc,
                          settings.nce, bank).to(ctx.device)
    batch = train_cfg.batch_size * (1 + train_cfg.uratio)  # the images of one SSL step
    pairs = PairedBatches(wli, nbi, None, batch, ctx.seed, ctx.device, salt=31)
    encoders = model.encoders.requires_grad_(False)
    forward_loss = ctx.distribute(spaces, "forward_loss")

    def step(it: int) -> dict:
        with torch.no_grad():
            tokens = [encoders[m].forward_features(x) for m, x in zip(MODALITIES, pairs(it))]  # (N, T, D) each
            pooled = [encoders[m].forward_head(t, pre_logits=True) for m, t in zip(MODALITIES, tokens)]
        return forward_loss(*tokens, *pooled)

    lr = settings.pretrain.lr or train_cfg.lr
    TrainingLoop(spaces, stage_cfg(train_cfg, iterations, reference, ema_momentum=0.0, lr=lr), ctx, None,
                 name="pretrain", iterations=iterations,
                 params=[(n, p) for n, p in spaces.named_parameters() if p.requires_grad]
                 ).run(step)
    encoders.requires_grad_(True)
    return {"bank": bank, "batch_pairs": batch}


def train(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    settings: RFPMSSConfig = cfg.method
    train_cfg = cfg.train
    stages = stage_iterations(cfg)
    total = sum(stages.values())
    model = RFPMSSClassifier(create_backbone(cfg.model, num_classes=0), create_backbone(cfg.model, num_classes=0),
                             data.num_classes, settings.joint_dim, settings.projection).to(ctx.device)
    # Built first to find its checkpoint; its EMA copies the weights at its own first step.
    main = TrainingLoop(model, train_cfg, ctx, data.val, name="train",
                        iterations=stages["train"])
    info = {}
    if stages["pretrain"] > 0 and not main.path.exists():  # a resumed stage 2 has stage 1 in its checkpoint
        info = _pretrain(model, data, cfg, ctx, stages["pretrain"], stages["train"])
    # after stage 1: the head reads the projections it trained (a resumed stage 2 loads its own head)
    probe_heads([(model.head, model.embed)], data.labeled, ctx.device, train_cfg)
    labeled = PairedBatches(data.labeled.wli, data.labeled.nbi, data.labeled.labels, train_cfg.batch_size,
                            ctx.seed, ctx.device, salt=32)
    forward_loss = ctx.distribute(model, "forward_loss")
    trained = main.run(lambda it: forward_loss(*labeled(it)))
    trained.iterations = total
    trained.info.update(head="fused", stages=stages, **info)
    return trained


def _shortened(cfg: RunConfig, steps: int, num_pairs: int) -> RunConfig:
    """`steps` steps in each stage the config has (stage 1 only when it is on), one validation at the end:
    a modified deep copy."""
    cfg = cfg.model_copy(deep=True)
    staged = stage_iterations(cfg)["pretrain"] > 0
    cfg.train.iterations = 2 * steps if staged else steps
    cfg.train.eval_every = steps
    if staged:
        cfg.method.pretrain.share = 0.5
    return cfg


# Stage 1 (no validation), then the cross-entropy fine-tuning; both inside train.iterations.
COST = Cost(stages=(Stage("pretrain", lambda cfg, sizes: stage_iterations(cfg)["pretrain"], eval_every=None),
                    Stage("train", lambda cfg, sizes: stage_iterations(cfg)["train"])),
            shorten=_shortened)

register_method("rfpmss", modes=("fused",), config=RFPMSSConfig, cost=COST, label="RFPMSS",
                description="RFPMSS: multi-anchor Multi-SK semantic-structure consistency + cross-modal contrast, then CE")(train)
for _name, _preset in PRESETS.items():
    register_method(_name, modes=("fused",), description=_preset["description"], group="ablation",
                    config=RFPMSSConfig, cost=COST)(train)
