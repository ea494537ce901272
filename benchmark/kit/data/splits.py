"""One stratified train/val/test split per dataset and seed; nested labeled subsets per ratio."""
from __future__ import annotations

import numpy as np

from benchmark.kit.errors import ConfigError


def check_ratio(percent: float) -> float:
    percent = float(percent)
    if not 0 < percent <= 100:
        raise ConfigError(f"label ratio {percent:g} is outside (0, 100]")
    return percent


def split_indices(labels: np.ndarray, ratios: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices: each class is cut in the same proportions."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or min(ratios) <= 0:
        raise ConfigError(f"data.split must be three positive numbers, got {list(ratios)}")
    total = sum(ratios)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng([seed, 0])
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(members) * ratios[1] / total))
        n_test = int(round(len(members) * ratios[2] / total))
        n_train = len(members) - n_val - n_test
        parts["train"].extend(members[:n_train])
        parts["val"].extend(members[n_train : n_train + n_val])
        parts["test"].extend(members[n_train + n_val :])
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in parts.items()}


def labeled_indices(
    train: np.ndarray, labels: np.ndarray, percent: float, seed: int, classes: tuple[str, ...]
) -> np.ndarray:
    """The labeled part of `train` at `percent`, stratified.

    Each class keeps one fixed order per seed and a ratio takes a prefix of it, so 5% lies inside
    10% inside 30% inside 50%. A class that would get no labeled image is an error, not a silent 0."""
    percent = check_ratio(percent)
    rng = np.random.default_rng([seed, 1])
    chosen = []
    for c, name in enumerate(classes):
        members = rng.permutation(train[labels[train] == c])
        take = int(round(len(members) * percent / 100.0))
        if take == 0:
            raise ConfigError(
                f"label ratio {percent:g}% leaves class '{name}' with no labeled image "
                f"({len(members)} training images)"
            )
        chosen.extend(members[:take])
    return np.sort(np.asarray(chosen, dtype=np.int64))
