"""The five USB baselines of Table II. Each is semilearn's own algorithm class (its hooks and
`train_step`), run by `USBRun`; hyper-parameters live in configs/methods/<name>.yaml."""
from __future__ import annotations

from benchmark.contract import RunContext, Trained
from benchmark.data.types import SemiSupervisedSplit

from ..registry import register_method
from .adapter import USBRun

MODES = ("single", "multi")  # multi: the strong view is the paired NBI image


@register_method("fixmatch", MODES, "FixMatch (USB): fixed confidence threshold 0.95")
def train_fixmatch(data: SemiSupervisedSplit, cfg: dict, ctx: RunContext) -> Trained:
    return USBRun("fixmatch", data, cfg, ctx).fit()


@register_method("flexmatch", MODES, "FlexMatch (USB): class-wise curriculum thresholds")
def train_flexmatch(data: SemiSupervisedSplit, cfg: dict, ctx: RunContext) -> Trained:
    return USBRun("flexmatch", data, cfg, ctx).fit()


@register_method("dash", MODES, "Dash (USB): dynamic loss threshold after a supervised warm-up")
def train_dash(data: SemiSupervisedSplit, cfg: dict, ctx: RunContext) -> Trained:
    return USBRun("dash", data, cfg, ctx).fit()


@register_method("freematch", MODES, "FreeMatch (USB): self-adaptive thresholds and fairness term")
def train_freematch(data: SemiSupervisedSplit, cfg: dict, ctx: RunContext) -> Trained:
    return USBRun("freematch", data, cfg, ctx).fit()


@register_method("softmatch", MODES, "SoftMatch (USB): truncated-Gaussian weights, distribution alignment")
def train_softmatch(data: SemiSupervisedSplit, cfg: dict, ctx: RunContext) -> Trained:
    return USBRun("softmatch", data, cfg, ctx).fit()
