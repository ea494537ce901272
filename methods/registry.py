"""The method registry: a name maps to a `train` function, the modes it runs in, the typed schema of its
`cfg.method` section and what a cell of it costs.

    @register_method("fixmatch", modes=("single", "multi"), description="...", config=FixMatchConfig)
    def train(data: SemiSupervisedSplit, cfg: RunConfig, ctx: RunContext) -> Trained: ...

`cost` says what a cell runs beyond one training loop, so that the runner (budget scaling), the executors and
`perf` never name a method: its training loops (`Stage`) and their iterations, which of them cells share
through a cache, and supervised warm-up steps inside the budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from benchmark.kit.contract import MODES
from benchmark.kit.errors import unknown_name
from benchmark.kit.schema import RunConfig

from .schema import MethodConfig

# The simplest method, single mode: `perf` times the runner's own work on one of its cells, and a supervised
# warm-up inside another method's budget (`Cost.warmup`) at its step time.
REFERENCE = "supervised"
Sizes = dict[str, int]  # "train", "labeled", "val", "test": images of a cell's split


def _train_iterations(cfg: RunConfig, sizes: Sizes) -> int:
    return cfg.train.iterations


def _train_eval_every(cfg: RunConfig) -> int:
    return cfg.train.eval_every


def _no_warmup(cfg: RunConfig) -> int:
    return 0


def _shorten_train(cfg: RunConfig, steps: int, n_train: int) -> RunConfig:
    cfg = cfg.model_copy(deep=True)
    cfg.train.iterations = steps
    cfg.train.eval_every = steps
    return cfg


@dataclass(frozen=True)
class Stage:
    """One training loop of a cell, named as its `TrainingLoop` (the `RunContext.progress` hook's name)."""

    loop: str
    iterations: Callable[[RunConfig, Sizes], int] = _train_iterations  # (cfg, split sizes) -> steps
    eval_every: Callable[[RunConfig], int] | None = _train_eval_every  # None: the loop never validates
    # Cells whose configs give equal keys share one run of this stage through a cache (computed by the first);
    # None: every cell runs it.
    shared_key: Callable[[RunConfig], str] | None = None
    extra: str | None = None  # a once-per-run figure of the method beyond the steps, e.g. "dictionary_s"


@dataclass(frozen=True)
class Cost:
    """What a cell of a method runs: its stages in order (the last trains the evaluated model), supervised
    warm-up steps counted inside the last stage's iterations and followed by one validation (Dash), and the
    config of a short measured run of `steps` steps per stage (`perf`)."""

    stages: tuple[Stage, ...] = (Stage("train"),)
    warmup: Callable[[RunConfig], int] = _no_warmup
    shorten: Callable[[RunConfig, int, int], RunConfig] = _shorten_train  # (cfg, steps, training pairs) -> cfg


@dataclass(frozen=True)
class MethodSpec:
    name: str
    train: Callable
    modes: tuple[str, ...]
    description: str
    family: str  # module family, e.g. "usb", "bounds", "mics"
    fixed_labels: float | None = None  # e.g. 100 for a fully supervised bound: one cell, any ratio
    group: str = "table2"  # `--method all` runs group "table2"; `--method ablations` group "ablation"
    config: type[MethodConfig] = MethodConfig  # the schema of cfg.method
    cost: Cost = field(default_factory=Cost)
    unlabeled: bool = True  # draws unlabeled batches (false: the supervised bounds)
    uses_unlabeled: bool = True  # needs unlabeled images: a ratio that leaves none is refused before the grid
    # (setting, row label) of each row of the paper's ablation tables it reproduces (benchmark/reports/reference.py)
    paper_rows: tuple[tuple[str, str], ...] = ()
    label: str = ""  # the name tables and figures print (the paper's spelling); the registry name if empty

    def describe(self) -> dict:
        """What a record says of its method, so that reports need no registry: display label, family, group."""
        return {"label": self.label or self.name, "family": self.family, "group": self.group,
                "description": self.description, "paper_rows": [list(row) for row in self.paper_rows]}

    def stage_iterations(self, cfg: RunConfig, sizes: Sizes) -> dict[str, int]:
        """Iterations of each stage of one run on a split of `sizes` (`SemiSupervisedSplit.sizes()`): the
        budgets its `time_constants` scale to (`benchmark.kit.budget`); `train` is the profile's `train.iterations`
        unless a stage of that name declares its own (CMC's and RFPMSS's stages share the profile's)."""
        return {"train": cfg.train.iterations,
                **{stage.loop: stage.iterations(cfg, sizes) for stage in self.cost.stages}}


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    modes: tuple[str, ...],
    description: str,
    fixed_labels: float | None = None,
    group: str = "table2",
    config: type[MethodConfig] = MethodConfig,
    cost: Cost | None = None,
    unlabeled: bool = True,
    uses_unlabeled: bool = True,
    paper_rows: tuple[tuple[str, str], ...] = (),
    label: str = "",
) -> Callable[[Callable], Callable]:
    """Register `train` under `name`; the module's last dotted part is its family."""
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"method {name}: unknown mode {mode!r}")

    def decorator(train: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        family = train.__module__.split(".")[1] if "." in train.__module__ else train.__module__
        _REGISTRY[name] = MethodSpec(name, train, tuple(modes), description, family, fixed_labels, group, config,
                                     cost or Cost(), unlabeled, uses_unlabeled, tuple(paper_rows), label)
        return train

    return decorator


def get_method(name: str) -> MethodSpec:
    if name not in _REGISTRY:
        raise unknown_name("method", name, _REGISTRY)
    return _REGISTRY[name]


def list_methods(group: str | None = None) -> list[MethodSpec]:
    return [s for s in _REGISTRY.values() if group is None or s.group == group]
