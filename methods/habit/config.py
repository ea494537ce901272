"""The typed keys of HABIT's `cfg.method` (MRNet, RFC, CMH), declared next to its code."""
from __future__ import annotations

from pydantic import Field, field_validator

from benchmark.kit.schema import Section
from methods.schema import MethodConfig


class MRNetConfig(Section):
    window: int = Field(ge=1, description="patch neighbourhood of the convolution path")


class RFCConfig(Section):
    alignment_queue: int = Field(ge=1, description="batches of the distribution alignment")
    band: list[float] = Field(min_length=2, max_length=2, description="confidence band of the cosine consistency")
    weight: float = Field(ge=0.0, description="weight of the compensated-feature loss")

    @field_validator("band")
    @classmethod
    def _band(cls, value: list[float]) -> list[float]:
        if not 0.0 <= value[0] <= value[1] <= 1.0:
            raise ValueError("allowed: [low, high] with 0 <= low <= high <= 1")
        return value


class CMHConfig(Section):
    momentum: float = Field(ge=0.0, lt=1.0, description="base momentum of the teacher's EMA")
    scale: float = Field(ge=0.0, description="how much disagreement lowers the teacher's momentum")


class HABITConfig(MethodConfig):
    threshold: float = Field(ge=0.0, le=1.0, description="pseudo-label confidence threshold")
    lambda_u: float = Field(ge=0.0, description="weight of the unlabeled loss")
    mrnet: MRNetConfig
    rfc: RFCConfig
    cmh: CMHConfig
