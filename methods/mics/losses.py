"""The losses of MICS, as pure functions of tensors so each can be checked by hand.

Pre-training: consistency learning (ALBEF's image-text contrastive loss, here WLI-NBI, with momentum
targets and queues of negatives) and aligned learning (symmetric InfoNCE over the batch).
Fine-tuning: trusted multi-view classification (TMC, Han et al., TPAMI 2022): Dirichlet opinions,
their reduced Dempster-Shafer combination, and the evidential loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def consistency_targets(sim_m: torch.Tensor, alpha: float) -> torch.Tensor:
    """Soft targets of one direction: `alpha * softmax(momentum similarities) + (1 - alpha) * identity`.

    The momentum model's own view of which keys match softens the one-hot target, so near-duplicate
    negatives (common among endoscopy images) are not pushed away as hard as true negatives.
    sim_m: (N, N + Q) momentum similarities, the positive of row i in column i -> (N, N + Q)."""
    hard = torch.zeros_like(sim_m)
    hard.fill_diagonal_(1.0)
    return alpha * F.softmax(sim_m, dim=1) + (1.0 - alpha) * hard


def consistency_loss(
    feat_w: torch.Tensor,
    feat_n: torch.Tensor,
    feat_w_m: torch.Tensor,
    feat_n_m: torch.Tensor,
    queue_w: torch.Tensor,
    queue_n: torch.Tensor,
    temp: torch.Tensor | float,
    alpha: float,
) -> torch.Tensor:
    """L_dis: symmetric WLI->NBI and NBI->WLI contrastive loss against momentum keys and queues.

    feat_*: (N, E) L2-normalised online projections; feat_*_m: (N, E) momentum projections;
    queue_*: (E, Q) earlier momentum projections (the negatives beyond the batch)."""
    keys_w = torch.cat([feat_w_m.t(), queue_w], dim=1)  # (E, N + Q)
    keys_n = torch.cat([feat_n_m.t(), queue_n], dim=1)  # (E, N + Q)
    with torch.no_grad():
        targets_w2n = consistency_targets(feat_w_m @ keys_n / temp, alpha)  # (N, N + Q)
        targets_n2w = consistency_targets(feat_n_m @ keys_w / temp, alpha)
    loss_w2n = -(F.log_softmax(feat_w @ keys_n / temp, dim=1) * targets_w2n).sum(1).mean()
    loss_n2w = -(F.log_softmax(feat_n @ keys_w / temp, dim=1) * targets_n2w).sum(1).mean()
    return (loss_w2n + loss_n2w) / 2


def info_nce(z_w: torch.Tensor, z_n: torch.Tensor, temp: float) -> torch.Tensor:
    """L_a (Eq. 7-8): symmetric InfoNCE with cosine similarity; pair i is the positive of row i.

    z_w, z_n: (N, D) embeddings (normalised here)."""
    logits = F.normalize(z_w, dim=1) @ F.normalize(z_n, dim=1).t() / temp  # (N, N)
    target = torch.arange(len(z_w), device=z_w.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def opinion(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Subjective-logic opinion of a Dirichlet: beliefs b = e / S (N, C) and uncertainty u = C / S (N, 1)."""
    strength = alpha.sum(1, keepdim=True)  # S, (N, 1)
    return (alpha - 1) / strength, alpha.shape[1] / strength


def ds_combine(alpha_1: torch.Tensor, alpha_2: torch.Tensor) -> torch.Tensor:
    """TMC's reduced Dempster-Shafer rule: two Dirichlets (N, C) -> the combined Dirichlet (N, C).

    Agreeing beliefs reinforce, a confident view outweighs an uncertain one, and the mass the two
    views put on different classes (the conflict) is renormalised away."""
    b1, u1 = opinion(alpha_1)
    b2, u2 = opinion(alpha_2)
    outer = b1.unsqueeze(2) * b2.unsqueeze(1)  # (N, C, C): b1_i * b2_j
    conflict = outer.sum((1, 2)) - outer.diagonal(dim1=1, dim2=2).sum(1)  # (N,)
    scale = (1 - conflict).unsqueeze(1)  # (N, 1)
    belief = (b1 * b2 + b1 * u2 + b2 * u1) / scale
    uncertainty = u1 * u2 / scale
    strength = alpha_1.shape[1] / uncertainty
    return belief * strength + 1


def kl_to_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """KL(Dir(alpha) || Dir(1)) per row, (N, C) -> (N,)."""
    strength = alpha.sum(1)
    num_classes = alpha.shape[1]
    log_norm = torch.lgamma(strength) - torch.lgamma(alpha).sum(1) - torch.lgamma(alpha.new_tensor(float(num_classes)))
    return ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(strength).unsqueeze(1))).sum(1) + log_norm


def evidential_loss(alpha: torch.Tensor, target: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """TMC's loss of one opinion: cross-entropy expected under Dir(alpha), plus a KL term that pulls
    the evidence of wrong classes towards the uniform Dirichlet (annealed in by `kl_weight`).

    alpha: (N, C); target: (N,) class indices -> scalar."""
    one_hot = F.one_hot(target, alpha.shape[1]).to(alpha.dtype)
    strength = alpha.sum(1, keepdim=True)
    expected_ce = (one_hot * (torch.digamma(strength) - torch.digamma(alpha))).sum(1)
    wrong_only = (alpha - 1) * (1 - one_hot) + 1  # the true class's evidence is not penalised
    return (expected_ce + kl_weight * kl_to_uniform(wrong_only)).mean()
