"""The five USB baselines of Table II. Each is semilearn's own algorithm class (its hooks and
`train_step`), run by `USBRun`; hyper-parameters live in configs/methods/<name>.yaml."""
from __future__ import annotations

from benchmark.kit.contract import VIEW_MODES, RunContext, Trained
from benchmark.kit.data.types import SemiSupervisedSplit
from benchmark.kit.schema import RunConfig

from ..registry import Cost, register_method
from .adapter import USBRun
from .config import DashConfig, FixMatchConfig, FlexMatchConfig, FreeMatchConfig, SoftMatchConfig


def _dash_warmup(cfg: RunConfig) -> int:
    """Dash's supervised warm-up steps, inside train.iterations; a validation pass then gives rho_init."""
    return cfg.method.num_wu_iter


@register_method("fixmatch", VIEW_MODES, "FixMatch (USB): fixed confidence threshold 0.95", config=FixMatchConfig,
                 label="FixMatch")
def train_fixmatch(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    return USBRun("fixmatch", data, cfg, ctx).fit()


@register_method("flexmatch", VIEW_MODES, "FlexMatch (USB): class-wise curriculum thresholds", config=FlexMatchConfig,
                 label="FlexMatch")
def train_flexmatch(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    return USBRun("flexmatch", data, cfg, ctx).fit()


@register_method("dash", VIEW_MODES, "Dash (USB): dynamic loss threshold after a supervised warm-up",
                 config=DashConfig, cost=Cost(warmup=_dash_warmup), label="Dash")
def train_dash(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    return USBRun("dash", data, cfg, ctx).fit()


@register_method("freematch", VIEW_MODES, "FreeMatch (USB): self-adaptive thresholds and fairness term",
                 config=FreeMatchConfig, label="FreeMatch")
def train_freematch(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    return USBRun("freematch", data, cfg, ctx).fit()


@register_method("softmatch", VIEW_MODES, "SoftMatch (USB): truncated-Gaussian weights, distribution alignment",
                 config=SoftMatchConfig, label="SoftMatch")
def train_softmatch(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained:
    return USBRun("softmatch", data, cfg, ctx).fit()
