"""Readers of real image folders into a `RawDataset`.

Two layouts are understood:

- Kvasir (`kvasir`, `kvasir-v2`): the official archive, `<root>/<class>/*.jpg`. Only the six classes of
  `KVASIR_CLASSES` are read; other folders of the archive (dyed-lifted-polyps, ...) are ignored. Kvasir has
  no NBI images, so the NBI view comes from the `nbi` choice:

  - `"spectral"`: `benchmark.kit.data.spectral.simulate_nbi` applied to the decoded WLI;
  - `"generator:PATH"`: a TorchScript WLI->NBI generator (e.g. an exported CycleGAN generator). It gets
    float32 NCHW RGB batches scaled to [-1, 1] (pixel 0 -> -1, 255 -> 1), the convention of
    CycleGAN/pix2pix generators with a tanh output, and must return the same shape in the same range
    (values outside are clipped). A generator with another convention can be wrapped in a small
    TorchScript module that rescales, so the reader keeps one convention;
  - `"paired"`: real or pre-generated NBI files in a sibling folder `<root>-nbi` (the root's name plus
    `-nbi`, e.g. `kvasir-dataset-v2` -> `kvasir-dataset-v2-nbi`) with the same class folders. Each WLI file
    is paired with the NBI file of the same stem, so the NBI files may use another extension (PNG from a
    generator beside JPEG originals).

- MICS (`paired`): the layout of the MICS authors' code, `<root>/<class>_WLI/*.png` beside
  `<root>/<class>_NBI/*.png`, paired by file stem in the same way.

Images are decoded with Pillow, converted to RGB and resized to `image_size` x `image_size` without keeping
the aspect ratio (the paper feeds 256x256 images). The resize is bicubic; Pillow widens the kernel when
shrinking, so it averages like an area filter instead of aliasing. JPEGs are first decoded in draft mode,
which lets libjpeg scale down by 1/2, 1/4 or 1/8 in the DCT while staying at least `image_size` on both
sides: a 2-4x faster decode of the large Kvasir frames at no visible cost.

Order is deterministic: classes in `KVASIR_CLASSES` order, files sorted by name within a class. The readers
only read; caching their output is the caller's job, keyed by `source_fingerprint`.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from benchmark.kit.data.spectral import simulate_nbi
from benchmark.kit.data.types import KVASIR_CLASSES, RawDataset
from benchmark.kit.errors import ConfigError, DataError, unknown_name
from benchmark.kit.files import file_sha256, stable_hash

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
NBI_CHOICES = ("spectral", "generator:PATH", "paired")
PAIRED_NBI_SUFFIX = "-nbi"
GENERATOR_BATCH = 16
# Part of the fingerprint: bump it when decoding changes, so caches of the old pixels are not reused.
DECODER_VERSION = "pil-draft-bicubic-1"


@dataclass(frozen=True)
class _Listing:
    """The image files a reader will use, found and paired before anything is decoded."""

    wli: list[Path]
    nbi: list[Path] | None  # None when the NBI view is computed from the WLI
    labels: list[int]


def read_kvasir(
    root: Path,
    image_size: int = 256,
    nbi: str = "spectral",
    device: str | None = None,
    progress: bool = False,
) -> RawDataset:
    """Read a Kvasir / Kvasir-v2 archive; `nbi` is "spectral", "generator:PATH" or "paired".

    `device` only matters for a generator: None or "auto" is CUDA when available, else the CPU."""
    root = Path(root)
    _check_size(image_size)
    kind, generator_path = _parse_nbi(nbi)
    listing = _kvasir_listing(root, kind)
    torch_device = _device(device)
    generator = _load_generator(generator_path, torch_device) if generator_path else None

    wli = _decode_all(listing.wli, image_size, progress, "WLI")
    if listing.nbi is not None:
        nbi_images = _decode_all(listing.nbi, image_size, progress, "NBI")
    elif generator is not None:
        nbi_images = _generate_nbi(generator, generator_path, torch_device, wli, progress)
    else:
        nbi_images = simulate_nbi(wli)
    return _dataset(listing, wli, nbi_images)


def read_paired(root: Path, image_size: int = 256, progress: bool = False) -> RawDataset:
    """Read the MICS authors' layout, `<root>/<class>_WLI/*.png` with `<root>/<class>_NBI/*.png`."""
    root = Path(root)
    _check_size(image_size)
    listing = _paired_listing(root)
    wli = _decode_all(listing.wli, image_size, progress, "WLI")
    nbi_images = _decode_all(listing.nbi, image_size, progress, "NBI")
    return _dataset(listing, wli, nbi_images)


