"""The spectral NBI simulation: shapes, determinism, the documented matrix, and the physics it promises."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import uniform_filter

from benchmark.kit.data.spectral import BAND_ESTIMATE, NBI_BANDS_NM, compose_nbi, estimate_bands, simulate_nbi

# Real white-light frames (docs/data.md): $MICS_BENCH_REAL_FRAMES, else the shared folder beside the checkout.
REAL_FRAMES = Path(os.environ.get("MICS_BENCH_REAL_FRAMES")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-wli-polyps")

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


def test_clips_only_where_the_wli_blue_is_near_white() -> None:
    """Every colour of a 6-level-step grid: red (540 nm) never reaches 250, green and blue (415 nm) only
    where the WLI's blue is above about 237, as the module docstring says."""
    levels = np.arange(0, 256, 6, dtype=np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(len(levels), -1, 3)
    nbi = simulate_nbi(grid)
    assert nbi[..., 0].max() < 250
    clipped = (nbi >= 250).any(axis=-1)
    assert clipped.any() and grid[..., 2][clipped].min() >= 237


@pytest.fixture(scope="module")
def real_frames() -> np.ndarray:
    files = sorted(REAL_FRAMES.glob("*.jpg")) if REAL_FRAMES.is_dir() else []
    if not files:
        pytest.skip(f"no real WLI frames (*.jpg) in {REAL_FRAMES}; set MICS_BENCH_REAL_FRAMES to such a folder")
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def _clipped_percent(images: np.ndarray) -> np.ndarray:
    """Per image, the share (%) of pixels with a channel >= 250."""
    return 100.0 * (images >= 250).any(axis=-1).mean(axis=(1, 2))


def _fine_darkening(channel: np.ndarray) -> np.ndarray:
    """Per image, the mean darkening of pixels below their 7x7 mean, relative to it: capillary contrast."""
    channel = channel.astype(np.float32)
    local = uniform_filter(channel, size=(1, 7, 7), mode="nearest")
    return (np.maximum(local - channel, 0.0) / (local + 1.0)).mean(axis=(1, 2))


def test_real_frames_keep_their_exposure(real_frames: np.ndarray) -> None:
    """Real frames: NBI clips at most one point more pixels than its WLI and is no brighter, over the
    frames and frame by frame; the synthetic processor on the same band estimates fails both."""
    nbi, synthetic_processor = simulate_nbi(real_frames), compose_nbi(*estimate_bands(real_frames))
    wli_clipped, nbi_clipped = _clipped_percent(real_frames), _clipped_percent(nbi)
    wli_level, nbi_level = real_frames.mean(axis=(1, 2, 3)), nbi.mean(axis=(1, 2, 3))
    print(f"{len(real_frames)} frames: clipped {wli_clipped.mean():.1f} % -> {nbi_clipped.mean():.1f} %, "
          f"mean level {wli_level.mean():.1f} -> {nbi_level.mean():.1f}")
    assert nbi_clipped.mean() <= wli_clipped.mean() + 1.0 and nbi_level.mean() <= wli_level.mean()
    assert np.all(nbi_clipped <= wli_clipped + 1.0) and np.all(nbi_level <= wli_level)
    assert _clipped_percent(synthetic_processor).mean() > wli_clipped.mean() + 1.0
    assert synthetic_processor.mean() > real_frames.mean()


def test_real_frames_keep_the_capillary_contrast(real_frames: np.ndarray) -> None:
    """The 415 nm channel shows fine structure more strongly than the WLI luminance in every frame, and
    as strongly as the synthetic processor's global contrast exponent did (within 5 %)."""
    nbi, synthetic_processor = simulate_nbi(real_frames), compose_nbi(*estimate_bands(real_frames))
    wli = _fine_darkening(_luma(real_frames))
    shown, before = _fine_darkening(nbi[..., 1]), _fine_darkening(synthetic_processor[..., 1])
    print(f"fine darkening: WLI luma {wli.mean():.4f}, 415 nm {shown.mean():.4f} (synthetic processor {before.mean():.4f})")
    assert np.all(shown > wli) and shown.mean() >= 0.95 * before.mean()

