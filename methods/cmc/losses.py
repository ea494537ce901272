"""CMC's two consistency losses as pure functions of tensors, so each can be checked by hand.

CSC (channel-wise semantic consistency): channel c of the WLI feature map and channel c of the NBI
feature map, each a vector over the patch positions, should point the same way.
CAC (contrastive anatomical-similar consistency), adapted to classification: the two modalities'
class-probability vectors of an unlabeled pair should agree (soft Dice, the paper's similarity of
segmentation maps), and agree more with each other than with the other pairs of the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def csc_loss(feat_a: torch.Tensor, feat_b: torch.Tensor) -> torch.Tensor:
    """Mean over samples and channels of 1 - cos(F_a[:, c], F_b[:, c]).

    feat_a, feat_b: (N, T, C) token maps of the two modalities (T positions, C channels)."""
    cos = F.cosine_similarity(feat_a, feat_b, dim=1)  # (N, C): per channel, over the T positions
    return (1 - cos).mean()


def dice_matrix(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft Dice similarity of every row of p with every row of q: 2 <p_i, q_j> / (|p_i|^2 + |q_j|^2).

    p: (N, C), q: (M, C) class-probability vectors -> (N, M) in [0, 1]."""
    overlap = p @ q.t()  # (N, M)
    norms = p.square().sum(1, keepdim=True) + q.square().sum(1).unsqueeze(0)  # (N, M)
    return 2 * overlap / (norms + eps)


def cac_loss(prob_a: torch.Tensor, prob_b: torch.Tensor, temp: float,
             contrast_weight: float) -> dict[str, torch.Tensor]:
    """{"agree": mean 1 - Dice(p_a^i, p_b^i), "contrast": symmetric InfoNCE over Dice(p_a^i, p_b^j) / temp}.

    prob_a, prob_b: (N, C) class probabilities of the two modalities of N unlabeled pairs. The
    contrastive term is computed only when its weight is above 0."""
    dice = dice_matrix(prob_a, prob_b)  # (N, N), pair i on the diagonal
    out = {"agree": (1 - dice.diagonal()).mean()}
    if contrast_weight > 0:
        target = torch.arange(len(dice), device=dice.device)
        logits = dice / temp
        out["contrast"] = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    return out
