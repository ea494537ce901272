"""RFPMSS's networks: the two modality encoders, each modality's projection into the joint space, the
anchors of both spaces with their memory banks (stage 1), and the view fusion with its classifier
(stage 2).

    g_m = E_m(x_m) pooled                      (N, D)  input space (the frozen encoder's feature)
    g^_m = f_m(E_m(x_m) tokens)                (N, E)  joint space
    z_m (K, D), z^_m (K, E)                            learnable anchors of modality m
    v = [a_w g^_w, a_n g^_n], a = softmax(MLP([g^_w, g^_n]))   (N, 2E)  fused feature -> classifier
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from benchmark.kit.contract import Batch
from benchmark.kit.distributed import all_gather

from ..mics.losses import info_nce
from .config import AnchorsConfig, NCEConfig, ProjectionConfig, SSPCConfig
from .losses import anchor_logits, assignment_consistency, multi_sinkhorn

MODALITIES = ("wli", "nbi")


class JointProjection(nn.Module):
    """f_m: one transformer block over a modality's tokens, pooled, then a linear map to the joint width."""

    def __init__(self, dim: int, joint_dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.block = Block(dim, heads, mlp_ratio)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, joint_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, E)."""
        return self.proj(self.norm(self.block(tokens)).mean(1))


class ViewFusion(nn.Module):
    """The paper's view fusion: an MLP scores each view from their concatenation, the softmax of the
    scores weighs the views, and the weighted views are concatenated."""

    def __init__(self, joint_dim: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(2 * joint_dim, joint_dim), nn.GELU(), nn.Linear(joint_dim, 2))

    def forward(self, g_w: torch.Tensor, g_n: torch.Tensor) -> torch.Tensor:
        """(N, E) each -> (N, 2E)."""
        weights = self.score(torch.cat([g_w, g_n], dim=1)).softmax(1)  # (N, 2)
        return torch.cat([weights[:, :1] * g_w, weights[:, 1:] * g_n], dim=1)


class MemoryBank(nn.Module):
    """The last `size` detached features of one modality in one space, a ring buffer (buffers: saved
    and restored with the checkpoint). Multi-SK runs on the batch and the bank together, so its
    per-anchor quota N K'/K holds over more samples than one batch."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def with_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, dim) -> (N + filled, dim): the batch first."""
        return torch.cat([batch.detach().to(self.features.dtype), self.features[: int(self.filled)]])

    @torch.no_grad()
    def push(self, batch: torch.Tensor) -> None:
        size = len(self.features)
        if size == 0:
            return
        batch = all_gather(batch.detach())[-size:]  # under torchrun: every process's share, in rank order
        rows = (self.ptr + torch.arange(len(batch), device=batch.device)) % size
        self.features[rows] = batch.to(self.features.dtype)
        self.ptr.copy_((self.ptr + len(batch)) % size)
        self.filled.copy_(torch.clamp(self.filled + len(batch), max=size))


