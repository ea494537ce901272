"""The arrays that flow from the data layer to the methods."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KVASIR_CLASSES: tuple[str, ...] = (
    "normal-z-line",
    "normal-pylorus",
    "normal-cecum",
    "esophagitis",
    "polyps",
    "ulcerative-colitis",
)


@dataclass(frozen=True)
class RawDataset:
    """A whole paired dataset, decoded once: every image at the same size, uint8 HWC RGB."""

    wli: np.ndarray  # (N, H, W, 3) uint8
    nbi: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64, index into `classes`
    classes: tuple[str, ...]
    sources: tuple[str, ...]  # per image: file path, or "synthetic:<i>"

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.wli.shape != self.nbi.shape or len(self.wli) != n or len(self.sources) != n:
            raise ValueError(
                f"inconsistent dataset arrays: wli {self.wli.shape}, nbi {self.nbi.shape}, "
                f"{n} labels, {len(self.sources)} sources"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class PairedArrays:
    """One part of a split: paired images, labels (-1 where hidden) and their dataset indices."""

    wli: np.ndarray  # (n, H, W, 3) uint8
    nbi: np.ndarray  # (n, H, W, 3) uint8
    labels: np.ndarray  # (n,) int64; -1 for unlabeled data
    index: np.ndarray  # (n,) int64, position in the RawDataset

    def __len__(self) -> int:
        return len(self.index)


@dataclass(frozen=True)
class SemiSupervisedSplit:
    """What a method trains on. Unlabeled labels are hidden (-1) so no method can peek."""

    dataset: str
    classes: tuple[str, ...]
    labels_percent: float
    labeled: PairedArrays
    unlabeled: PairedArrays
    val: PairedArrays
    test: PairedArrays

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def train_index(self) -> np.ndarray:
        """Dataset indices of every training pair, labeled or not, once each, in dataset order."""
        return np.union1d(self.labeled.index, self.unlabeled.index)

    def sizes(self) -> dict[str, int]:
        """Pairs per part (`train`: every training pair once): what a run's stage budgets depend on."""
        return {"train": len(self.train_index), "labeled": len(self.labeled), "val": len(self.val),
                "test": len(self.test)}

    @property
    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every training pair in dataset order, labeled or not, once each (labeled pairs may also be in
        the unlabeled part): the same arrays at every label ratio, so label-free pre-training does not
        depend on the ratio."""
        index = np.concatenate([self.labeled.index, self.unlabeled.index])
        _, first = np.unique(index, return_index=True)  # sorted by dataset index, one row per pair
        return (np.concatenate([self.labeled.wli, self.unlabeled.wli])[first],
                np.concatenate([self.labeled.nbi, self.unlabeled.nbi])[first])
