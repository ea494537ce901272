"""One rule for every time constant defined in iterations: it keeps its share of the run.

A method's sources define its momenta, warm-ups and update intervals for their own budget (USB's usb_cv
runs 204,800 iterations, SIAVC's code 20,000, ...). Run unchanged on a budget of a few hundred
iterations, a momentum of 0.999 (a horizon of 1,000 iterations) never moves its statistic, and a warm-up
of 2,048 iterations never ends. So every such value is declared with the budget it was defined for, in the
method's YAML:

    time_constants:
      - {stage: train, reference: 204800, keys: [ema_p]}

(a profile declares its own, e.g. the learning-rate warm-up, in a top-level `time_constants` block whose
keys are dotted paths from the config's root), and the runner scales each to the iterations of its stage
in this run, once, before the method starts:

- a momentum m (a float in (0, 1)) has the horizon h = 1 / (1 - m) iterations; h becomes
  h * iterations / reference (at least 1 iteration), i.e. m' = 1 - 1 / max(1, h * iterations / reference);
- an iteration count n becomes round(n * iterations / reference), at least 1.

Both keep the constant's share of the run, so a run of any length sees the schedule its source saw. The
scaled values replace the declared ones in the config the method gets and the record stores, and
`budget.scaled` in that config lists every change."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from benchmark.kit.errors import ConfigError
from benchmark.kit.schema import RunConfig


def scale_momentum(momentum: float, reference: int, iterations: int) -> float:
    horizon = 1.0 / (1.0 - momentum)
    return 1.0 - 1.0 / max(1.0, horizon * iterations / reference)


def scale_count(count: int, reference: int, iterations: int) -> int:
    return max(1, round(count * iterations / reference))


def scale_value(value: Any, reference: int, iterations: int) -> Any:
    """A momentum or an iteration count, scaled from `reference` iterations to `iterations`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"time constant {value!r} is neither a momentum nor an iteration count")
    if isinstance(value, int):
        return scale_count(value, reference, iterations) if value > 0 else value
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"time constant {value!r}: a momentum must be in [0, 1)")
    return scale_momentum(value, reference, iterations) if value > 0 else value


def apply(cfg: RunConfig, stage_iterations: dict[str, int]) -> RunConfig:
    """A copy of `cfg` whose time constants (the profile's and `method.time_constants`) are scaled to
    `stage_iterations` (stage -> iterations of this run), with the changes listed in its `budget`."""
    out = cfg.model_copy(deep=True)
    changes = {}
    declared = [(out, "", group) for group in out.time_constants]
    declared += [(out.method, "method.", group) for group in out.method.time_constants]
    for root, prefix, group in declared:
        if group.stage not in stage_iterations:
            raise ConfigError(f"time_constants of {out.method.name}: unknown stage '{group.stage}'; "
                              f"valid: {', '.join(stage_iterations)}")
        iterations = int(stage_iterations[group.stage])
        for key in group.keys:
            node, leaf = _parent(root, key, prefix)
            old = getattr(node, leaf)
            setattr(node, leaf, scale_value(old, group.reference, iterations))
            changes[prefix + key] = {"declared": old, "scaled": getattr(node, leaf), "reference": group.reference,
                                     "iterations": iterations}
    out.budget = {"rule": "benchmark/kit/budget.py: each constant keeps its share of its stage",
                  "stages": dict(stage_iterations), "scaled": changes}
    return out


def _parent(root: BaseModel, dotted: str, prefix: str) -> tuple[BaseModel, str]:
    """(the section under `root` holding the last part of `dotted`, that part)."""
    node, parts = root, dotted.split(".")
    for part in parts[:-1]:
        node = getattr(node, part, None)
    if not isinstance(node, BaseModel) or parts[-1] not in type(node).model_fields:
        raise ConfigError(f"time_constants: no key '{prefix}{dotted}' in the config")
    return node, parts[-1]
