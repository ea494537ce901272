"""Health of a run, so that a method failing as designed is visible in the reports and not hidden in a number:

- unlabeled mask rate: the mean mask weight of the unlabeled samples over the last tenth of the run (a
  binary mask gives the share of pseudo-labels used; SoftMatch's soft weights their mean weight);
- pseudo-label accuracy: the accuracy of those pseudo-labels, weighted by the mask, against the withheld
  true labels. The harness holds those labels; they reach no method and no loss: diagnosis only (the
  controls, `methods.controls`, excepted: they are made of them);
- the same accuracy over every pseudo-label, masked or not (`pseudo_label_acc_all`): beside the first it
  shows what the mask selects. A collapsed model's pseudo-labels are all one class, right for a sixth of
  the images; a mask that keeps mostly other classes' images puts the first figure far below that
  (docs/protocol.md §3: FreeMatch multi);
- collapsed: one class takes more than 80 % of the test predictions.

A method reports its pseudo-labels by returning `"pseudo_labels": (idx, mask, pseudo)` from its training
step (`PseudoLabels`); methods without a mask report nothing, and their rates are null."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

COLLAPSE_SHARE = 0.8
WINDOW = 0.1  # the last tenth of the run


class PseudoLabels(NamedTuple):
    """One step's unlabeled batch: dataset-local indices into the unlabeled part (n,), mask weights in
    [0, 1] (n,), and pseudo-labels as class indices (n,) or class probabilities (n, C)."""

    idx: torch.Tensor
    mask: torch.Tensor
    pseudo: torch.Tensor


class PseudoLabelMonitor:
    """Accumulates mask weight and mask-weighted correct pseudo-labels over the last tenth of a run."""

    def __init__(self, truth: np.ndarray):
        self.truth = torch.as_tensor(np.asarray(truth), dtype=torch.long)  # true labels of the unlabeled part
        self.totals: dict[str, float | torch.Tensor] = {"samples": 0.0, "mask": 0.0, "correct": 0.0, "correct_all": 0.0}

    def observe(self, it: int, iterations: int, labels: PseudoLabels) -> dict[str, torch.Tensor]:
        """Count step `it` of `iterations` when it is in the window; returns this step's rates for curves.

        Everything stays on the device of the step's tensors (the labels follow them there once): the
        totals and rates are device scalars, read on the host only when the loop logs or saves, so no
        step waits for the device. Sums are float64, as the totals were when they were Python floats."""
        idx = labels.idx.detach().long()
        if self.truth.device != idx.device:
            self.truth = self.truth.to(idx.device)
        mask = labels.mask.detach().float().reshape(-1)
        pseudo = labels.pseudo.detach()
        pseudo = (pseudo.argmax(1) if pseudo.dim() == 2 else pseudo).long()
        correct = (pseudo == self.truth[idx]).float()
        step = {"mask": mask.sum().double(), "correct": (mask * correct).sum().double(),
                "correct_all": correct.sum().double(), "samples": float(len(idx))}
        if it >= iterations - max(1, round(WINDOW * iterations)):
            for key, value in step.items():
                self.totals[key] = self.totals[key] + value
        return {"mask_rate": step["mask"] / max(1.0, step["samples"]),
                "pseudo_label_acc": torch.where(step["mask"] > 0, 100.0 * step["correct"] / step["mask"], torch.nan)}

    def summary(self) -> dict[str, float | None]:
        t = self.state_dict()
        if t["samples"] == 0:
            return {"unlabeled_mask_rate": None, "pseudo_label_acc": None, "pseudo_label_acc_all": None}
        return {"unlabeled_mask_rate": round(t["mask"] / t["samples"], 4),
                "pseudo_label_acc": round(100.0 * t["correct"] / t["mask"], 2) if t["mask"] > 0 else None,
                "pseudo_label_acc_all": round(100.0 * t.get("correct_all", 0.0) / t["samples"], 2)}

    def state_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.totals.items()}

    def load_state_dict(self, state: dict) -> None:
        self.totals = dict(state)


def collapsed(predictions: np.ndarray, num_classes: int) -> bool:
    """Whether one class takes more than COLLAPSE_SHARE of `predictions`."""
    counts = np.bincount(np.asarray(predictions), minlength=num_classes)
    return bool(counts.max() > COLLAPSE_SHARE * max(1, len(predictions)))
