"""Narrow-band imaging (NBI) simulated from white-light (WLI) RGB images.

The paper's NBI views came from a GAN whose weights are not public, so the suite needs a transparent,
deterministic WLI -> NBI mapping that follows the physics of the real device instead.

Physics. An NBI endoscope lights the mucosa with two narrow bands, near 415 nm and 540 nm, where
hemoglobin absorbs strongly (the Soret peak and the first Q band). Blue light penetrates only the
superficial mucosa, so the 415 nm image shows capillaries; green light reaches a little deeper, so the
540 nm image shows larger vessels. The video processor shows the 540 nm image in the red channel and the
415 nm image in the green and blue channels: capillaries turn brown, deeper vessels cyan, and the mucosa
a pale teal.

Step 1, band estimate. The RGB values are decoded to linear light ``c = (R, G, B)`` (sRGB gamma 2.2)
and the two band reflectances are estimated linearly, ``b = M c``. ``M`` is the Wiener (linear minimum
mean-square error) estimate of the reflectance at 415 nm and 540 nm from the three camera channels::

    M = K_b S^T (S K S^T + s^2 I)^-1

with ``S`` (3 x 61) the approximate camera sensitivities below, sampled every 5 nm over 400-700 nm and
each normalised to unit sum (a white-balanced camera); ``K`` the second-moment matrix of a smooth
reflectance prior (mean 0.5, standard deviation 0.1, correlation 0.98 per nm, i.e. tissue spectra that
vary slowly with wavelength); ``K_b`` the rows of ``K`` at 415 and 540 nm; ``s^2 = 1e-3`` the noise
of 8-bit compressed video (standard deviation about 0.03 on a 0..1 scale). Rounded, columns R, G, B::

    b415 = 0.192 R - 0.094 G + 0.897 B
    b540 = 0.022 R + 1.046 G - 0.069 B

The 415 nm image is mostly the blue channel and the 540 nm image mostly the green one, each channel being
the one most sensitive to its band; the prior adds small corrections for the neighbouring wavelengths a
channel also sees. The noise term keeps them small: with ``s^2 = 1e-4`` the weights grow past +-0.4 and
saturated red pixels (bleeding, large vessels) get negative band estimates.

Step 2, processor (:func:`compose_estimated_nbi`). The band estimates are reflectances on the WLI
frame's own exposure scale: the rows of ``M`` sum to 1 (0.995 and 0.999), so a white surface gives both
bands the level it has in the WLI frame. Real endoscopy frames hold what a global exposure rule cannot
handle: black borders and overlay boxes, a dark lumen, and lit mucosa near the tip several times brighter
than the rest. So the processor keeps the image's exposure and enhances only local structure:

- Exposure fixed by the physics, gain 1: both bands are shown at the WLI frame's exposure, never
  amplified. Two narrow bands carry a fraction of the white light's power, so a real NBI frame is no
  brighter than its WLI partner. In endoscopy, where red is the brightest WLI channel, the NBI frame
  comes out darker than its WLI; and no pixel is pushed into clipping: the red channel (540 nm, below)
  stays under 250 and green and blue (415 nm) reach it only where the WLI's blue is above about 237,
  i.e. at specular highlights, which clip in the WLI frame too. The rule is one function of each pixel
  and its neighbourhood, the same for every image, reading no statistic of a dataset, split or label.
- Colour balance: the 540 nm image is shown at ``NBI_TARGET_540 / NBI_TARGET_415 = 0.84`` times the
  415 nm image, the ratio of the synthetic processor's targets below, so the mucosa (whose two band
  estimates are about equal in Kvasir frames) is the same pale teal.
- Structure enhancement: each band's absorption beyond the surrounding mucosa is multiplied by
  ``g = NBI_CONTRAST = 2``, as if the light travelled a longer path through hemoglobin. The mucosa level
  ``r`` is a local mean of ``log b`` over a square window of ``NBI_STRUCTURE_SCALE`` = 1/8 of the shorter
  image side (33 px at 256: wider than a capillary, narrower than the illumination falloff), taken twice:
  the second time with every pixel below the first mean raised to it, so vessels do not pull down their
  own reference::

      log r = box(max(log b, box(log b))),   y = gain * b * min(b / r, 1) ** (g - 1)
      d = 255 * min(y, 1) ** (1 / 2.2),   RGB = (d540, d415, d415),   gain540 = 0.84, gain415 = 1

  Only absorbers are deepened (a longer path through hemoglobin only takes light away), so the
  enhancement never brightens a pixel: it adds no clipping and cannot raise the mean level. Unlike a
  global exponent it leaves the illumination falloff as the WLI frame has it.

On the 28 real Kvasir-SEG frames of docs/data.md the mean level is 100 in WLI and 83 in NBI, the share
of pixels with a channel >= 250 5.3 % in WLI and 0.4 % in NBI; the synthetic processor below, applied
to the same band estimates, gives 133 and 23.9 %. RGB does not tell how deep the blood lies, so vessels
that are red under white light turn dark teal here, not the brown of real NBI capillaries.
:data:`SIMULATION_VERSION` is part of the cache key
of every dataset whose NBI comes from :func:`simulate_nbi`: bump it whenever the output changes.

Processor of the synthetic renderer (:func:`compose_nbi`). The synthetic dataset feeds true narrow-band
reflectances of a scene with a mild illumination range, and its difficulty was calibrated against this
processor, so it keeps it: each band is brought to a fixed mean level per image (automatic exposure), its
optical density is amplified (contrast enhancement), and the two bands are composed into RGB. With ``m``
the band's mean over the image, ``t`` its target level (0.38 for 540 nm, 0.45 for 415 nm: a pale teal
mucosa) and ``g = 2`` the contrast exponent::

    y = t * (max(b, 1e-4) / m) ** g,   d = 255 * min(y, 1) ** (1 / 2.2),   RGB = (d540, d415, d415)

``(b / m) ** g`` multiplies every absorption ``-log(b / m)`` by ``g``, as if the light travelled a
longer path through hemoglobin, so vessels darken while the mucosa stays near ``t``. On real frames it
also squares the illumination falloff and sets the exposure from a mean that black borders pull down,
which is why :func:`simulate_nbi` does not use it.
"""
from __future__ import annotations

