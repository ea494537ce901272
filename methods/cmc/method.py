"""CMC behind the method contract: two stages inside the run's `train.iterations`, and its ablations.

    stage 1 "warmup": each encoder and its own classifier on its own modality's labeled images
    stage 2 "train":  everything, labeled and unlabeled pairs: CE (3 heads) + CSC + CAC
"""
from __future__ import annotations

from benchmark.kit.config_files import method_presets
from benchmark.kit.contract import RunContext, Trained
from benchmark.kit.data.types import SemiSupervisedSplit
from benchmark.kit.models import create_backbone
from benchmark.kit.probe import probe_heads
from benchmark.kit.schema import RunConfig
from benchmark.kit.training import TrainingLoop

from ..common import PairedBatches, stage_cfg
from ..registry import Cost, Stage, register_method
from .config import CMCConfig
from .model import CMCClassifier

PRESETS: dict[str, dict] = method_presets("cmc")


def stage_iterations(cfg: RunConfig) -> dict[str, int]:
    """Each stage's iterations: a `warmup_share` of the run's `train.iterations`, then the rest, so a
    CMC cell costs the iterations of any other Table II cell."""
    total = cfg.train.iterations
    warmup = round(cfg.method.warmup_share * total)
    return {"warmup": warmup, "train": total - warmup}


def train(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    settings: CMCConfig = cfg.method
    train_cfg = cfg.train
    stages = stage_iterations(cfg)
    total = sum(stages.values())
    model = CMCClassifier(create_backbone(cfg.model, num_classes=0), create_backbone(cfg.model, num_classes=0),
                          data.num_classes, settings).to(ctx.device)
    probe_heads(model.probed_heads(), data.labeled, ctx.device, train_cfg)
    batch = train_cfg.batch_size
    labeled = PairedBatches(data.labeled.wli, data.labeled.nbi, data.labeled.labels, batch, ctx.seed, ctx.device, salt=21)
    unlabeled = PairedBatches(data.unlabeled.wli, data.unlabeled.nbi, None, batch * train_cfg.uratio,
                              ctx.seed, ctx.device, salt=22)
    # Built first to find its checkpoint; its EMA copies the weights at its own first step.
    main = TrainingLoop(model, train_cfg, ctx, data.val, name="train",
                        iterations=stages["train"])
    if stages["warmup"] > 0 and not main.path.exists():  # a resumed stage 2 has stage 1 in its checkpoint
        branches = model.branches()
        warm_loss = ctx.distribute(branches, "forward_loss")
        TrainingLoop(branches, stage_cfg(train_cfg, stages["warmup"], stages["train"], ema_momentum=0.0), ctx, None,
                     name="warmup", iterations=stages["warmup"]).run(lambda it: warm_loss(*labeled(it)))
    forward_loss = ctx.distribute(model, "forward_loss")

    def step(it: int) -> dict:
        x_w, x_n, y = labeled(stages["warmup"] + it)
        u_w, u_n = unlabeled(it)
        return forward_loss(x_w, x_n, y, u_w, u_n)

    trained = main.run(step)
    trained.iterations = total
    trained.info.update(head="fused", stages=stages)
    return trained


def _shortened(cfg: RunConfig, steps: int, num_pairs: int) -> RunConfig:
    """`steps` steps in each stage the config has (the warm-up only when its share is not 0), one
    validation at the end: a modified deep copy."""
    cfg = cfg.model_copy(deep=True)
    staged = cfg.method.warmup_share > 0
    cfg.train.iterations = 2 * steps if staged else steps
    cfg.train.eval_every = steps
    if staged:
        cfg.method.warmup_share = 0.5
    return cfg


# The encoders' warm-up (no validation), then the joint training; both inside train.iterations.
COST = Cost(stages=(Stage("warmup", lambda cfg, sizes: stage_iterations(cfg)["warmup"], eval_every=None),
                    Stage("train", lambda cfg, sizes: stage_iterations(cfg)["train"])),
            shorten=_shortened)

register_method("cmc", modes=("fused",), config=CMCConfig, cost=COST, label="CMC",
                description="CMC: modality-specific encoders, CSC loss, MIA fusion, CAC loss on unlabeled pairs")(train)
for _name, _preset in PRESETS.items():
    register_method(_name, modes=("fused",), description=_preset["description"], group="ablation",
                    config=CMCConfig, cost=COST)(train)
