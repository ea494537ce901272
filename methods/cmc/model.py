"""CMC's networks: two modality-specific encoders, the modality-independent awareness (MIA) fusion
and three classifiers (WLI, NBI, fused).

    tokens_w = E_w(x_w), tokens_n = E_n(x_n)                        (N, T, D) each, class token first
    z_w, z_n = pooled tokens                                        (N, D)
    z_f = MIA(tokens_w, tokens_n)                                   (N, D), the fused feature
    logits: cls_w(z_w), cls_n(z_n), cls_f(z_f)                      cls_f is the prediction
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from benchmark.kit.contract import Batch

from ..common import pooled
from .config import CMCConfig
from .losses import cac_loss, csc_loss

BRANCHES = ("wli", "nbi", "fused")


class MIAFusion(nn.Module):
    """Modality-independent awareness: self-attention over the two modalities' tokens together (each
    marked by a learned modality embedding), a modality attention that weighs the two pooled results,
    then the fusion layer on the weighted pair."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.modality = nn.Parameter(torch.zeros(2, 1, dim))  # (2, 1, D): added to every token of a modality
        trunc_normal_(self.modality, std=0.02)
        self.mixer = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))  # not "blocks": a method module, full lr
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 2))
        self.fuse = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.LayerNorm(dim))

    def forward(self, tokens_w: torch.Tensor, tokens_n: torch.Tensor) -> torch.Tensor:
        """(N, T, D) each -> z_f (N, D)."""
        t = tokens_w.shape[1]
        x = torch.cat([tokens_w + self.modality[0], tokens_n + self.modality[1]], dim=1)  # (N, 2T, D)
        x = self.norm(self.mixer(x))
        h_w, h_n = x[:, :t].mean(1), x[:, t:].mean(1)  # (N, D) each
        weights = self.score(torch.cat([h_w, h_n], dim=1)).softmax(1)  # (N, 2): attention over modalities
        return self.fuse(torch.cat([weights[:, :1] * h_w, weights[:, 1:] * h_n], dim=1))


class ModalityBranches(nn.Module):
    """Stage 1 of the staged training: each encoder with its own classifier on its own modality's
    labeled images; the fusion is not built into the graph yet. Shares its modules with `CMCClassifier`."""

    def __init__(self, enc_w: nn.Module, enc_n: nn.Module, cls_w: nn.Module, cls_n: nn.Module):
        super().__init__()
        self.enc_w, self.enc_n, self.cls_w, self.cls_n = enc_w, enc_n, cls_w, cls_n

    def forward_loss(self, x_w: torch.Tensor, x_n: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        l_w = F.cross_entropy(self.cls_w(pooled(self.enc_w, x_w)), y)
        l_n = F.cross_entropy(self.cls_n(pooled(self.enc_n, x_n)), y)
        return {"loss": l_w + l_n, "l_sup_wli": l_w.detach(), "l_sup_nbi": l_n.detach()}


class CMCClassifier(nn.Module):
    """The trained predictor: `predict` is cls_f(z_f), `embed` is z_f (both modalities of the pair).

    mcfg: the method's settings (`cfg.method`: its `csc`, `cac`, `mia` sections are read)."""

    def __init__(self, enc_w: nn.Module, enc_n: nn.Module, num_classes: int, mcfg: CMCConfig):
        super().__init__()
        self.mcfg = mcfg
        dim = enc_w.num_features
        self.enc_w, self.enc_n = enc_w, enc_n
        self.heads = nn.ModuleDict({k: nn.Linear(dim, num_classes) for k in BRANCHES})
        mia = mcfg.mia
        self.fusion = None
        if mia.enabled:
            heads = mia.heads or enc_w.blocks[0].attn.num_heads  # an int either way
            mlp_ratio = mia.mlp_ratio or enc_w.blocks[0].mlp.fc1.out_features / dim  # a float either way
            self.fusion = MIAFusion(dim, mia.depth, heads, mlp_ratio)

    def probed_heads(self) -> list[tuple[nn.Linear, Callable[[Batch], torch.Tensor]]]:
        """Each branch's classifier and the feature it reads, for `benchmark.kit.probe`."""
        pooled = {"wli": lambda batch: self.enc_w.forward_head(self.enc_w.forward_features(batch["wli"]), pre_logits=True),
                  "nbi": lambda batch: self.enc_n.forward_head(self.enc_n.forward_features(batch["nbi"]), pre_logits=True),
                  "fused": self.features}
        return [(self.heads[k], pooled[k]) for k in BRANCHES]

    def branches(self) -> ModalityBranches:
        return ModalityBranches(self.enc_w, self.enc_n, self.heads["wli"], self.heads["nbi"])

    def fuse(self, tokens_w: torch.Tensor, tokens_n: torch.Tensor) -> torch.Tensor:
        """(N, T, D) each -> z_f (N, D); without MIA the mean of the two pooled features."""
        if self.fusion is None:
            return (self.enc_w.forward_head(tokens_w, pre_logits=True)
                    + self.enc_n.forward_head(tokens_n, pre_logits=True)) / 2
        return self.fusion(tokens_w, tokens_n)

    def forward_loss(self, x_w: torch.Tensor, x_n: torch.Tensor, y: torch.Tensor,
                     u_w: torch.Tensor, u_n: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 2, one step: labeled pairs (x_w, x_n, y) and unlabeled pairs (u_w, u_n), (N, 3, H, W)
        -> {"loss", "l_sup", and "l_csc", "l_cac" when on}.

        L = sum_b CE(cls_b) over the labeled pairs  +  w_csc CSC(all pairs)  +  w_cac CAC(unlabeled pairs)."""
        n = len(y)
        tokens_w = self.enc_w.forward_features(torch.cat([x_w, u_w]))  # (N + M, T, D)
        tokens_n = self.enc_n.forward_features(torch.cat([x_n, u_n]))
        z = {"wli": self.enc_w.forward_head(tokens_w, pre_logits=True),
             "nbi": self.enc_n.forward_head(tokens_n, pre_logits=True),
             "fused": self.fuse(tokens_w[:n], tokens_n[:n])}
        logits = {k: self.heads[k](v) for k, v in z.items()}
        out = {"l_sup": sum(F.cross_entropy(logits[k][:n], y) for k in BRANCHES)}
        loss = out["l_sup"]
        csc, cac = self.mcfg.csc, self.mcfg.cac
        if csc.weight > 0:
            prefix = self.enc_w.num_prefix_tokens
            out["l_csc"] = csc_loss(tokens_w[:, prefix:], tokens_n[:, prefix:])
            loss = loss + csc.weight * out["l_csc"]
        if cac.weight > 0:
            terms = cac_loss(logits["wli"][n:].softmax(1), logits["nbi"][n:].softmax(1), cac.temp,
                             cac.contrast_weight)
            out["l_cac"] = terms["agree"] + cac.contrast_weight * terms.get("contrast", 0.0)
            out.update({f"l_cac_{k}": v.detach() for k, v in terms.items()})
            loss = loss + cac.weight * out["l_cac"]
        out["loss"] = loss
        return out

    def features(self, batch: Batch) -> torch.Tensor:
        return self.fuse(self.enc_w.forward_features(batch["wli"]), self.enc_n.forward_features(batch["nbi"]))

    def predict(self, batch: Batch) -> torch.Tensor:
        """(N, C) logits of the fused classifier."""
        return self.heads["fused"](self.features(batch))

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.features(batch)