class AnchorSpaces(nn.Module):
    """Stage 1: the anchors of both spaces and both modalities, trained with the projections (shared
    with `RFPMSSClassifier`) by L = w_sspc L_sspc + w_nce L_nce on frozen encoder features.

    acfg, sspc, nce: the method's `anchors`, `sspc` and `nce` sections (`cfg.method.anchors`, ...); bank: each
    memory bank's size."""

    def __init__(self, projections: nn.ModuleDict, dim: int, joint_dim: int, acfg: AnchorsConfig, sspc: SSPCConfig,
                 nce: NCEConfig, bank: int):
        super().__init__()
        self.projections, self.acfg, self.sspc, self.nce = projections, acfg, sspc, nce
        # Anchors and banks only with SSPC on: every trained parameter gets a gradient (DDP needs it).
        k = acfg.count if sspc.weight > 0 else 0
        self.anchors_in = nn.ParameterDict({m: nn.Parameter(torch.empty(k, dim)) for m in MODALITIES if k})
        self.anchors_joint = nn.ParameterDict({m: nn.Parameter(torch.empty(k, joint_dim)) for m in MODALITIES if k})
        for p in [*self.anchors_in.values(), *self.anchors_joint.values()]:
            trunc_normal_(p, std=0.02)
        self.banks = nn.ModuleDict({f"{space}_{m}": MemoryBank(bank, width) for m in MODALITIES if k
                                    for space, width in (("in", dim), ("joint", joint_dim))})

    def assign(self, features: torch.Tensor, anchors: torch.Tensor, bank: MemoryBank) -> torch.Tensor:
        """M(sim(features, anchors)) for the batch's rows, computed over batch + bank: (N, D) -> (N, K)."""
        a = self.acfg
        scores = F.normalize(bank.with_batch(features), dim=1) @ F.normalize(anchors.detach(), dim=1).t()
        plan = multi_sinkhorn(scores, a.selected, a.damping, a.epsilon, a.sinkhorn_iterations)
        return plan[: len(features)]

    def sspc_loss(self, g_in: dict[str, torch.Tensor], g_joint: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 6 over two modalities: L(m, n^, z_m, z^_m) for every m and, with `cross_modal`, every n
        (else n = m only)."""
        temp, total = self.sspc.temp, 0.0
        for m in MODALITIES:
            logits_in = anchor_logits(g_in[m], self.anchors_in[m], temp)  # (N, K)
            target_in = self.assign(g_in[m], self.anchors_in[m], self.banks[f"in_{m}"])
            for n in MODALITIES if self.sspc.cross_modal else (m,):
                logits_joint = anchor_logits(g_joint[n], self.anchors_joint[m], temp)
                target_joint = self.assign(g_joint[n], self.anchors_joint[m], self.banks[f"joint_{n}"])
                total = total + assignment_consistency(logits_in, target_in, logits_joint, target_joint,
                                                       self.sspc.alpha, self.sspc.beta)
        return total

    def forward_loss(self, tokens_w: torch.Tensor, tokens_n: torch.Tensor, g_w: torch.Tensor,
                     g_n: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frozen encoder outputs of N pairs: tokens (N, T, D), pooled features (N, D) -> {"loss", ...}."""
        g_in = {"wli": g_w, "nbi": g_n}
        g_joint = {"wli": self.projections["wli"](tokens_w), "nbi": self.projections["nbi"](tokens_n)}
        out, loss = {}, 0.0
        if self.sspc.weight > 0:
            out["l_sspc"] = self.sspc_loss(g_in, g_joint)
            loss = loss + self.sspc.weight * out["l_sspc"]
        if self.nce.weight > 0:
            out["l_nce"] = info_nce(g_joint["wli"], g_joint["nbi"], self.nce.temp)
            loss = loss + self.nce.weight * out["l_nce"]
        for m in MODALITIES if self.banks else ():
            self.banks[f"in_{m}"].push(g_in[m])
            self.banks[f"joint_{m}"].push(g_joint[m])
        out["loss"] = loss
        return out


class RFPMSSClassifier(nn.Module):
    """The fine-tuned predictor: `predict` is the classifier on the fused joint features of the pair,
    `embed` the fused feature v (N, 2E). pcfg: the method's `projection` section (`cfg.method.projection`)."""

    def __init__(self, enc_w: nn.Module, enc_n: nn.Module, num_classes: int, joint_dim: int, pcfg: ProjectionConfig):
        super().__init__()
        dim = enc_w.num_features
        heads = pcfg.heads or enc_w.blocks[0].attn.num_heads  # an int either way
        mlp_ratio = pcfg.mlp_ratio or enc_w.blocks[0].mlp.fc1.out_features / dim  # a float either way
        self.encoders = nn.ModuleDict({"wli": enc_w, "nbi": enc_n})
        self.projections = nn.ModuleDict({m: JointProjection(dim, joint_dim, heads, mlp_ratio)
                                          for m in MODALITIES})
        self.fusion = ViewFusion(joint_dim)
        self.head = nn.Linear(2 * joint_dim, num_classes)

    def features(self, x_w: torch.Tensor, x_n: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pairs -> v (N, 2E)."""
        g = [self.projections[m](self.encoders[m].forward_features(x)) for m, x in zip(MODALITIES, (x_w, x_n))]
        return self.fusion(*g)

    def forward_loss(self, x_w: torch.Tensor, x_n: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 2: cross-entropy on the labeled pairs."""
        loss = F.cross_entropy(self.head(self.features(x_w, x_n)), y)
        return {"loss": loss, "l_ce": loss.detach()}

    def predict(self, batch: Batch) -> torch.Tensor:
        return self.head(self.features(batch["wli"], batch["nbi"]))

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.features(batch["wli"], batch["nbi"])
