"""Consistency-aware Momentum Heredity (CMH), HABIT's answer to *confirmation bias*: a fixed-momentum
teacher inherits the student's mistakes at the same rate whether the student is reliable or not.
CMH makes the inheritance rate depend on two signals of the current step,

    m_t = m * (1 - scale * m * sigmoid(d_t) * sigmoid(c_t)),

d_t: how far the student's normalisation parameters have moved from the teacher's (the authors' code
     takes the mean over BatchNorm layers of ||(gamma, beta)_student - (gamma, beta)_teacher||; a ViT
     has LayerNorms, which play the same role), and
c_t: the inconsistency between differently augmented views of the unlabeled batch (the mean
     cross-entropy of the strong views against the weak views' pseudo-labels).

The teacher is updated after every optimizer step with m_t instead of the fixed m."""
from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def norm_parameter_distance(student: nn.Module, teacher: nn.Module) -> float:
    """Mean over LayerNorm layers of the L2 distance between the two models' (weight, bias)."""
    pairs = [(s, t) for s, t in zip(student.modules(), teacher.modules()) if isinstance(s, nn.LayerNorm)]
    distances = [torch.sqrt(((s.weight - t.weight) ** 2).sum() + ((s.bias - t.bias) ** 2).sum() + 1e-6)
                 for s, t in pairs]
    return float(torch.stack(distances).mean())


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class ConsistencyAwareMomentumHeredity:
    """Keeps `teacher` an exponential moving average of `student` with the CMH momentum."""

    def __init__(self, student: nn.Module, teacher: nn.Module, momentum: float, scale: float):
        self.student, self.teacher, self.base, self.scale = student, teacher, momentum, scale
        self.consistency = 0.0  # c_t, set by the training step before the optimizer steps
        self.momentum = momentum  # the last m_t applied

    def coefficient(self, consistency: float) -> float:
        d = norm_parameter_distance(self.student, self.teacher)
        return self.base * (1.0 - self.scale * self.base * _sigmoid(d) * _sigmoid(consistency))

    @torch.no_grad()
    def update(self) -> None:
        self.momentum = self.coefficient(self.consistency)
        # One call over every tensor (a fused kernel on CUDA), each tensor as `lerp_` computes it.
        torch._foreach_lerp_(list(self.teacher.parameters()), [p.detach() for p in self.student.parameters()],
                             1.0 - self.momentum)
        buffers = list(self.teacher.buffers())
        if buffers:  # the foreach ops refuse empty lists
            torch._foreach_copy_(buffers, list(self.student.buffers()))
