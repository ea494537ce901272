"""MICS's fine-tuning model: the pre-trained encoders, a cross-attention fusion encoder f_M, feature
shifts drawn from the shift vector dictionary (Eq. 15) and trusted multi-view classification (TMC).

    z_w = f_theta(x_w), z_n = f_phi(x_n), z_f = f_M(tokens_w, tokens_n)
    L = CE(cls(z_f)) + CE(cls(z_f + s_w)) + CE(cls(z_f + s_n))          (L_f, with the SVD)
      + TMC(alpha_w) + TMC(alpha_n)                                       (L_wn)
      + TMC(alpha_f) + TMC(alpha_w (+) alpha_n (+) alpha_f)               (L_fuse)

Switches (Table IV): `nbi` (off: WLI encoder and classifier only), `svd`, `tmc`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from benchmark.kit.contract import Batch

from .config import FinetuneConfig
from .losses import ds_combine, evidential_loss


class CrossAttentionBlock(nn.Module):
    """ALBEF's fusion layer: self-attention over one modality's tokens, cross-attention from them
    to the other modality's tokens, then an MLP (pre-norm residuals throughout)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2, self.norm_ctx, self.norm3 = (nn.LayerNorm(dim) for _ in range(4))
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) queries; context: (N, T', D) keys and values -> (N, T, D)."""
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        ctx = self.norm_ctx(context)
        x = x + self.cross_attn(self.norm2(x), ctx, ctx, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class FusionEncoder(nn.Module):
    """f_M: WLI tokens attend to NBI tokens and NBI tokens to WLI tokens, layer by layer; the fused
    feature is the mean of the two class tokens, so neither modality is the privileged query."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.blocks_w = nn.ModuleList(CrossAttentionBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.blocks_n = nn.ModuleList(CrossAttentionBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens_w: torch.Tensor, tokens_n: torch.Tensor) -> torch.Tensor:
        """(N, T, D) each, class token first -> z_f (N, D)."""
        for block_w, block_n in zip(self.blocks_w, self.blocks_n):
            tokens_w, tokens_n = block_w(tokens_w, tokens_n), block_n(tokens_n, tokens_w)
        return self.norm((tokens_w[:, 0] + tokens_n[:, 0]) / 2)


class MICSClassifier(nn.Module):
    """The fine-tuned predictor. `predict` is the combined TMC opinion when TMC is on, else cls(z_f)
    (cls(z_w) without the NBI branch); `embed` is z_f (z_w without the NBI branch)."""

    def __init__(self, enc_w: nn.Module, enc_n: nn.Module | None, num_classes: int, fcfg: FinetuneConfig,
                 dictionary: dict[str, torch.Tensor] | None):
        super().__init__()
        self.fcfg = fcfg
        dim = enc_w.num_features
        self.enc_w, self.enc_n = enc_w, enc_n
        self.cls = nn.Linear(dim, num_classes)
        if enc_n is not None:
            heads = fcfg.fusion_heads or enc_w.blocks[0].attn.num_heads
            self.fusion = FusionEncoder(dim, fcfg.fusion_depth, heads, fcfg.fusion_mlp_ratio)
        if fcfg.svd:
            # Buffers: saved with the model, moved with it, never trained.
            for name in ("wli", "nbi"):
                shifts = dictionary[name]
                if fcfg.centred_shifts:
                    shifts = shifts - dictionary[f"{name}_mean"].unsqueeze(1)
                self.register_buffer(f"shifts_{name}", shifts.float())  # (C', P, D)
        if fcfg.tmc:
            self.evidence = nn.ModuleDict({k: nn.Sequential(nn.Linear(dim, num_classes), nn.Softplus())
                                           for k in ("wli", "nbi", "fused")})

    def probed_heads(self) -> list[tuple[nn.Linear, Callable[[Batch], torch.Tensor]]]:
        """Every linear classifier and the feature it reads, for `benchmark.kit.probe`: cls on z_f, and with TMC
        each view's evidence layer on its own feature."""
        def feature(name: str) -> Callable[[Batch], torch.Tensor]:
            return lambda batch: self.forward_features(batch["wli"], batch["nbi"])[name]

        heads = [(self.cls, feature("fused"))]
        if self.fcfg.tmc:
            heads += [(self.evidence[k][0], feature(k)) for k in ("wli", "nbi", "fused")]
        return heads

    @property
    def head(self) -> str:
        """Which head predicts, for the run record."""
        return "tmc" if self.fcfg.tmc else ("fused" if self.enc_n is not None else "wli")

    def forward_features(self, x_w: torch.Tensor, x_n: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) pairs -> {"wli": z_w, "nbi": z_n, "fused": z_f}, each (N, D)."""
        tokens_w = self.enc_w.forward_features(x_w)  # (N, T, D)
        z = {"wli": self.enc_w.forward_head(tokens_w, pre_logits=True)}
        if self.enc_n is None:
            z["fused"] = z["wli"]
            return z
        tokens_n = self.enc_n.forward_features(x_n)
        z["nbi"] = self.enc_n.forward_head(tokens_n, pre_logits=True)
        z["fused"] = self.fusion(tokens_w, tokens_n)
        return z

    def alphas(self, z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Dirichlet parameters alpha = evidence + 1 of each view and of their combination, (N, C) each."""
        alpha = {k: self.evidence[k](z[k]) + 1 for k in ("wli", "nbi", "fused")}
        alpha["combined"] = ds_combine(ds_combine(alpha["wli"], alpha["nbi"]), alpha["fused"])
        return alpha

    def sample_shifts(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image, a random cluster and a random sample of each modality's dictionary -> (N, D) x 2."""
        out = []
        for shifts in (self.shifts_wli, self.shifts_nbi):
            clusters, samples, _ = shifts.shape
            j = torch.randint(clusters, (n,), generator=generator).to(shifts.device)
            p = torch.randint(samples, (n,), generator=generator).to(shifts.device)
            out.append(shifts[j, p])
        return out[0], out[1]

    def forward_loss(self, x_w: torch.Tensor, x_n: torch.Tensor, y: torch.Tensor, kl_weight: float,
                     generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One labeled batch -> {"loss", "l_f", and "l_wn", "l_fuse" with TMC}."""
        z = self.forward_features(x_w, x_n)
        l_f = F.cross_entropy(self.cls(z["fused"]), y)
        if self.fcfg.svd:
            s_w, s_n = self.sample_shifts(len(y), generator)
            l_f = l_f + F.cross_entropy(self.cls(z["fused"] + s_w), y) + F.cross_entropy(self.cls(z["fused"] + s_n), y)
        out = {"l_f": l_f}
        if self.fcfg.tmc:
            alpha = self.alphas(z)
            out["l_wn"] = evidential_loss(alpha["wli"], y, kl_weight) + evidential_loss(alpha["nbi"], y, kl_weight)
            out["l_fuse"] = evidential_loss(alpha["fused"], y, kl_weight) + evidential_loss(alpha["combined"], y, kl_weight)
        out["loss"] = sum(out.values())
        return out

    def predict(self, batch: Batch) -> torch.Tensor:
        """(N, C) logits: log expected class probabilities alpha / S of the combined opinion, or cls(z_f)."""
        z = self.forward_features(batch["wli"], batch["nbi"])
        if self.fcfg.tmc:
            alpha = self.alphas(z)["combined"]
            return (alpha / alpha.sum(1, keepdim=True)).log()
        return self.cls(z["fused"])

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.forward_features(batch["wli"], batch["nbi"])["fused"]
