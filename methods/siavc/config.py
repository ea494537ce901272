"""The typed keys of SIAVC's `cfg.method` (SAB, CAM, the self-adaptive threshold), declared next to its code."""
from __future__ import annotations

from pydantic import Field

from benchmark.kit.schema import Section
from methods.schema import MethodConfig


class SABConfig(Section):
    history: int = Field(ge=1, description="losses kept per sample")
    mask_prob: float = Field(ge=0.0, le=1.0, description="share of patches masked")
    noise_std: float = Field(ge=0.0, description="noise on the 0-255 pixel scale")


class CAMConfig(Section):
    confidence: float = Field(ge=0.0, le=1.0, description="pool threshold for unlabeled samples")
    alpha: float = Field(gt=0.0, description="mixing ratio ~ Beta(alpha, alpha)")
    hidden: list[int] = Field(min_length=1, description="discriminator layer widths")


class SIAVCConfig(MethodConfig):
    T: float = Field(gt=0.0, description="pseudo-label temperature")
    lambda_u: float = Field(ge=0.0, description="weight of the unlabeled loss")
    lambda_fairness: float = Field(ge=0.0, description="weight of FreeMatch's fairness term")
    sat_momentum: float = Field(ge=0.0, lt=1.0, description="EMA factor of the self-adaptive threshold")
    sab: SABConfig
    cam: CAMConfig
