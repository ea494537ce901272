"""The typed keys of RFPMSS's `cfg.method`, declared next to its code."""
from __future__ import annotations

from pydantic import Field, model_validator

from benchmark.kit.schema import Section
from methods.schema import MethodConfig


class RFPMSSPretrainConfig(Section):
    share: float = Field(ge=0.0, lt=1.0, description="share of train.iterations for stage 1")
    lr: float | None = Field(gt=0.0, description="stage 1's peak lr; null: the profile's train.lr")


class ProjectionConfig(Section):
    heads: int | None = Field(ge=1, description="attention heads of the projection block; null: the backbone's")
    mlp_ratio: float | None = Field(gt=0.0, description="MLP ratio of the projection block; null: the backbone's")


class AnchorsConfig(Section):
    count: int = Field(ge=1, description="K: anchors per modality")
    selected: int = Field(ge=1, description="K': anchors each sample is assigned to (at most count)")
    damping: float = Field(gt=0.0, lt=1.0, description="mu: damping of the anchor updates")
    bank: int = Field(ge=1, description="memory bank of samples for Multi-SK; capped at the training pairs")
    epsilon: float = Field(gt=0.0, description="entropy weight of Multi-SK")
    sinkhorn_iterations: int = Field(ge=1, description="Sinkhorn iterations of Multi-SK")


class SSPCConfig(Section):
    weight: float = Field(ge=0.0, description="lambda_sspc (0: off)")
    alpha: float = Field(ge=0.0, description="alpha of Eq. 5")
    beta: float = Field(ge=0.0, description="beta of Eq. 5")
    temp: float = Field(gt=0.0, description="tau of sim(a, b)")
    cross_modal: bool = Field(description="cross-modal terms as well; false: within each modality only")


class NCEConfig(Section):
    weight: float = Field(ge=0.0, description="lambda_nce (0: off)")
    temp: float = Field(gt=0.0, description="kappa, temperature of the WLI-NBI contrast")


class RFPMSSConfig(MethodConfig):
    pretrain: RFPMSSPretrainConfig
    joint_dim: int = Field(ge=1, description="width of the joint space")
    projection: ProjectionConfig
    anchors: AnchorsConfig
    sspc: SSPCConfig
    nce: NCEConfig

    @model_validator(mode="after")
    def _selected_anchors(self) -> "RFPMSSConfig":
        if self.anchors.selected > self.anchors.count:
            raise ValueError(f"anchors.selected ({self.anchors.selected}) must be at most anchors.count "
                             f"({self.anchors.count})")
        return self
