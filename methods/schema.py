"""The typed keys of every method's `cfg["method"]` section: type, allowed range and meaning.

A method is registered with its class here (`register_method(..., config=FixMatchConfig)`), and
`benchmark.harness.config` checks the section against it when a cell's config is built. The values themselves,
each beside its source (the paper, USB's config files, the authors' code), are the top level of the
method's YAML (`configs/methods/<name>.yaml`): so every field here is required, and a YAML that
misses or misspells a key is refused with the key's name. See `benchmark.kit.schema` for why pydantic.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from benchmark.kit.contract import MODES
from benchmark.kit.schema import Section, TimeConstants, TrainOverlay


class MethodConfig(Section):
    """Keys every method has: set by the harness from the grid cell, never by a YAML."""

    name: str = Field(description="registered method name")
    mode: Literal[MODES] = Field(description="single | multi | fused")
    time_constants: list[TimeConstants] = Field([], description="its time constants (benchmark/kit/budget.py)")


# ------------------------------------------------------------------------------------------ USB


class USBConfig(MethodConfig):
    """Keys shared by the USB baselines; they reach semilearn unchanged (methods/usb/adapter.py)."""

    T: float = Field(gt=0.0, description="sharpening / soft pseudo-label temperature")
    ulb_loss_ratio: float = Field(ge=0.0, description="lambda_u, weight of the unlabeled loss")
    use_cat: bool = Field(description="one forward over the concatenated batch (USB: true; same gradients)")


class FixMatchConfig(USBConfig):
    hard_label: bool = Field(description="one-hot pseudo-labels")
    p_cutoff: float = Field(ge=0.0, le=1.0, description="fixed confidence threshold")


class FlexMatchConfig(FixMatchConfig):
    thresh_warmup: bool = Field(description="count unused unlabeled images in the learning effect")


class DashConfig(USBConfig):
    gamma: float = Field(gt=1.0, description="rho = C * gamma^-k * rho_init")
    C: float = Field(gt=0.0, description="constant of the rho schedule")
    rho_min: float = Field(ge=0.0, description="floor of the dynamic loss threshold")
    rho_update_every: int = Field(ge=1, description="iterations between updates of rho (budget-scaled)")
    num_wu_iter: int = Field(ge=0, description="supervised warm-up steps, counted inside train.iterations")


class FreeMatchConfig(USBConfig):
    hard_label: bool = Field(description="one-hot pseudo-labels")
    ema_p: float = Field(ge=0.0, lt=1.0, description="momentum of the self-adaptive threshold and class histograms")
    ent_loss_ratio: float = Field(ge=0.0, description="weight of the self-adaptive fairness term")
    use_quantile: bool = Field(description="quantile instead of mean for the local thresholds")
    clip_thresh: bool = Field(description="clip the global threshold")


class SoftMatchConfig(USBConfig):
    hard_label: bool = Field(description="one-hot pseudo-labels")
    dist_align: bool = Field(description="uniform distribution alignment")
    dist_uniform: bool = Field(description="align to the uniform distribution")
    per_class: bool = Field(description="one truncated Gaussian per class instead of one for all")
    ema_p: float = Field(ge=0.0, lt=1.0, description="momentum of the Gaussian's mean/variance and p_model")
    n_sigma: int = Field(ge=1, description="width of the truncated Gaussian, in standard deviations")


# -------------------------------------------------------------------------------- HABIT, SIAVC


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


# ---------------------------------------------------------------------------------------- MICS


class ConsistencyConfig(Section):
    embed_dim: int = Field(ge=1, description="projection width of the contrastive heads")
    momentum: float = Field(ge=0.0, lt=1.0, description="momentum encoders' EMA")
    queue_size: int = Field(ge=1, description="negatives kept; at most the training pairs")
    temp: float = Field(gt=0.0, description="initial temperature (learnable, clamped to [0.001, 0.5])")
    alpha: float = Field(ge=0.0, le=1.0, description="weight of the momentum distillation targets")
    alpha_ramp_epochs: float = Field(ge=0.0, description="alpha ramps up linearly over these epochs")


class ReconstructiveConfig(Section):
    mask_ratio: float = Field(ge=0.0, lt=1.0, description="share of patches hidden")
    loss: Literal["image", "masked"] = Field(description="image: L2 over the whole image | masked: hidden patches")
    decoder_dim: int = Field(ge=1, description="decoder width")
    decoder_depth: int = Field(ge=1, description="decoder blocks")
    decoder_heads: int = Field(ge=1, description="decoder attention heads")
    decoder_mlp_ratio: float = Field(gt=0.0, description="decoder MLP ratio")


class AlignedConfig(Section):
    embed_dim: int = Field(ge=1, description="width of the aligned (high-dimensional) space")
    temp: float = Field(gt=0.0, description="temperature of the alignment loss")


class PretrainConfig(Section):
    epochs: float = Field(gt=0.0, description="stage 1 epochs over every training pair")
    batch_size: int = Field(ge=1, description="pairs per step")
    lr: float = Field(gt=0.0, description="AdamW peak learning rate")
    min_lr: float = Field(ge=0.0, description="end of the cosine decay")
    weight_decay: float = Field(ge=0.0, description="AdamW weight decay")
    warmup_epochs: float = Field(ge=0.0, description="linear warm-up, in epochs")
    a_dis: float = Field(ge=0.0, description="weight of the consistency loss (0: off)")
    a_res: float = Field(ge=0.0, description="weight of the reconstruction loss (0: off)")
    a_a: float = Field(ge=0.0, description="weight of the alignment loss (0: off)")
    a_adv: float = Field(ge=0.0, description="weight of the adversarial loss (0: off)")
    consistency: ConsistencyConfig
    reconstructive: ReconstructiveConfig
    aligned: AlignedConfig


class DictionaryConfig(Section):
    samples: int = Field(ge=1, description="P: shift vectors per class")
    kmeans_init: int = Field(ge=1, description="K-means restarts")


class FinetuneConfig(Section):
    nbi: bool = Field(description="NBI encoder and fusion encoder (Table IV)")
    svd: bool = Field(description="shifted features (Eq. 15; needs nbi)")
    tmc: bool = Field(description="trusted multi-view classification (needs nbi)")
    centred_shifts: bool = Field(description="add s - mu_j instead of s as sampled")
    fusion_depth: int = Field(ge=1, description="fusion encoder layers")
    fusion_heads: int | None = Field(ge=1, description="fusion attention heads; null: the backbone's")
    fusion_mlp_ratio: float = Field(gt=0.0, description="fusion MLP ratio")
    kl_anneal: float = Field(ge=0.0, le=1.0, description="TMC's KL weight ramps up over this share of the steps")
    epochs: float | None = Field(gt=0.0, description="epochs over the labeled pairs; null: train.iterations")
    train: TrainOverlay = Field(description="laid over the profile's train section")


class MICSConfig(MethodConfig):
    pretrain: PretrainConfig
    dictionary: DictionaryConfig
    finetune: FinetuneConfig


# ----------------------------------------------------------------------------------- CMC, RFPMSS


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
