"""The embedded default dataset: paired WLI / NBI gastroscopy-like images rendered from one scene.

Why. The suite must run with no download, and its NBI views must relate to its WLI views as real ones
do: the same tissue seen under other light, not a colour filter of the WLI image. So each sample is one
simulated multispectral scene rendered twice.

Scene. Per pixel the renderer holds tissue maps: the hemoglobin optical density of the mucosa
(``blood``), a superficial capillary network (``capillary``) and a deeper vessel network (``deep``),
the whiteness of scattering tissue (squamous epithelium, fibrin, ulcer beds: ``white``), the geometric
shading (folds, lumen, dark openings: ``shade``) and specular highlights. Each Kvasir class adds its
structure on a mucosa of its organ:

- normal-z-line: an irregular ring between pale squamous and red columnar mucosa around the lumen;
- esophagitis: the same ring with red, fibrin-centred erosions running from it into the squamous side;
- normal-pylorus: a dark round opening with converging folds in orange gastric mucosa;
- normal-cecum: concentric folds around a small crescent orifice in pale mucosa with clear vessels;
- polyps: raised lobulated domes, redder, with a dense surface capillary pattern;
- ulcerative-colitis: red granular mucosa with whitish patches and the vessel pattern lost.

Light. The reflectance is computed at eight wavelengths (415-690 nm) with Beer-Lambert attenuation by
a hemoglobin-like absorption curve (Soret peak at 415 nm, Q bands at 540 / 577 nm, weak in red) whose
effect depends on depth: blue light only sees the capillaries, green also the deeper vessels. WLI is
the reflectance integrated under a broadband white light against the R, G, B camera sensitivities of
:mod:`benchmark.kit.data.spectral`; NBI is the reflectance at 415 nm and 540 nm, passed through the same
processor as :func:`benchmark.kit.data.spectral.simulate_nbi` (540 nm -> red, 415 nm -> green and blue).
Capillaries are therefore faint in WLI, where 415 nm is a small part of the blue channel, and strong
in NBI, as in real endoscopy.

Nuisances, drawn per sample and shared by the two renderings (same geometry): rotation, scale and
position of the structures, vignetting, specular highlights, colour temperature of the white light
(WLI only: NBI light is two fixed LEDs and each band is exposed on its own), exposure, blur and sensor
noise (independent draws, 2.5 times stronger in NBI, whose narrow bands carry less light).

Order: sample ``i`` has class ``i % 6``, so every prefix of ``6k`` samples is balanced; ``sources[i]``
is ``"synthetic:<i>"``. Each class is rendered as a stack (in chunks at large image sizes), every chunk
from its own random stream (seed, class, first index), so the arrays are a pure function of
(num_per_class, image_size, seed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft

from benchmark.kit.data.spectral import camera_sensitivity, compose_nbi
from benchmark.kit.data.types import KVASIR_CLASSES, RawDataset

WAVELENGTHS_NM = np.array([415.0, 450.0, 490.0, 540.0, 577.0, 610.0, 650.0, 690.0])
_I415, _I540 = 0, 3

# Effective hemoglobin absorption seen through scattering tissue, relative to 415 nm: molar extinction
# of oxy-hemoglobin (415 : 540 : 577 about 10 : 1 : 1) flattened by the longer photon paths at longer
# wavelengths, so that the Q bands still make the mucosa pink.
HEMOGLOBIN_ABSORPTION = np.array([1.00, 0.45, 0.30, 0.55, 0.60, 0.09, 0.03, 0.02], dtype=np.float32)
# How much of each wavelength's signal reaches a vessel at that depth (short light stays shallow).
_CAPILLARY_REACH = np.array([1.00, 0.75, 0.50, 0.35, 0.30, 0.15, 0.10, 0.08], dtype=np.float32)
_DEEP_REACH = np.array([0.12, 0.25, 0.45, 1.00, 1.00, 0.55, 0.35, 0.25], dtype=np.float32)
# Reflectance of blood-free mucosa: more in red (yellowish connective tissue absorbs blue).
_TISSUE_BASE = np.array([0.40, 0.45, 0.52, 0.62, 0.68, 0.76, 0.80, 0.80], dtype=np.float32)
_WHITE_TISSUE = 0.85

_PIXELS_PER_CHUNK = 1 << 21  # 512 images of 64x64: the default dataset renders one chunk per class
_REFERENCE_KELVIN = 5800.0  # xenon-like light the WLI white balance assumes
# Colour enhancement of the WLI processor: chroma gain around the luminance, in linear light.
_WLI_SATURATION = 1.4
_LUMINANCE = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
# Two narrow bands carry a fraction of the white light's power: the processor's gain amplifies the noise.
_NBI_NOISE_GAIN = 2.5


@dataclass
class _Grid:
    """Pixel coordinates of a stack of samples: ``x, y`` turned and zoomed per sample (the scene frame),
    ``radius`` the untransformed distance from the image centre (the optics' frame)."""

    x: np.ndarray  # (n, H, W)
    y: np.ndarray
    radius: np.ndarray  # (1, H, W)
    size: int

    @property
    def n(self) -> int:
        return self.x.shape[0]


@dataclass
class _Scene:
    """Tissue maps of a stack of samples, each (n, H, W) float32 (see the module docstring)."""

    blood: np.ndarray
    capillary: np.ndarray
    deep: np.ndarray
    white: np.ndarray
    shade: np.ndarray
    specular: np.ndarray


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """Per-sample uniform draws shaped to broadcast over images."""
    return rng.uniform(lo, hi, n).astype(np.float32)[:, None, None]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _grid(rng: np.random.Generator, n: int, size: int) -> _Grid:
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    v, u = np.meshgrid(axis, axis, indexing="ij")
    angle = _u(rng, 0.0, 2.0 * np.pi, n)
    zoom = np.exp(_u(rng, -0.25, 0.25, n))
    cos, sin = np.cos(angle), np.sin(angle)
    x = (cos * u + sin * v) / zoom
    y = (-sin * u + cos * v) / zoom
    return _Grid(x=x, y=y, radius=np.sqrt(u * u + v * v)[None], size=size)


def _field(rng: np.random.Generator, n: int, size: int, cycles: float, spread: float) -> np.ndarray:
    """Gaussian random fields (n, H, W), unit variance, with power around ``cycles`` per image width.

    Drawn directly as random Fourier coefficients, only inside the band (the rest stay zero), with
    frequencies per image width so that a scene looks the same at any ``image_size``.
    """
    reach = int(min(size // 2, np.ceil(cycles + 4.0 * spread)))
    rows = np.r_[0 : reach + 1, size - reach : size] if reach < size // 2 else np.arange(size)
    fy = np.fft.fftfreq(size)[rows, None] * size
    fx = np.arange(reach + 1)[None, :]
    gain = np.exp(-0.5 * ((np.sqrt(fx * fx + fy * fy) - cycles) / spread) ** 2).astype(np.float32)
    shape = (n,) + gain.shape
    coeffs = np.zeros((n, size, size // 2 + 1), dtype=np.complex64)
    coeffs[:, rows, : reach + 1] = gain * (
        rng.standard_normal(shape, dtype=np.float32) + 1j * rng.standard_normal(shape, dtype=np.float32)
    )
    field = fft.irfft2(coeffs, s=(size, size))
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-6
    return field


def _polar(grid: _Grid, cx: np.ndarray, cy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = grid.x - cx, grid.y - cy
    return np.sqrt(dx * dx + dy * dy), np.arctan2(dy, dx)


def _wobble(rng: np.random.Generator, n: int, angle: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """An irregular closed outline: a few random harmonics of the polar angle."""
    out = np.zeros_like(angle)
    for k in (2, 3, 5, 7):
        out += _u(rng, 0.0, 1.0, n) / k * np.sin(k * angle + _u(rng, 0.0, 2.0 * np.pi, n))
    return amplitude * out


def _vessels(
    rng: np.random.Generator, n: int, size: int, cycles: float, width: float, strength: np.ndarray
) -> np.ndarray:
    """A vessel network's optical density: the zero lines of a random field, faded in patches so
    the lines break into branches instead of closed loops."""
    lines = np.exp(-((_field(rng, n, size, cycles, cycles / 3.0) / width) ** 2))
    fade = _sigmoid(2.5 * _field(rng, n, size, 1.5, 1.0) + 1.0)
    return strength * lines * fade


def _mucosa(rng: np.random.Generator, grid: _Grid, organ: str) -> _Scene:
    """The organ's background: blood level, vessels, faint texture, lighting, highlights, and in some
    samples whitish mucus, so that whitish patches alone do not mean colitis."""
    n, size = grid.n, grid.size
    colon = organ == "colon"
    texture = _field(rng, n, size, 6.0, 3.0)
    blood = _u(rng, 1.3, 2.4, n) if colon else _u(rng, 1.5, 2.6, n)
    blood = blood * (1.0 + 0.08 * texture)
    capillary = _vessels(rng, n, size, 7.0, 0.3, _u(rng, 0.3, 1.2, n) if colon else _u(rng, 0.2, 0.8, n))
    deep = _vessels(rng, n, size, 3.0, 0.3, _u(rng, 0.5, 1.6, n) if colon else _u(rng, 0.2, 0.9, n))
    tilt = _u(rng, 0.0, 2.0 * np.pi, n)
    gradient = 1.0 + _u(rng, 0.0, 0.35, n) * (np.cos(tilt) * grid.x + np.sin(tilt) * grid.y) / 1.5
    mucus = (rng.uniform(size=n) < 0.3).astype(np.float32)[:, None, None] * _u(rng, 0.2, 0.5, n)
    white = mucus * _sigmoid((_field(rng, n, size, 3.0, 1.5) - _u(rng, 1.6, 2.6, n)) / 0.2)
    glints = _field(rng, n, size, 5.0, 2.0)
    specular = 2.5 * np.clip((glints - _u(rng, 2.4, 3.6, n)) / 0.4, 0.0, 1.0) ** 2
    return _Scene(
        blood=blood, capillary=capillary, deep=deep, white=white + _u(rng, 0.0, 0.08, n),
        shade=np.clip(gradient, 0.4, 1.5), specular=specular,
    )


def _folds(
    rng: np.random.Generator, r: np.ndarray, angle: np.ndarray, n: int, radial: bool, depth: np.ndarray
) -> np.ndarray:
    """Shading of mucosal folds: dark furrows, either rings around a centre or spokes converging on it."""
    if radial:
        count = rng.integers(5, 10, n).astype(np.float32)[:, None, None]
        phase = count * angle + _u(rng, 0.0, 2.0 * np.pi, n) + 1.5 * np.sin(3.0 * r)
        fade = np.exp(-r / 0.8)
    else:
        spacing = _u(rng, 0.25, 0.45, n)
        warp = 0.3 * np.sin(2.0 * angle + _u(rng, 0.0, 6.3, n)) + 0.08 * _field(rng, n, r.shape[-1], 1.5, 1.0)
        phase = 2.0 * np.pi * (r + spacing * warp) / spacing
        fade = 1.0
    return 1.0 - depth * fade * (0.5 + 0.5 * np.cos(phase)) ** 3


def _opening(r: np.ndarray, radius: np.ndarray, softness: np.ndarray, darkness: np.ndarray) -> np.ndarray:
    """Shading of a dark hole or lumen: light that enters it never comes back."""
    return 1.0 - darkness * _sigmoid((radius - r) / softness)


def _z_line(rng: np.random.Generator, grid: _Grid, scene: _Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squamous (outside) / columnar (inside) ring around the esophageal lumen; returns its geometry."""
    n = grid.n
    r, angle = _polar(grid, _u(rng, -0.3, 0.3, n), _u(rng, -0.3, 0.3, n))
    boundary = _u(rng, 0.35, 0.7, n) + _wobble(rng, n, angle, _u(rng, 0.05, 0.25, n))
    squamous = _sigmoid((r - boundary) / 0.03)
    scene.blood = scene.blood * (1.0 - _u(rng, 0.3, 0.55, n) * squamous)
    scene.white = scene.white + _u(rng, 0.15, 0.35, n) * squamous
    scene.deep = scene.deep * (1.0 - 0.7 * squamous)
    scene.capillary = scene.capillary * (1.0 - 0.5 * squamous)
    scene.shade = scene.shade * _opening(r, _u(rng, 0.08, 0.25, n), _u(rng, 0.05, 0.12, n), _u(rng, 0.6, 0.95, n))
    return r, angle, boundary


def _erosions(
    rng: np.random.Generator, grid: _Grid, scene: _Scene, r: np.ndarray, angle: np.ndarray, boundary: np.ndarray
) -> None:
    """Esophagitis: red streaks with fibrin centres, running from the z-line out into the squamous side."""
    n = grid.n
    count = rng.integers(2, 6, n)
    dilated = _vessels(rng, n, grid.size, 10.0, 0.3, _u(rng, 0.3, 1.0, n))
    for j in range(5):
        present = (j < count).astype(np.float32)[:, None, None]
        center = _u(rng, -np.pi, np.pi, n)
        half_width = _u(rng, 0.12, 0.35, n)
        length = _u(rng, 0.15, 0.5, n)
        across = ((angle - center + np.pi) % (2.0 * np.pi) - np.pi) / half_width
        along = (r - boundary) / length
        streak = present * np.exp(-(across**2)) * _sigmoid(12.0 * along + 2.0) * _sigmoid(8.0 * (1.0 - along))
        scene.blood = scene.blood + _u(rng, 0.6, 1.6, n) * streak
        scene.white = scene.white * (1.0 - streak) + _u(rng, 0.3, 0.8, n) * streak**3
        scene.capillary = scene.capillary + streak * dilated


def _pylorus(rng: np.random.Generator, grid: _Grid, scene: _Scene) -> None:
    """A round dark opening with a raised rim and folds converging on it."""
    n = grid.n
    r, angle = _polar(grid, _u(rng, -0.35, 0.35, n), _u(rng, -0.35, 0.35, n))
    radius = _u(rng, 0.05, 0.2, n) * (1.0 + 0.15 * np.sin(2.0 * angle + _u(rng, 0.0, 6.3, n)))
    rim = 1.0 + _u(rng, 0.05, 0.3, n) * np.exp(-(((r - radius - 0.08) / 0.07) ** 2))
    folds = _folds(rng, r, angle, n, radial=True, depth=_u(rng, 0.0, 0.5, n))
    hole = _opening(r, radius, _u(rng, 0.015, 0.05, n), _u(rng, 0.4, 0.95, n))
    scene.shade = scene.shade * rim * folds * hole


def _cecum(rng: np.random.Generator, grid: _Grid, scene: _Scene) -> None:
    """Concentric folds around a small crescent-shaped (appendiceal) orifice."""
    n = grid.n
    cx, cy = _u(rng, -0.4, 0.4, n), _u(rng, -0.4, 0.4, n)
    r, angle = _polar(grid, cx, cy)
    size = _u(rng, 0.06, 0.14, n)
    turn = _u(rng, 0.0, 2.0 * np.pi, n)
    r_inner, _ = _polar(grid, cx + 0.6 * size * np.cos(turn), cy + 0.6 * size * np.sin(turn))
    crescent = _sigmoid((size - r) / 0.02) * _sigmoid((r_inner - 0.8 * size) / 0.02)
    folds = _folds(rng, r, angle, n, radial=False, depth=_u(rng, 0.15, 0.5, n))
    scene.shade = scene.shade * folds * (1.0 - _u(rng, 0.4, 0.9, n) * crescent)


def _polyp(rng: np.random.Generator, grid: _Grid, scene: _Scene) -> None:
    """One or two raised lobulated domes: lit top, shadowed rim, redder, dense surface capillaries."""
    n, size = grid.n, grid.size
    second = (rng.uniform(size=n) < 0.25).astype(np.float32)[:, None, None]
    for presence in (np.ones_like(second), second):
        cx, cy = _u(rng, -0.4, 0.4, n), _u(rng, -0.4, 0.4, n)
        r, angle = _polar(grid, cx, cy)
        radius = _u(rng, 0.18, 0.4, n) * (1.0 + _wobble(rng, n, angle, _u(rng, 0.0, 0.3, n)))
        inside = presence * _sigmoid((radius - r) / 0.02)
        # Lambertian dome lit from slightly off the camera axis.
        height = np.sqrt(np.clip(1.0 - (r / radius) ** 2, 0.02, 1.0))
        light = _u(rng, 0.0, 2.0 * np.pi, n)
        tilt = (np.cos(light) * (grid.x - cx) + np.sin(light) * (grid.y - cy)) / radius
        bulge = _u(rng, 0.5, 1.0, n)  # flat lesions show mostly through their surface vessels
        relief = 1.0 + bulge * (np.clip(0.75 + 0.25 * height + 0.25 * tilt, 0.3, 1.2) - 1.0)
        scene.shade = scene.shade * (1.0 - inside + inside * relief)
        scene.shade = scene.shade * (1.0 - 0.35 * bulge * presence * np.exp(-(((r - radius) / 0.03) ** 2)))
        scene.blood = scene.blood + _u(rng, 0.3, 1.0, n) * inside
        pits = _vessels(rng, n, size, 9.0, 0.4, _u(rng, 0.8, 2.0, n))
        scene.capillary = scene.capillary * (1.0 - inside) + pits * inside
        scene.deep = scene.deep * (1.0 - 0.8 * inside)
        tip = presence * np.exp(-((r / (0.12 * radius)) ** 2)) * (rng.uniform(size=n) < 0.6)[:, None, None]
        scene.specular = scene.specular + 1.5 * tip


def _colitis(rng: np.random.Generator, grid: _Grid, scene: _Scene) -> None:
    """Ulcerative colitis: erythema, granular mucosa, lost vessel pattern, whitish patches."""
    n, size = grid.n, grid.size
    severity = _u(rng, 0.3, 1.0, n)
    granules = _field(rng, n, size, 14.0, 4.0)
    scene.blood = scene.blood * (1.0 + 0.5 * severity) + 0.25 * severity * granules
    scene.shade = scene.shade * (1.0 + 0.08 * severity * granules)
    scene.capillary = scene.capillary * (1.0 - 0.8 * severity)
    scene.deep = scene.deep * (1.0 - 0.9 * severity)
    patches = _sigmoid((_field(rng, n, size, 3.0, 1.5) - _u(rng, 1.0, 2.2, n)) / 0.2)
    scene.white = scene.white + _u(rng, 0.2, 0.6, n) * patches * severity
    scene.blood = scene.blood * (1.0 - 0.5 * patches)


def _colon_lumen(rng: np.random.Generator, grid: _Grid, scene: _Scene) -> None:
    """The view down the colon: a dim far lumen and haustral folds around it, for the non-cecum views."""
    n = grid.n
    r, angle = _polar(grid, _u(rng, -0.9, 0.9, n), _u(rng, -0.9, 0.9, n))
    present = (rng.uniform(size=n) < 0.7).astype(np.float32)[:, None, None]
    folds = _folds(rng, r, angle, n, radial=False, depth=present * _u(rng, 0.1, 0.45, n))
    lumen = _opening(r, _u(rng, 0.1, 0.35, n), _u(rng, 0.1, 0.25, n), present * _u(rng, 0.5, 0.9, n))
    scene.shade = scene.shade * folds * lumen


def _scene(rng: np.random.Generator, grid: _Grid, label: int) -> _Scene:
    name = KVASIR_CLASSES[label]
    organ = "colon" if name in ("normal-cecum", "polyps", "ulcerative-colitis") else "upper"
    scene = _mucosa(rng, grid, organ)
    if name in ("normal-z-line", "esophagitis"):
        geometry = _z_line(rng, grid, scene)
        if name == "esophagitis":
            _erosions(rng, grid, scene, *geometry)
    elif name == "normal-pylorus":
        _pylorus(rng, grid, scene)
    elif name == "normal-cecum":
        _cecum(rng, grid, scene)
    else:
        _colon_lumen(rng, grid, scene)
        (_polyp if name == "polyps" else _colitis)(rng, grid, scene)
    return scene


def _reflectance(scene: _Scene, k: int) -> np.ndarray:
    """Diffuse reflectance at wavelength index ``k`` (Beer-Lambert in the blood, then white scattering)."""
    density = scene.blood + _CAPILLARY_REACH[k] * scene.capillary + _DEEP_REACH[k] * scene.deep
    diffuse = _TISSUE_BASE[k] * np.exp(-HEMOGLOBIN_ABSORPTION[k] * density)
    white = np.clip(scene.white, 0.0, 1.0)
    return (1.0 - white) * diffuse + white * _WHITE_TISSUE


def _planck(wavelengths_nm: np.ndarray, kelvin: np.ndarray) -> np.ndarray:
    """Relative black-body spectrum, normalised at 540 nm; ``kelvin`` (n, 1) gives (n, K)."""
    def radiance(lam):
        return lam**-5.0 / np.expm1(1.4388e7 / (lam * kelvin))

    return radiance(wavelengths_nm[None, :]) / radiance(np.array([[540.0]]))


def _wli_weights(kelvin: np.ndarray) -> np.ndarray:
    """(n, 3, K) weights from spectral radiance to white-balanced linear RGB under each sample's light."""
    edges = np.concatenate([[400.0], (WAVELENGTHS_NM[1:] + WAVELENGTHS_NM[:-1]) / 2.0, [700.0]])
    sens = camera_sensitivity(WAVELENGTHS_NM) * np.diff(edges)[None, :]
    reference = sens @ _planck(WAVELENGTHS_NM, np.array([[_REFERENCE_KELVIN]]))[0]
    light = _planck(WAVELENGTHS_NM, kelvin)
    return (sens[None, :, :] * light[:, None, :] / reference[None, :, None]).astype(np.float32)


def _blur(images: np.ndarray, sigma_px: np.ndarray) -> np.ndarray:
    """Gaussian blur of (n, H, W, C) images with a per-sample sigma, in the Fourier domain."""
    size = images.shape[1]
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    gain = np.exp(-2.0 * np.pi**2 * sigma_px[:, None, None] ** 2 * (fx * fx + fy * fy))[..., None]
    spectrum = fft.rfft2(images, axes=(1, 2)) * gain.astype(np.float32)
    return fft.irfft2(spectrum, s=(size, size), axes=(1, 2)).astype(np.float32)


def _to_uint8(display: np.ndarray, rng: np.random.Generator, noise: np.ndarray) -> np.ndarray:
    """Adds sensor noise of per-sample level ``noise`` and quantises; works in place on ``display``."""
    grain = rng.standard_normal(display.shape, dtype=np.float32)
    grain *= noise * 255.0
    display *= 255.0
    display += grain
    display += 0.5
    return np.clip(display, 0.0, 255.0, out=display).astype(np.uint8)


def _render_class(label: int, n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WLI, NBI (n, H, W, 3) uint8 and the vessel optical density (n, H, W) of one class's samples.

    Rendered in chunks of at most ``_PIXELS_PER_CHUNK`` pixels, each from its own random stream, so the
    float working memory stays near a gigabyte at any image size.
    """
    step = max(1, _PIXELS_PER_CHUNK // (size * size))
    chunks = [
        _render_chunk(np.random.default_rng([seed, label, start]), label, min(step, n - start), size)
        for start in range(0, n, step)
    ]
    return tuple(np.concatenate(parts) for parts in zip(*chunks))


def _render_chunk(
    rng: np.random.Generator, label: int, n: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    grid = _grid(rng, n, size)
    scene = _scene(rng, grid, label)
    light = scene.shade * (1.0 - _u(rng, 0.15, 0.6, n) * grid.radius**2)  # vignetting
    blur = rng.uniform(0.3, 1.1, n) * size / 64.0
    noise = _u(rng, 0.01, 0.035, n)[..., None]
    weights = _wli_weights(rng.uniform(5000.0, 7000.0, (n, 1))).transpose(0, 2, 1)  # (n, K, 3)

    radiance = np.empty((n, size, size, len(WAVELENGTHS_NM)), dtype=np.float32)
    for k in range(len(WAVELENGTHS_NM)):
        radiance[..., k] = light * (_reflectance(scene, k) + scene.specular)
    wli = np.matmul(radiance.reshape(n, size * size, -1), weights).reshape(n, size, size, 3)
    bands = radiance[..., [_I415, _I540]]

    luminance = wli @ _LUMINANCE
    wli = luminance[..., None] + _WLI_SATURATION * (wli - luminance[..., None])
    exposure = _u(rng, 0.2, 0.32, n) / luminance.mean(axis=(1, 2), keepdims=True)
    wli = np.clip(_blur(wli, blur) * exposure[..., None], 0.0, 1.0) ** (1.0 / 2.2)

    bands = _blur(bands, blur)
    nbi = compose_nbi(bands[..., 0], bands[..., 1]).astype(np.float32) / 255.0
    vessels = scene.capillary + scene.deep
    return _to_uint8(wli, rng, noise), _to_uint8(nbi, rng, _NBI_NOISE_GAIN * noise), vessels.astype(np.float32)


def _render(
    num_per_class: int, image_size: int, seed: int
) -> tuple[RawDataset, np.ndarray]:
    """The dataset and each sample's vessel optical density (for tests of vessel contrast)."""
    if num_per_class < 1 or image_size < 8:
        raise ValueError(f"need num_per_class >= 1 and image_size >= 8, got {num_per_class}, {image_size}")
    k = len(KVASIR_CLASSES)
    total = k * num_per_class
    wli = np.empty((total, image_size, image_size, 3), dtype=np.uint8)
    nbi = np.empty_like(wli)
    vessels = np.empty((total, image_size, image_size), dtype=np.float32)
    for label in range(k):
        wli[label::k], nbi[label::k], vessels[label::k] = _render_class(label, num_per_class, image_size, seed)
    labels = synthetic_labels(num_per_class)
    sources = tuple(f"synthetic:{i}" for i in range(total))
    return RawDataset(wli=wli, nbi=nbi, labels=labels, classes=KVASIR_CLASSES, sources=sources), vessels


def synthetic_labels(num_per_class: int) -> np.ndarray:
    """The classes of the ``synthetic`` dataset without rendering it: class ``i % 6`` at index ``i``."""
    return np.tile(np.arange(len(KVASIR_CLASSES), dtype=np.int64), num_per_class)


def render_synthetic(num_per_class: int = 500, image_size: int = 64, seed: int = 0) -> RawDataset:
    """The ``synthetic`` dataset: ``6 * num_per_class`` paired images, class ``i % 6`` at index ``i``."""
    return _render(num_per_class, image_size, seed)[0]
