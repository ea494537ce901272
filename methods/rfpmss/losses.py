"""RFPMSS's losses as pure functions of tensors, so each can be checked by hand.

Multi-SK (Algorithm 1, Eq. 1-3): every sample gets K' of the K anchors and every anchor is given to
N K'/K samples. The K x N x K plan P' has one channel per rank: within a channel each sample takes one
anchor (rows sum to 1) and each anchor N/K samples (columns sum to N/K); over the channels each
(sample, anchor) pair is used once. The first K' channels score with the similarities X, the others
with damping * X, so a sample's most similar anchors settle in the first K' channels, and their sum
is the multi-anchor assignment P (N, K).

SSPC (Eq. 5-6): the anchor assignments of a modality's input-space feature and of a joint-space
feature must predict each other (binary cross-entropy with logits against Multi-SK's assignment).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def multi_sinkhorn(scores: torch.Tensor, selected: int, damping: float, epsilon: float,
                   iterations: int) -> torch.Tensor:
    """Multi-assignment Sinkhorn-Knopp.

    scores: (N, K) sample-anchor similarities X; selected: K'; damping: mu in (0, 1); epsilon: the
    entropy weight 1/lambda (smaller: harder assignments) -> P (N, K): rows sum to K', columns to N K'/K."""
    n, k = scores.shape
    if not 0 < selected <= k:
        raise ValueError(f"K' = {selected} must be in [1, K = {k}]")
    scale = torch.full((k, 1, 1), float(damping), device=scores.device)
    scale[:selected] = 1.0
    logits = scale * scores.float().unsqueeze(0) / epsilon  # (K channels, N samples, K anchors)
    plan = (logits - logits.amax()).exp()  # Sinkhorn's scaling, on exp(X' / epsilon)
    for _ in range(iterations):
        plan /= plan.sum(2, keepdim=True)  # a channel's row: one anchor per sample
        plan *= (n / k) / plan.sum(1, keepdim=True)  # a channel's column: N/K samples
        plan /= plan.sum(0, keepdim=True)  # over the channels: each pair once
    return plan[:selected].sum(0).to(scores.dtype)


def anchor_logits(features: torch.Tensor, anchors: torch.Tensor, temp: float) -> torch.Tensor:
    """log sim(a, z) = cos(a, z) / temp: (N, D) features, (K, D) anchors -> (N, K)."""
    return F.normalize(features, dim=1) @ F.normalize(anchors, dim=1).t() / temp


def assignment_consistency(logits_in: torch.Tensor, target_in: torch.Tensor, logits_joint: torch.Tensor,
                           target_joint: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Eq. 5: alpha g(sim(m, z_m), M(sim(n^, z^_m))) + beta g(sim(n^, z^_m), M(sim(m, z_m))), g the
    binary cross-entropy with logits. Each space's logits (N, K) learn the other space's Multi-SK
    assignment (N, K), which carries no gradient."""
    return (alpha * F.binary_cross_entropy_with_logits(logits_in, target_joint)
            + beta * F.binary_cross_entropy_with_logits(logits_joint, target_in))
