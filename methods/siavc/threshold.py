"""The pseudo-labelling base of SIAVC's code: FreeMatch's self-adaptive threshold and fairness term.

The authors' SIAVC.py keeps a global confidence level (EMA of the batch's mean top probability) and a
class-wise one (EMA of the mean class probabilities); a pseudo-label of class c counts when its
confidence reaches global * local[c] / max(local). It also adds FreeMatch's fairness term on the
selected strong views with weight 0.01. Two slips of that code are not reproduced (see
docs/habit_siavc.md): its global update adds the EMA factor itself instead of the previous level, which
pins the threshold near 1, and its class-wise update reads only the batch's first sample."""
from __future__ import annotations

import torch


class SelfAdaptiveThreshold:
    """State: the global level `tau`, the class-wise mean probabilities `p_model` and the histogram of
    predicted classes `label_hist`, all EMAs with factor `momentum`, all starting uniform."""

    def __init__(self, num_classes: int, momentum: float, device: torch.device):
        self.momentum = momentum
        self.p_model = torch.full((num_classes,), 1.0 / num_classes, device=device)
        self.label_hist = torch.full((num_classes,), 1.0 / num_classes, device=device)
        self.tau = torch.tensor(1.0 / num_classes, device=device)

    @torch.no_grad()
    def __call__(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the levels with the weak-view probabilities, then (mask (n,) float, pseudo-labels (n,))."""
        m = self.momentum
        scores, pseudo = probs.max(1)
        self.tau = m * self.tau + (1 - m) * scores.mean()
        self.p_model = m * self.p_model + (1 - m) * probs.mean(0)
        hist = torch.bincount(pseudo, minlength=probs.shape[1]).float()
        self.label_hist = m * self.label_hist + (1 - m) * hist / hist.sum()
        threshold = self.tau * self.p_model / self.p_model.max()
        return (scores >= threshold[pseudo]).float(), pseudo

    def fairness(self, strong_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """FreeMatch's fairness term on the selected strong views: the cross term between the
        histogram-normalised mean prediction of the batch and that of the whole run so far."""
        selected = strong_logits[mask.bool()]
        if len(selected) == 0:
            return strong_logits.new_zeros(())
        probs = selected.softmax(1)
        hist = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).float()
        batch_mean = probs.mean(0) * torch.nan_to_num(1.0 / (hist / hist.sum()), posinf=0.0)
        run_mean = self.p_model * torch.nan_to_num(1.0 / self.label_hist, posinf=0.0)
        batch_mean, run_mean = batch_mean / batch_mean.sum(), run_mean / run_mean.sum()
        return (run_mean * torch.log(batch_mean + 1e-12)).sum()

    def state_dict(self) -> dict:
        return {"tau": self.tau.cpu(), "p_model": self.p_model.cpu(), "label_hist": self.label_hist.cpu()}

    def load_state_dict(self, state: dict) -> None:
        device = self.p_model.device
        self.tau, self.p_model, self.label_hist = (state[k].to(device) for k in ("tau", "p_model", "label_hist"))