def source_fingerprint(root: Path, layout: str, image_size: int = 256, nbi: str = "spectral") -> str:
    """A sha256 hex digest that changes whenever a cached read of these inputs would be stale.

    `layout` is "kvasir" (for `read_kvasir`, which takes `nbi`) or "paired" (for `read_paired`, whose
    NBI views are its files: `nbi` is ignored). The digest covers every image file used, as
    (path relative to `root`, size, mtime_ns), the generator file's content, `image_size`, the NBI choice
    and the decoder version. It lists and stats files but decodes nothing, and raises the same
    `DataError`s as the reader for a missing root, class folder or partner file.
    Paths are relative so that the same archive unpacked elsewhere keeps its cache."""
    root = Path(root)
    _check_size(image_size)
    if layout == "kvasir":
        kind, generator_path = _parse_nbi(nbi)
        listing = _kvasir_listing(root, kind)
    elif layout == "paired":
        kind, generator_path = "paired", None
        listing = _paired_listing(root)
    else:
        raise ValueError(f"unknown layout {layout!r}; expected 'kvasir' or 'paired'")

    files = listing.wli + (listing.nbi or [])
    stats = [(p, p.stat()) for p in files]
    key = {
        "decoder": DECODER_VERSION,
        "layout": layout,
        "image_size": image_size,
        "nbi": kind,
        "generator_sha256": file_sha256(generator_path) if generator_path else None,
        "files": [(Path(os.path.relpath(p, root)).as_posix(), s.st_size, s.st_mtime_ns) for p, s in stats],
    }
    return stable_hash(key, length=64)


def _check_size(image_size: int) -> None:
    if image_size < 1:
        raise ConfigError(f"image size must be a positive number of pixels, got {image_size}")


def _parse_nbi(nbi: str) -> tuple[str, Path | None]:
    """Split an NBI choice into its kind and, for a generator, the model path."""
    if nbi in ("spectral", "paired"):
        return nbi, None
    prefix = "generator:"
    if nbi.startswith(prefix) and len(nbi) > len(prefix):
        path = Path(nbi[len(prefix):])
        if not path.is_file():
            raise DataError(f"generator file not found: {path}")
        return "generator", path
    raise unknown_name("NBI source", nbi, NBI_CHOICES)


def _kvasir_listing(root: Path, nbi_kind: str) -> _Listing:
    _check_root(root)
    absolute = Path(os.path.abspath(root))  # gives "." and "kvasir/" a name to extend
    nbi_root = absolute.with_name(absolute.name + PAIRED_NBI_SUFFIX)
    if nbi_kind == "paired" and not nbi_root.is_dir():
        raise DataError(
            f"NBI folder not found: {nbi_root} (--nbi paired reads <root>{PAIRED_NBI_SUFFIX}/<class>/)"
        )
    wli: list[Path] = []
    nbi: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(KVASIR_CLASSES):
        files = _class_images(root / name)
        wli += files
        labels += [label] * len(files)
        if nbi_kind == "paired":
            nbi += _partners(files, root / name, nbi_root / name)
    return _Listing(wli, nbi if nbi_kind == "paired" else None, labels)


def _paired_listing(root: Path) -> _Listing:
    _check_root(root)
    wli: list[Path] = []
    nbi: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(KVASIR_CLASSES):
        wli_folder, nbi_folder = root / f"{name}_WLI", root / f"{name}_NBI"
        files = _class_images(wli_folder, suffix="_WLI")
        wli += files
        nbi += _partners(files, wli_folder, nbi_folder, suffix="_NBI")
        labels += [label] * len(files)
    return _Listing(wli, nbi, labels)


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")


def _class_images(folder: Path, suffix: str = "") -> list[Path]:
    """The images of one class folder, sorted by name.

    Names starting with a dot are skipped: macOS archives carry `._name.jpg` metadata files."""
    expected = ", ".join(name + suffix for name in KVASIR_CLASSES)
    if not folder.is_dir():
        raise DataError(f"missing class folder {folder}; expected folders: {expected}")
    files = sorted(
        (p for p in folder.iterdir()
         if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()),
        key=lambda p: p.name,
    )
    if not files:
        raise DataError(f"no .jpg/.jpeg/.png images in class folder {folder}; expected folders: {expected}")
    return files


