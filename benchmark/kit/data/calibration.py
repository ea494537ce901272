"""How hard the ``synthetic`` dataset is, measured once with a fixed small supervised CNN.

The generator's difficulty (noise, nuisances, how subtle each class's structure is) was tuned with
this measurement before any method was compared, and is frozen since: tuning it afterwards could favour
one method. The target band: with all labels a small CNN on WLI is good but not perfect, with 5 % of the
labels it is clearly worse, leaving room for unlabeled data to help. ``docs/synthetic.md`` records the
measured table.

The recipe is fixed: stratified 6:2:2 split, a three-block CNN, the same number of optimisation steps
whatever the number of labels (as semi-supervised benchmarks count iterations, not epochs), flips and
quarter turns as augmentation, test accuracy of the last iterate.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from benchmark.kit.data.synthetic import render_synthetic

MODALITIES = ("wli", "nbi", "both")


def _cnn(in_channels: int, num_classes: int, widths: tuple[int, ...] = (8, 16, 32, 64)) -> nn.Module:
    """Conv-BN-ReLU blocks on a stride-2 stem, halving the resolution between blocks, then global
    average pooling: small enough for the whole calibration to take a few minutes on one core."""
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        stride = 2 if i == 0 else 1
        layers += [nn.Conv2d(in_channels, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        if 0 < i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        in_channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes))


def _inputs(wli: np.ndarray, nbi: np.ndarray, modality: str) -> torch.Tensor:
    """(N, C, H, W) float tensor in [-0.5, 0.5]: WLI, NBI, or both stacked into six channels."""
    parts = {"wli": [wli], "nbi": [nbi], "both": [wli, nbi]}[modality]
    stacked = np.concatenate(parts, axis=-1)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5).contiguous()


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and quarter turn per batch (endoscopy has no canonical orientation)."""
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(3)
    return torch.rot90(x, int(torch.randint(4, (), generator=gen)), dims=(2, 3))


def _fit_and_test(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
    num_classes: int, steps: int, batch_size: int, seed: int,
) -> float:
    """Test top-1 accuracy (%) after ``steps`` Adam steps with a cosine learning rate."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = _cnn(x_train.shape[1], num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x_train), (min(batch_size, len(x_train)),), generator=gen)
        loss = loss_fn(model(_augment(x_train[idx], gen)), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x_test[i : i + 256]).argmax(1) for i in range(0, len(x_test), 256)])
    return float((pred == y_test).float().mean()) * 100.0


def calibrate(
    num_per_class: int = 500,
    image_size: int = 64,
    seed: int = 0,
    steps: int = 500,
    batch_size: int = 64,
    label_percents: tuple[float, ...] = (100.0, 5.0),
    threads: int = 1,
) -> pd.DataFrame:
    """Test accuracy of the fixed CNN per modality and label percentage, one row each.

    ``threads`` caps torch's intra-op threads for the call (restored after), so timings compare across
    machines with more cores.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        raw = render_synthetic(num_per_class, image_size, seed)
        render_s = time.perf_counter() - start
        idx = np.arange(len(raw))
        train, rest = train_test_split(idx, test_size=0.4, stratify=raw.labels, random_state=seed)
        _, test = train_test_split(rest, test_size=0.5, stratify=raw.labels[rest], random_state=seed)
        rows = []
        for percent in label_percents:
            labeled = train
            if percent < 100.0:
                labeled, _ = train_test_split(
                    train, train_size=percent / 100.0, stratify=raw.labels[train], random_state=seed
                )
            y_train = torch.from_numpy(raw.labels[labeled])
            y_test = torch.from_numpy(raw.labels[test])
            for modality in MODALITIES:
                t0 = time.perf_counter()
                acc = _fit_and_test(
                    _inputs(raw.wli[labeled], raw.nbi[labeled], modality), y_train,
                    _inputs(raw.wli[test], raw.nbi[test], modality), y_test,
                    len(raw.classes), steps, batch_size, seed,
                )
                rows.append({
                    "modality": modality, "labels_percent": percent, "n_labeled": len(labeled),
                    "n_test": len(test), "test_top1": round(acc, 1),
                    "train_s": round(time.perf_counter() - t0, 1), "render_s": round(render_s, 2),
                })
        return pd.DataFrame(rows)
    finally:
        torch.set_num_threads(previous_threads)
