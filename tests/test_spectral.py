"""The spectral NBI simulation: shapes, determinism, the documented matrix, and the physics it promises."""
from __future__ import annotations

import time

import numpy as np
import pytest

from benchmark.data.spectral import BAND_ESTIMATE, NBI_BANDS_NM, compose_nbi, simulate_nbi

MUCOSA = (225, 140, 120)
VESSEL = (175, 70, 75)


def _luma(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])


def _contrast(img: np.ndarray, vessel: np.ndarray) -> float:
    """Normalised luminance difference between mucosa and vessel pixels."""
    luma = _luma(img)
    background, line = luma[~vessel].mean(), luma[vessel].mean()
    return (background - line) / (background + line)


def _vessel_scene(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = MUCOSA
    vessel = np.zeros((size, size), dtype=bool)
    vessel[size // 2 - 1 : size // 2 + 1, :] = True
    vessel[:, size // 3] = True
    img[vessel] = VESSEL
    return img, vessel


def test_documented_bands_and_matrix() -> None:
    assert NBI_BANDS_NM == (415, 540)
    documented = np.array([[0.192, -0.094, 0.897], [0.022, 1.046, -0.069]])
    np.testing.assert_allclose(BAND_ESTIMATE, documented, atol=5e-4)


@pytest.mark.parametrize("shape", [(16, 24, 3), (5, 16, 24, 3)])
def test_shape_and_dtype_preserved(shape: tuple[int, ...]) -> None:
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = simulate_nbi(img)
    assert out.shape == shape and out.dtype == np.uint8


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8)]
)
def test_rejects_non_rgb_uint8(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        simulate_nbi(bad)


def test_deterministic_and_batch_equals_single() -> None:
    batch = np.random.default_rng(1).integers(0, 256, (6, 20, 20, 3), dtype=np.uint8)
    out = simulate_nbi(batch)
    np.testing.assert_array_equal(out, simulate_nbi(batch.copy()))
    for img, expected in zip(batch, out):
        np.testing.assert_array_equal(simulate_nbi(img), expected)


def test_red_vessel_on_pink_mucosa_gains_contrast() -> None:
    img, vessel = _vessel_scene()
    nbi = simulate_nbi(img)
    wli_contrast, nbi_contrast = _contrast(img, vessel), _contrast(nbi, vessel)
    assert nbi_contrast > 1.3 * wli_contrast, (wli_contrast, nbi_contrast)


def test_composition_maps_540_to_red_and_415_to_green_blue() -> None:
    band_415 = np.full((1, 8, 8), 0.4, dtype=np.float32)
    band_540 = np.full((1, 8, 8), 0.6, dtype=np.float32)
    band_415[0, 2:4, 2:4] = 0.1  # a capillary: absorbs the 415 nm light only
    out = compose_nbi(band_415, band_540)[0].astype(int)
    assert np.ptp(out[..., 0]) == 0  # red (540 nm) does not see it
    np.testing.assert_array_equal(out[..., 1], out[..., 2])
    assert out[2, 2, 1] < out[0, 0, 1] - 50


def test_mucosa_turns_pale_and_vessels_dark_in_nbi() -> None:
    img, vessel = _vessel_scene()
    nbi = simulate_nbi(img).astype(int)
    mucosa, line = nbi[~vessel].mean(axis=0), nbi[vessel].mean(axis=0)
    assert mucosa.min() > 120 and np.all(line < mucosa)


def test_fast_enough_for_a_whole_dataset() -> None:
    imgs = np.random.default_rng(2).integers(0, 256, (3000, 64, 64, 3), dtype=np.uint8)
    start = time.perf_counter()
    simulate_nbi(imgs)
    elapsed = time.perf_counter() - start
    print(f"simulate_nbi: 3000 images of 64x64 in {elapsed:.2f} s")
    assert elapsed < 10.0
