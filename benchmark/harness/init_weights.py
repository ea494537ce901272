"""The suite's own label-free starting point: a profile's backbone pre-trained with SimCLR on crops of a
generic image corpus, the stand-in for ImageNet weights on machines that cannot download them.

Why SimCLR: its features separate images after a few hundred steps of a small ViT on two CPU cores, so a
short fine-tuning budget starts from something informative, as USB's and ALBEF's ImageNet starts do; MAE's
features need long fine-tuning to pay off, and DINO's teacher, centring and multi-crop add machinery that
a stand-in does not need.

Why this corpus: the natural photographs and textures scikit-image ships (no download), resized to 256 px,
with its medical images (retina, histology, cells, phantoms) left out, so the corpus is of another
distribution than every dataset of the benchmark, as ImageNet is to Kvasir. It reads no image and no
label of the benchmark's datasets.

    python -m benchmark init build --profile quick     # -> benchmark/weights/quick.pt + quick.json
"""
from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.kit.data.loaders import MEAN, STD
from benchmark.kit.files import atomic_write, file_sha256
from benchmark.kit.models import WEIGHTS_DIR, architecture, create_backbone
from benchmark.kit.schema import InitConfig, ModelConfig, TrainConfig
from benchmark.kit.training import build_optimizer, warmup_cosine

# scikit-image's bundled (offline) photographs and textures; its medical images are left out on purpose.
CORPUS = ("astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
          "gravel", "hubble_deep_field", "logo", "moon", "page", "rocket", "text")
CORPUS_SIZE = 256  # every corpus image is resized to CORPUS_SIZE x CORPUS_SIZE once


def load_corpus() -> torch.Tensor:
    """(len(CORPUS), 3, 256, 256) floats in [0, 1]."""
    import skimage.data
    from PIL import Image

    images = []
    for name in CORPUS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = Image.fromarray(image[..., :3].astype(np.uint8)).resize((CORPUS_SIZE, CORPUS_SIZE), Image.BICUBIC)
        images.append(torch.from_numpy(np.asarray(image).copy()))
    return torch.stack(images).permute(0, 3, 1, 2).float().div(255.0)


def random_boxes(n: int, width: torch.Tensor, height: torch.Tensor, scale: tuple[float, float],
                 g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(x0, y0, w, h) of n random boxes inside (0, 0, width, height): area a share `scale` of it, aspect
    3/4 to 4/3, as torchvision's RandomResizedCrop draws them."""
    area = (scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=g)) * width * height
    aspect = torch.exp(math.log(3 / 4) + math.log(16 / 9) * torch.rand(n, generator=g))
    w = torch.minimum(torch.sqrt(area * aspect), width)
    h = torch.minimum(torch.sqrt(area / aspect), height)
    return torch.rand(n, generator=g) * (width - w), torch.rand(n, generator=g) * (height - h), w, h


def random_views(corpus: torch.Tensor, n: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n pairs of SimCLR views. A pair's "image" is a random region of a corpus image (5-50 % of its area,
    so 17 photographs give endless distinct images); each view is a random resized crop of that region
    (20-100 % of it), flipped, colour-jittered (p 0.8) and greyed (p 0.2), normalised as the benchmark's
    images are. Two (n, 3, size, size) tensors."""
    from torchvision.ops import roi_align

    full = torch.full((n,), float(CORPUS_SIZE))
    bx, by, bw, bh = random_boxes(n, full, full, (0.05, 0.5), g)
    source = torch.randint(len(corpus), (n,), generator=g).float()
    views = []
    for _ in range(2):
        x0, y0, w, h = random_boxes(n, bw, bh, (0.2, 1.0), g)
        boxes = torch.stack([source, bx + x0, by + y0, bx + x0 + w, by + y0 + h], dim=1)
        x = roi_align(corpus, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        views.append(_colour(x, g))
    return views[0], views[1]


def _colour(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flip, brightness / contrast / saturation jitter of 0.4 (p 0.8), greyscale (p 0.2), normalisation."""
    n = len(x)
    u = lambda: torch.rand(n, 1, 1, 1, generator=g)  # noqa: E731
    x = torch.where(u() < 0.5, x.flip(3), x)
    jittered = x * (0.6 + 0.8 * u())
    mean = jittered.mean((1, 2, 3), keepdim=True)
    jittered = (jittered - mean) * (0.6 + 0.8 * u()) + mean
    grey = jittered.mean(1, keepdim=True)
    jittered = (jittered - grey) * (0.6 + 0.8 * u()) + grey
    x = torch.where(u() < 0.8, jittered, x).clamp(0, 1)
    x = torch.where(u() < 0.2, x.mean(1, keepdim=True).expand_as(x), x)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view's positive is its pair among the 2N - 1 other views. z1, z2: (N, D)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    sim = z @ z.t() / temperature  # (2N, 2N)
    sim.fill_diagonal_(float("-inf"))
    n = len(z1)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


class SimCLR(nn.Module):
    """The backbone (no classifier head) and a two-layer projection head, used only here."""

    def __init__(self, model_cfg: ModelConfig, projection_dim: int):
        super().__init__()
        self.backbone = create_backbone(model_cfg.model_copy(update={"init": "random", "weights": None}), num_classes=0)
        width = self.backbone.num_features
        self.projector = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))  # (N, projection_dim)


def build(model_cfg: ModelConfig, init_cfg: InitConfig, image_size: int, out: Path, command: str, code_version: str,
          log=print) -> Path:
    """Pre-train `model_cfg`'s backbone with SimCLR on the generic corpus; write `out` (the backbone's
    state dict) and `out.with_suffix('.json')` (provenance). Returns `out`."""
    seed, iterations = init_cfg.seed, init_cfg.iterations
    batch = init_cfg.batch_size
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    corpus = load_corpus()
    model = SimCLR(model_cfg, init_cfg.projection_dim)
    train_cfg = TrainConfig(optimizer="adamw", lr=init_cfg.lr, weight_decay=init_cfg.weight_decay, layer_decay=1.0)
    optimizer = build_optimizer(model.named_parameters(), train_cfg)
    scheduler = warmup_cosine(optimizer, iterations, init_cfg.warmup_iterations, init_cfg.min_lr)
    start, losses = time.perf_counter(), []
    for it in range(iterations):
        view1, view2 = random_views(corpus, batch, image_size, g)
        loss = nt_xent(*model(torch.cat([view1, view2])).chunk(2), init_cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (it + 1) % max(1, iterations // 20) == 0 or it + 1 == iterations:
            log(f"init build: {it + 1}/{iterations}  loss {np.mean(losses[-20:]):.3f}  {time.perf_counter() - start:.0f} s")
    buffer = io.BytesIO()  # the archive's inner names then do not depend on the temporary file's name:
    torch.save(model.backbone.state_dict(), buffer)  # the same build gives the same bytes and sha256
    with atomic_write(out) as tmp:
        tmp.write_bytes(buffer.getvalue())
    sidecar = {
        "architecture": architecture(model_cfg),
        "objective": "SimCLR (NT-Xent), benchmark/harness/init_weights.py",
        "corpus": {"source": "scikit-image data (bundled)", "images": list(CORPUS), "resized_to": CORPUS_SIZE},
        "image_size": image_size,
        "settings": init_cfg.model_dump(),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "wall_s": round(time.perf_counter() - start, 1),
        "command": command,
        "code_version": code_version,
        "torch": torch.__version__,
        "sha256": file_sha256(out),
        "labels_used": "none",
    }
    with atomic_write(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    return out


def shipped_path(profile: str) -> Path:
    return WEIGHTS_DIR / f"{profile}.pt"
