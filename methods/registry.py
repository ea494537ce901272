"""The method registry: a name maps to a `train` function and the modes it runs in.

    @register_method("fixmatch", modes=("single", "multi"), description="...")
    def train(data: SemiSupervisedSplit, cfg: dict, ctx: RunContext) -> Trained: ...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from benchmark.errors import unknown_name

MODES = ("single", "multi", "fused")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    train: Callable
    modes: tuple[str, ...]
    description: str
    family: str  # module family, e.g. "usb", "bounds", "mics"
    fixed_labels: float | None = None  # e.g. 100 for a fully supervised bound: one cell, any ratio
    group: str = "table2"  # `--method all` runs group "table2"; `--method ablations` group "ablation"
    # (cfg, split) -> {stage: iterations} of one run: the budgets its `time_constants` scale to
    stages: Callable[[dict, Any], dict[str, int]] | None = None

    def stage_iterations(self, cfg: dict, split: Any) -> dict[str, int]:
        if self.stages is not None:
            return self.stages(cfg, split)
        return {"train": int(cfg["train"]["iterations"])}


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    modes: tuple[str, ...],
    description: str,
    fixed_labels: float | None = None,
    group: str = "table2",
    stages: Callable[[dict, Any], dict[str, int]] | None = None,
) -> Callable[[Callable], Callable]:
    """Register `train` under `name`; the module's last dotted part is its family. `stages` gives the
    iterations of each stage of a run when it has more than the one `train` stage (`benchmark.budget`)."""
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"method {name}: unknown mode {mode!r}")

    def decorator(train: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        family = train.__module__.split(".")[1] if "." in train.__module__ else train.__module__
        _REGISTRY[name] = MethodSpec(name, train, tuple(modes), description, family, fixed_labels, group, stages)
        return train

    return decorator


def get_method(name: str) -> MethodSpec:
    if name not in _REGISTRY:
        raise unknown_name("method", name, _REGISTRY)
    return _REGISTRY[name]


GROUPS = ("table2", "ablation")


def list_methods(group: str | None = None) -> list[MethodSpec]:
    return [s for s in _REGISTRY.values() if group is None or s.group == group]
