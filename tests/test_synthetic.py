"""The embedded `synthetic` dataset: layout, determinism, and that it looks like what it claims to render."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from benchmark.kit.data.spectral import simulate_nbi
from benchmark.kit.data.synthetic import _render, render_synthetic
from benchmark.kit.data.types import KVASIR_CLASSES, RawDataset


@pytest.fixture(scope="module")
def default() -> tuple[RawDataset, np.ndarray]:
    """The default dataset (3,000 images of 64x64) with its vessel maps, rendered once for the module."""
    start = time.perf_counter()
    rendered = _render(500, 64, 0)
    print(f"render_synthetic(): default dataset in {time.perf_counter() - start:.1f} s")
    return rendered


def _luma(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def _vessel_contrast(images: np.ndarray, vessels: np.ndarray) -> float:
    """Mean darkening of vessel pixels relative to their 7x7 neighbourhood, over images with vessels."""
    luma = _luma(images)
    local = uniform_filter(luma, size=(1, 7, 7), mode="nearest")
    mask = vessels > 0.5
    per_image = [
        ((local[i] - luma[i])[mask[i]] / (local[i][mask[i]] + 1.0)).mean()
        for i in range(len(images)) if mask[i].sum() >= 20
    ]
    assert len(per_image) > 100
    return float(np.mean(per_image))


def test_default_layout(default: tuple[RawDataset, np.ndarray]) -> None:
    raw, vessels = default
    assert raw.wli.shape == raw.nbi.shape == (3000, 64, 64, 3)
    assert raw.wli.dtype == raw.nbi.dtype == np.uint8
    assert raw.labels.dtype == np.int64 and vessels.shape == (3000, 64, 64)
    assert raw.classes == KVASIR_CLASSES
    np.testing.assert_array_equal(np.bincount(raw.labels), [500] * 6)
    np.testing.assert_array_equal(raw.labels[:12], [0, 1, 2, 3, 4, 5] * 2)
    assert raw.sources[0] == "synthetic:0" and raw.sources[-1] == "synthetic:2999"
    assert len(set(raw.sources)) == 3000


def test_generation_time_printed(default: tuple[RawDataset, np.ndarray]) -> None:
    start = time.perf_counter()
    render_synthetic(50, 64, 0)
    elapsed = time.perf_counter() - start
    print(f"render_synthetic(50): 300 images in {elapsed:.2f} s")
    assert elapsed < 6.0  # a tenth of the default; the default itself must stay well under 60 s


def test_same_seed_identical_other_seed_differs() -> None:
    a, b, c = render_synthetic(4, 32, 7), render_synthetic(4, 32, 7), render_synthetic(4, 32, 8)
    np.testing.assert_array_equal(a.wli, b.wli)
    np.testing.assert_array_equal(a.nbi, b.nbi)
    assert not np.array_equal(a.wli, c.wli) and not np.array_equal(a.nbi, c.nbi)


def test_other_sizes_and_bad_arguments() -> None:
    raw = render_synthetic(2, 96, 0)
    assert raw.wli.shape == (12, 96, 96, 3) and len(raw) == 12
    with pytest.raises(ValueError):
        render_synthetic(0)
    with pytest.raises(ValueError):
        render_synthetic(2, image_size=4)


def test_vessels_stronger_in_nbi_than_wli(default: tuple[RawDataset, np.ndarray]) -> None:
    raw, vessels = default
    wli, nbi = _vessel_contrast(raw.wli, vessels), _vessel_contrast(raw.nbi, vessels)
    print(f"vessel contrast: WLI {wli:.3f}, NBI {nbi:.3f}")
    assert wli > 0.0 and nbi > 1.5 * wli


def test_classes_differ(default: tuple[RawDataset, np.ndarray]) -> None:
    raw, _ = default
    for images in (raw.wli, raw.nbi):
        means = np.stack([images[raw.labels == c].mean(axis=0) for c in range(6)])
        gaps = [np.abs(means[i] - means[j]).mean() for i in range(6) for j in range(i + 1, 6)]
        assert min(gaps) > 0.5, gaps


def test_two_renderings_share_geometry(default: tuple[RawDataset, np.ndarray]) -> None:
    """WLI and NBI are one scene: their luminance maps correlate far above unrelated pairs."""
    raw, _ = default
    wli, nbi = _luma(raw.wli[:300]).reshape(300, -1), _luma(raw.nbi[:300]).reshape(300, -1)
    wli = (wli - wli.mean(1, keepdims=True)) / wli.std(1, keepdims=True)
    nbi = (nbi - nbi.mean(1, keepdims=True)) / nbi.std(1, keepdims=True)
    paired = (wli * nbi).mean(1)
    shuffled = (wli * np.roll(nbi, 1, axis=0)).mean(1)
    assert paired.mean() > 0.5 and paired.mean() > shuffled.mean() + 0.3


def test_spectral_simulation_approximates_rendered_nbi(default: tuple[RawDataset, np.ndarray]) -> None:
    """simulate_nbi on the rendered WLI recovers the rendered NBI's structure (per-image correlation)."""
    raw, _ = default
    simulated = simulate_nbi(raw.wli[:300]).astype(np.float32)
    rendered = raw.nbi[:300].astype(np.float32)
    for channel in (0, 1):  # 540 nm and 415 nm
        a, b = simulated[..., channel].reshape(300, -1), rendered[..., channel].reshape(300, -1)
        a = (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-6)
        b = (b - b.mean(1, keepdims=True)) / (b.std(1, keepdims=True) + 1e-6)
        assert (a * b).mean(1).mean() > 0.7