from functools import partial

import numpy as np
from scipy import ndimage

NBI_BANDS_NM: tuple[int, int] = (415, 540)

# Approximate peak and width (nm, Gaussian sigma) of an endoscope colour camera's R, G, B channels.
CAMERA_PEAKS_NM: tuple[float, float, float] = (610.0, 535.0, 455.0)
CAMERA_WIDTHS_NM: tuple[float, float, float] = (32.0, 35.0, 28.0)

# Processor settings (step 2 in the module docstring): target linear level of the 540 nm (red) and
# 415 nm (green, blue) images, and the contrast exponent applied to both.
NBI_TARGET_540 = 0.38
NBI_TARGET_415 = 0.45
NBI_CONTRAST = 2.0
# Window of the local mucosa level in compose_estimated_nbi, as a fraction of the shorter image side, so
# the same structures are enhanced at every image size.
NBI_STRUCTURE_SCALE = 1.0 / 8.0
# Version of simulate_nbi's output, part of the cache key of datasets that use it: bump it on any change.
SIMULATION_VERSION = 2

_DISPLAY_GAMMA = 2.2
_PIXELS_PER_CHUNK = 1 << 21  # bounds the float working memory to tens of megabytes


def camera_sensitivity(wavelengths_nm: np.ndarray) -> np.ndarray:
    """R, G, B responsivities (3, K) at the given wavelengths, peak 1; shared with the synthetic renderer."""
    lam = np.asarray(wavelengths_nm, dtype=np.float64)
    peaks = np.asarray(CAMERA_PEAKS_NM)[:, None]
    widths = np.asarray(CAMERA_WIDTHS_NM)[:, None]
    return np.exp(-0.5 * ((lam[None, :] - peaks) / widths) ** 2)


def _wiener_band_matrix(
    mean: float = 0.5, std: float = 0.1, corr_per_nm: float = 0.98, noise_var: float = 1e-3
) -> np.ndarray:
    """The 2x3 matrix M of the module docstring, derived rather than typed in so it cannot drift."""
    lam = np.arange(400.0, 701.0, 5.0)
    sens = camera_sensitivity(lam)
    sens /= sens.sum(axis=1, keepdims=True)
    second_moment = mean**2 + std**2 * corr_per_nm ** np.abs(lam[:, None] - lam[None, :])
    rows = [int(np.flatnonzero(lam == band)[0]) for band in NBI_BANDS_NM]
    gram = sens @ second_moment @ sens.T + noise_var * np.eye(3)
    return second_moment[rows] @ sens.T @ np.linalg.inv(gram)


BAND_ESTIMATE: np.ndarray = _wiener_band_matrix()
"""Rows: 415 nm, 540 nm; columns: linear R, G, B."""


