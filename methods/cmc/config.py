"""The typed keys of CMC's `cfg.method`, declared next to its code."""
from __future__ import annotations

from pydantic import Field

from benchmark.kit.schema import Section
from methods.schema import MethodConfig


class CMCLossConfig(Section):
    weight: float = Field(ge=0.0, description="weight of the loss (0: off)")


class CACConfig(CMCLossConfig):
    contrast_weight: float = Field(ge=0.0, description="weight of the contrast against the batch's other pairs")
    temp: float = Field(gt=0.0, description="temperature of the contrast over Dice similarities")


class MIAConfig(Section):
    enabled: bool = Field(description="false: the fused feature is the mean of the two pooled features")
    depth: int = Field(ge=1, description="attention blocks over both modalities' tokens")
    heads: int | None = Field(ge=1, description="attention heads; null: the backbone's")
    mlp_ratio: float | None = Field(gt=0.0, description="MLP ratio; null: the backbone's")


class CMCConfig(MethodConfig):
    warmup_share: float = Field(ge=0.0, lt=1.0, description="share of train.iterations for the encoders' warm-up")
    csc: CMCLossConfig
    cac: CACConfig
    mia: MIAConfig
