"""The shift vector dictionary (SVD, Eq. 12-14): what the pre-trained features of a modality look
like, kept as a few clusters of Gaussians and sampled ahead of time.

Fine-tuning adds a sampled shift to the fused feature (Eq. 15), so the classifier sees each labeled
pair displaced along directions the unlabeled data actually spans: a feature-space augmentation
drawn from all training images, not only the labeled ones.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.covariance import ledoit_wolf
from torch import nn

from benchmark.kit.data.loaders import to_tensor

from ..common import pooled


@torch.no_grad()
def extract_features(encoder: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Pooled features of uint8 images (n, H, W, 3) -> float64 (n, D), encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    feats = [pooled(encoder, to_tensor(images[i : i + batch_size], device)).double().cpu()
             for i in range(0, len(images), batch_size)]
    encoder.train(was_training)
    return torch.cat(feats).numpy()


def cluster_covariance(x: np.ndarray) -> np.ndarray:
    """Covariance of one cluster's features (n, D) -> (D, D) (Eq. 13).

    With no more samples than dimensions the sample covariance is singular (rank < D), so the
    Gaussian would only shift along the few directions the cluster happened to span; Ledoit-Wolf
    shrinkage towards a scaled identity (with its closed-form optimal weight) fixes that. With more
    samples than dimensions the paper's plain sample covariance is used."""
    if len(x) < 2:  # a lone member: no spread to estimate, its shifts are its feature
        return np.zeros((x.shape[1], x.shape[1]))
    if len(x) <= x.shape[1]:
        return ledoit_wolf(x)[0]
    return np.cov(x, rowvar=False)


def shift_dictionary(features: np.ndarray, clusters: int, samples: int, seed: int,
                     kmeans_init: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """K-means the features (n, D) into `clusters`; per cluster j, mean mu_j and covariance
    Sigma_j; draw `samples` shift vectors from N(mu_j, Sigma_j).

    -> dictionary (C, P, D) float32, means (C, D) float32."""
    kmeans = KMeans(n_clusters=clusters, n_init=kmeans_init, random_state=seed).fit(features)
    rng = np.random.default_rng(seed)
    shifts, means = [], []
    for j in range(clusters):
        members = features[kmeans.labels_ == j]
        mu = members.mean(0)
        # eigh handles the positive semi-definite covariances of tiny clusters.
        shifts.append(rng.multivariate_normal(mu, cluster_covariance(members), size=samples, method="eigh"))
        means.append(mu)
    return torch.as_tensor(np.stack(shifts), dtype=torch.float32), torch.as_tensor(np.stack(means), dtype=torch.float32)