def compose_nbi(band_415: np.ndarray, band_540: np.ndarray) -> np.ndarray:
    """The synthetic renderer's processor for true band reflectances (N, H, W); returns (N, H, W, 3) uint8.

    Exposure is set per image from the band's mean, so an image's output never depends on the others in
    its batch; the module docstring says why real frames take :func:`compose_estimated_nbi` instead.
    """
    out = np.empty(band_415.shape + (3,), dtype=np.uint8)
    exponent = np.float32(NBI_CONTRAST / _DISPLAY_GAMMA)
    for target, band, channels in (
        (NBI_TARGET_540, band_540, (0,)),
        (NBI_TARGET_415, band_415, (1, 2)),
    ):
        b = np.maximum(np.asarray(band, dtype=np.float32), np.float32(1e-4))
        mean = b.mean(axis=(1, 2), keepdims=True)
        scale = np.float32(255.0 * target ** (1.0 / _DISPLAY_GAMMA))
        shown = np.power(b / mean, exponent) * scale
        np.clip(shown + np.float32(0.5), 0.0, 255.0, out=shown)
        for c in channels:
            out[..., c] = shown
    return out


def _band_luts() -> np.ndarray:
    """(2, 3, 256) tables: contribution of each uint8 channel value to each band estimate.

    A band is a sum of per-channel terms, each a function of one uint8, so three table look-ups replace
    the gamma decoding and the matrix product on every pixel.
    """
    linear = (np.arange(256, dtype=np.float64) / 255.0) ** _DISPLAY_GAMMA
    return (BAND_ESTIMATE[:, :, None] * linear[None, None, :]).astype(np.float32)


_LUTS = _band_luts()


def estimate_bands(wli: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: the linear 415 nm and 540 nm reflectance estimates of uint8 RGB images (N, H, W, 3),
    each float32 (N, H, W). No chunking: :func:`simulate_nbi` bounds the memory for large batches."""
    r, g, b = wli[..., 0], wli[..., 1], wli[..., 2]
    band_415, band_540 = (lut[0][r] + lut[1][g] + lut[2][b] for lut in _LUTS)
    return band_415, band_540


def compose_estimated_nbi(band_415: np.ndarray, band_540: np.ndarray) -> np.ndarray:
    """Step 2 for band images estimated from WLI frames, (N, H, W) each; returns (N, H, W, 3) uint8.

    Gain 1 (the WLI frame's exposure), the synthetic processor's colour balance, and each band's
    absorption beyond its local mucosa level multiplied by ``NBI_CONTRAST``: the module docstring says why.
    Works on ``log b``, where the enhancement is a product and the display gamma a division."""
    out = np.empty(np.shape(band_415) + (3,), dtype=np.uint8)
    width = 2 * round(NBI_STRUCTURE_SCALE * min(np.shape(band_415)[1:]) / 2) + 1
    blur = partial(ndimage.uniform_filter, size=(1, width, width), mode="nearest")
    balance = np.log(NBI_TARGET_540 / NBI_TARGET_415)
    for log_gain, band, channels in ((balance, band_540, (0,)), (0.0, band_415, (1, 2))):
        log_b = np.log(np.maximum(np.asarray(band, dtype=np.float32), np.float32(1e-4)))
        reference = blur(np.maximum(log_b, blur(log_b)))
        log_y = log_b + np.float32(NBI_CONTRAST - 1.0) * np.minimum(log_b - reference, 0.0) + np.float32(log_gain)
        shown = np.exp(np.minimum(log_y, 0.0) / np.float32(_DISPLAY_GAMMA)) * np.float32(255.0) + np.float32(0.5)
        for c in channels:
            out[..., c] = shown  # truncation after the + 0.5 rounds
    return out


def simulate_nbi(wli: np.ndarray) -> np.ndarray:
    """NBI view of uint8 RGB WLI images, (H, W, 3) or (N, H, W, 3); same shape, uint8."""
    wli = np.asarray(wli)
    if wli.dtype != np.uint8 or wli.ndim not in (3, 4) or wli.shape[-1] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) or (N, H, W, 3) RGB images, got {wli.dtype} {wli.shape}")
    batch = wli[None] if wli.ndim == 3 else wli
    out = np.empty_like(batch)
    step = max(1, _PIXELS_PER_CHUNK // max(1, batch.shape[1] * batch.shape[2]))
    for start in range(0, len(batch), step):
        out[start : start + step] = compose_estimated_nbi(*estimate_bands(batch[start : start + step]))
    return out[0] if wli.ndim == 3 else out