def _partners(wli: list[Path], wli_folder: Path, nbi_folder: Path, suffix: str = "") -> list[Path]:
    """The NBI file of each WLI file, matched by stem, in WLI order."""
    nbi = _class_images(nbi_folder, suffix)
    nbi_by_stem, wli_by_stem = _by_stem(nbi), _by_stem(wli)
    unpaired = [p for stem, p in wli_by_stem.items() if stem not in nbi_by_stem]
    if unpaired:
        raise DataError(f"no NBI partner for {unpaired[0]} in {nbi_folder} (pairs share the file stem)")
    unpaired = [p for stem, p in nbi_by_stem.items() if stem not in wli_by_stem]
    if unpaired:
        raise DataError(f"no WLI partner for {unpaired[0]} in {wli_folder} (pairs share the file stem)")
    return [nbi_by_stem[p.stem] for p in wli]


def _by_stem(files: list[Path]) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for p in files:
        if p.stem in by_stem:
            raise DataError(f"ambiguous pairing: {by_stem[p.stem]} and {p} share the stem '{p.stem}'")
        by_stem[p.stem] = p
    return by_stem


def _decode(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))
            img.load()  # forces the full decode, so truncated files fail here
            rgb = _to_8bit(img).convert("RGB")
        return np.asarray(rgb.resize((size, size), Image.Resampling.BICUBIC))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {_one_line(exc)}") from exc


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit greyscale (Pillow's modes I;16* and I, e.g. from 16-bit PNGs) scaled to 8 bits: Pillow's own
    conversion clips every value above 255 to white."""
    if not img.mode.startswith("I"):
        return img
    values = np.asarray(img, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8), "L")


def _decode_all(files: list[Path], size: int, progress: bool, what: str) -> np.ndarray:
    """Decode in threads (Pillow releases the GIL while decoding and resizing), keeping file order."""
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        images = pool.map(partial(_decode, size=size), files)
        bar = tqdm(images, total=len(files), desc=f"decode {what}", disable=not progress)
        for i, image in enumerate(bar):
            out[i] = image
    finally:
        # On the first bad file, do not wait for the thousands of decodes still queued.
        pool.shutdown(cancel_futures=True)
    return out


def _device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _load_generator(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            # The user chose TorchScript on purpose; torch's deprecation notice is noise on their console.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
            model = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise DataError(
            f"not a TorchScript model: {path} (save a scripted or traced generator with torch.jit.save)"
        ) from exc
    return model.eval()


def _generate_nbi(
    model: torch.jit.ScriptModule, path: Path, device: torch.device, wli: np.ndarray, progress: bool
) -> np.ndarray:
    out = np.empty_like(wli)
    starts = range(0, len(wli), GENERATOR_BATCH)
    with torch.inference_mode():
        for start in tqdm(starts, desc="generator NBI", disable=not progress):
            batch = torch.from_numpy(wli[start:start + GENERATOR_BATCH]).to(device)
            x = batch.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            try:
                y = model(x)
            except RuntimeError as exc:
                raise DataError(
                    f"generator {path} failed on a {tuple(x.shape)} batch: {_one_line(exc)}"
                ) from exc
            if not isinstance(y, torch.Tensor) or y.shape != x.shape:
                shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                raise DataError(
                    f"generator {path} returned {shape} for a {tuple(x.shape)} batch; expected the same shape"
                )
            pixels = y.clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)
            out[start:start + GENERATOR_BATCH] = pixels.permute(0, 2, 3, 1).cpu().numpy()
    return out


def _dataset(listing: _Listing, wli: np.ndarray, nbi: np.ndarray) -> RawDataset:
    return RawDataset(
        wli=wli,
        nbi=nbi,
        labels=np.asarray(listing.labels, dtype=np.int64),
        classes=KVASIR_CLASSES,
        sources=tuple(str(p) for p in listing.wli),
    )


def _one_line(exc: BaseException) -> str:
    """The informative line of an error: TorchScript puts the real cause last, after a traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
