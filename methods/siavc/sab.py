"""Super Augmentation Block (SAB): a strongly augmented sample the model already fits well teaches it
little, so SAB augments it further. Each unlabeled sample keeps the history of its unsupervised loss;
an Otsu split of that history into a low-loss and a high-loss class decides, per sample and step,
whether its latest loss is in the low class ("well learned"); if so its strong view gets Gaussian
noise and random masking on top of the usual strong augmentation.

Video to image: SIAVC masks within each frame of a clip; here the units are the backbone's image
patches (the tokens a ViT sees, as frames are the units of a clip): each patch is blacked out with
probability `mask_prob`, then every pixel gets N(0, noise_std^2) noise and is clipped to [0, 255]."""
from __future__ import annotations

from typing import NamedTuple

import torch

from benchmark.kit.ahead import MadeAhead
from benchmark.kit.data.loaders import normalisation, step_generator


def otsu_thresholds(values: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the Otsu threshold of its valid values: the split value t (low class: values <= t)
    that maximises the between-class variance w_low * w_high * (mean_low - mean_high)^2.

    values, valid: (B, H). Returns (thresholds (B,), has_split (B,)); a row whose valid values are
    all equal, or fewer than two, has no split."""
    v = values.unsqueeze(1)  # (B, 1, H): every value, compared with ...
    t = values.unsqueeze(2)  # (B, H, 1): ... every candidate threshold
    low = (v <= t) & valid.unsqueeze(1)
    high = (v > t) & valid.unsqueeze(1)
    n_low, n_high = low.sum(2).float(), high.sum(2).float()
    mean_low = (v * low).sum(2) / n_low.clamp(min=1)
    mean_high = (v * high).sum(2) / n_high.clamp(min=1)
    n = valid.sum(1, keepdim=True).float().clamp(min=1)
    between = (n_low / n) * (n_high / n) * (mean_low - mean_high) ** 2
    between = torch.where(valid & (n_low > 0) & (n_high > 0), between, torch.full_like(between, -1.0))
    best, arg = between.max(1)
    return values.gather(1, arg[:, None]).squeeze(1), best > 0


def _generator_on(device: torch.device, generator: torch.Generator) -> torch.Generator:
    """`generator` itself where it lives on `device`; elsewhere a generator on `device` seeded from it, so
    an image-sized draw is made where the images are (no host draw and copy per step) and stays a
    function of the step's seed."""
    if generator.device == device:
        return generator
    return torch.Generator(device).manual_seed(int(torch.randint(2**63 - 1, (), generator=generator)))


class Reaugmentation(NamedTuple):
    keep: torch.Tensor  # (n, 1, H, W): 1.0 on the pixels of the patches that stay, else 0.0
    noise: torch.Tensor  # (n, 3, H, W): N(0, noise_std^2) on the 0-255 pixel scale


class SuperAugmentationBlock:
    """Per-sample loss histories (the last `history` losses of each unlabeled sample) and the
    re-augmentation they trigger."""

    def __init__(self, num_unlabeled: int, history: int, mask_prob: float, noise_std: float, patch: int,
                 device: torch.device):
        self.losses = torch.zeros(num_unlabeled, history, device=device)
        self.counts = torch.zeros(num_unlabeled, dtype=torch.long, device=device)
        self.mask_prob, self.noise_std, self.patch = mask_prob, noise_std, patch

    def select(self, idx: torch.Tensor) -> torch.Tensor:
        """Boolean (n,): samples whose latest loss falls in the low-loss class of their own history."""
        width = self.losses.shape[1]
        counts = self.counts[idx]
        valid = torch.arange(width, device=idx.device)[None, :] < counts[:, None].clamp(max=width)
        thresholds, has_split = otsu_thresholds(self.losses[idx], valid)
        latest = self.losses[idx, (counts - 1).clamp(min=0) % width]
        return has_split & (latest <= thresholds)

    def record(self, idx: torch.Tensor, losses: torch.Tensor) -> None:
        """Append this step's unsupervised loss of each sample to its history (a ring buffer)."""
        self.losses[idx, self.counts[idx] % self.losses.shape[1]] = losses.detach().float()
        self.counts[idx] += 1

    def draw(self, shape: torch.Size, generator: torch.Generator, device: torch.device) -> Reaugmentation:
        """The random part of a step's re-augmentation of images of `shape` (n, 3, H, W): which patches stay,
        and the noise. A function of `generator` alone (the step's), so it can be made before the step."""
        n, _, h, w = shape
        keep = (torch.rand(n, 1, h // self.patch, w // self.patch, generator=generator) >= self.mask_prob).to(device)
        keep = keep.repeat_interleave(self.patch, 2).repeat_interleave(self.patch, 3).float()
        noise = torch.randn(shape, generator=_generator_on(device, generator), device=device) * self.noise_std
        return Reaugmentation(keep, noise)

    def augment(self, x: torch.Tensor, selected: torch.Tensor, drawn: Reaugmentation) -> torch.Tensor:
        """x: normalised (n, 3, H, W); the selected images get `drawn`'s patch masking and noise, and clipping."""
        mean, std = normalisation(x.device)
        heavy = x * std  # then in place: ((x * std + mean) * 255 * keep + noise) clipped, normalised again
        heavy.add_(mean).mul_(255.0).mul_(drawn.keep).add_(drawn.noise).clamp_(0.0, 255.0).div_(255.0).sub_(mean).div_(std)
        return torch.where(selected[:, None, None, None], heavy, x)

    def state_dict(self) -> dict:
        return {"losses": self.losses.cpu(), "counts": self.counts.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.losses.copy_(state["losses"])
        self.counts.copy_(state["counts"])


class Draws(MadeAhead[Reaugmentation]):
    """Each step's `SuperAugmentationBlock.draw` for strong views of `shape`, from the step's own generator: a
    function of the step alone, so made a step ahead where a core is spare (`benchmark.kit.ahead`)."""

    def __init__(self, sab: SuperAugmentationBlock, shape: torch.Size, seed: int, device: torch.device):
        super().__init__(device)
        self.sab, self.shape, self.seed, self.device = sab, shape, seed, device

    def make(self, it: int) -> Reaugmentation:
        return self.sab.draw(self.shape, step_generator(self.seed, it, salt=21), self.device)
