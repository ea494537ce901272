"""The keys every method's `cfg.method` section has; each family declares its own keys next to its code
(`methods/<family>/config.py`, a subclass of `MethodConfig`: type, allowed range and meaning).

A method is registered with its class (`register_method(..., config=FixMatchConfig)`), and
`benchmark.harness.config` checks the section against it when a cell's config is built. The values themselves,
each beside its source (the paper, USB's config files, the authors' code), are the top level of the
method's YAML (`configs/methods/<name>.yaml`): so every field here is required, and a YAML that
misses or misspells a key is refused with the key's name. See `benchmark.kit.schema` for why pydantic.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from benchmark.kit.contract import MODES
from benchmark.kit.schema import Section, TimeConstants


class MethodConfig(Section):
    """Keys every method has: set by the harness from the grid cell, never by a YAML."""

    name: str = Field(description="registered method name")
    mode: Literal[MODES] = Field(description="single | multi | fused")
    time_constants: list[TimeConstants] = Field([], description="its time constants (benchmark/kit/budget.py)")
