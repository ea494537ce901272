"""The typed keys of MICS's `cfg.method` (pre-training, shift vector dictionary, fine-tuning), declared
next to its code: `cfg.method.pretrain.consistency.momentum`, `cfg.method.finetune.train` (a `TrainOverlay`:
only the keys it sets dump, laid over `cfg.train`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from benchmark.kit.schema import Section, TrainOverlay
from methods.schema import MethodConfig


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
