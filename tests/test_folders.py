"""The folder readers on tiny image trees built in tmp_path."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import benchmark.kit.data.spectral as spectral
from benchmark.kit.data import dataset_key
from benchmark.kit.data.folders import read_kvasir, read_paired, source_fingerprint
from benchmark.kit.data.types import KVASIR_CLASSES
from benchmark.kit.errors import ConfigError, DataError
from benchmark.kit.schema import DataConfig

SIZE = 32
PER_CLASS = 3


def _save(path: Path, seed: int, shape: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _kvasir(root: Path, suffix: str = ".jpg") -> Path:
    """Six classes of mixed-size images (names out of order on disk) plus an ignored extra class."""
    for c, name in enumerate(KVASIR_CLASSES):
        for i in reversed(range(PER_CLASS)):
            shape = (40, 50) if i % 2 else (70, 60)
            _save(root / name / f"img{i}{suffix}", seed=10 * c + i, shape=shape)
    _save(root / "dyed-lifted-polyps" / "extra.jpg", seed=99, shape=(40, 50))
    return root


def _mics(root: Path, per_class: int = PER_CLASS) -> Path:
    for c, name in enumerate(KVASIR_CLASSES):
        for i in range(per_class):
            _save(root / f"{name}_WLI" / f"{i:03d}.png", seed=10 * c + i, shape=(40, 50))
            _save(root / f"{name}_NBI" / f"{i:03d}.png", seed=1000 + 10 * c + i, shape=(40, 50))
    return root


@pytest.fixture
def kvasir(tmp_path: Path) -> Path:
    return _kvasir(tmp_path / "kvasir")


def test_kvasir_shapes_labels_order(kvasir: Path) -> None:
    data = read_kvasir(kvasir, image_size=SIZE)
    n = len(KVASIR_CLASSES) * PER_CLASS
    assert data.wli.shape == data.nbi.shape == (n, SIZE, SIZE, 3)
    assert data.wli.dtype == data.nbi.dtype == np.uint8
    assert data.classes == KVASIR_CLASSES
    assert data.labels.tolist() == [c for c in range(len(KVASIR_CLASSES)) for _ in range(PER_CLASS)]
    first_class = kvasir / KVASIR_CLASSES[0]
    assert data.sources[:PER_CLASS] == tuple(str(first_class / f"img{i}.jpg") for i in range(PER_CLASS))
    assert not any("dyed-lifted-polyps" in s for s in data.sources)
    again = read_kvasir(kvasir, image_size=SIZE)
    assert again.sources == data.sources
    np.testing.assert_array_equal(again.wli, data.wli)
    np.testing.assert_array_equal(again.nbi, data.nbi)


def test_kvasir_accepts_upper_case_and_png_suffixes(tmp_path: Path) -> None:
    root = _kvasir(tmp_path / "kvasir", suffix=".JPEG")
    _save(root / KVASIR_CLASSES[0] / "zz.png", seed=5, shape=(40, 50))
    (root / KVASIR_CLASSES[0] / "notes.txt").write_text("not an image")
    data = read_kvasir(root, image_size=SIZE)
    assert len(data) == len(KVASIR_CLASSES) * PER_CLASS + 1
    assert data.sources[PER_CLASS].endswith("zz.png")


@pytest.mark.parametrize("content", [b"\xff\xd8\xff\xe0 not really a jpeg", "truncated"])
def test_corrupt_image_is_named(kvasir: Path, content: bytes | str) -> None:
    bad = kvasir / KVASIR_CLASSES[2] / "img1.jpg"
    if content == "truncated":
        _save(bad, seed=1, shape=(300, 300))
        content = bad.read_bytes()[: bad.stat().st_size // 2]
    bad.write_bytes(content)
    with pytest.raises(DataError, match="cannot read image") as info:
        read_kvasir(kvasir, image_size=SIZE)
    assert str(bad) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        read_kvasir(tmp_path / "nowhere", image_size=SIZE)
    with pytest.raises(DataError, match="nowhere"):
        read_paired(tmp_path / "nowhere", image_size=SIZE)


def test_missing_class_folder_lists_expected_names(kvasir: Path) -> None:
    for f in (kvasir / "polyps").iterdir():
        f.unlink()
    (kvasir / "polyps").rmdir()
    with pytest.raises(DataError) as info:
        read_kvasir(kvasir, image_size=SIZE)
    message = str(info.value)
    assert str(kvasir / "polyps") in message
    assert all(name in message for name in KVASIR_CLASSES)


def test_empty_class_folder(kvasir: Path) -> None:
    for f in (kvasir / "esophagitis").iterdir():
        f.unlink()
    (kvasir / "esophagitis" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no .jpg") as info:
        read_kvasir(kvasir, image_size=SIZE)
    assert str(kvasir / "esophagitis") in str(info.value)


def test_unknown_nbi_names_the_choices(kvasir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_kvasir(kvasir, image_size=SIZE, nbi="wtngan")
    assert "wtngan" in str(info.value)
    assert all(choice in str(info.value) for choice in ("spectral", "generator:PATH", "paired"))


def test_read_paired_pairs_by_sorted_name(tmp_path: Path) -> None:
    root = _mics(tmp_path / "mics")
    data = read_paired(root, image_size=SIZE)
    n = len(KVASIR_CLASSES) * PER_CLASS
    assert data.wli.shape == data.nbi.shape == (n, SIZE, SIZE, 3)
    assert data.labels.tolist() == [c for c in range(len(KVASIR_CLASSES)) for _ in range(PER_CLASS)]
    assert data.sources[1] == str(root / f"{KVASIR_CLASSES[0]}_WLI" / "001.png")
    # A 40x50 image filled with one colour stays that colour, so each NBI row can be traced to its file.
    nbi_path = root / f"{KVASIR_CLASSES[1]}_NBI" / "002.png"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(nbi_path)
    data = read_paired(root, image_size=SIZE)
    assert (data.nbi[PER_CLASS + 2] == (10, 200, 30)).all()


def test_read_paired_missing_partner_names_the_file(tmp_path: Path) -> None:
    """A file without its partner is named, on either side (not only counted)."""
    root = _mics(tmp_path / "mics")
    nbi_folder = root / "normal-cecum_NBI"
    (nbi_folder / "000.png").unlink()
    with pytest.raises(DataError, match="no NBI partner") as info:
        read_paired(root, image_size=SIZE)
    assert f"{root / 'normal-cecum_WLI' / '000.png'} in {nbi_folder}" in str(info.value)
    (root / "normal-cecum_WLI" / "000.png").unlink()
    Image.new("RGB", (50, 40)).save(nbi_folder / "extra.png")
    with pytest.raises(DataError, match="no WLI partner") as info:
        read_paired(root, image_size=SIZE)
    assert str(nbi_folder / "extra.png") in str(info.value)


def test_16bit_png_is_scaled_not_saturated(tmp_path: Path) -> None:
    """A 16-bit greyscale PNG keeps its grey levels (value / 257), instead of Pillow's clipping to white."""
    root = _mics(tmp_path / "mics")
    path = root / "polyps_WLI" / "001.png"
    Image.fromarray(np.full((40, 50), 32896, dtype=np.uint16)).save(path)  # 32896 = 128 * 257
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    data = read_paired(root, image_size=SIZE)
    row = data.sources.index(str(path))
    assert (data.wli[row] == 128).all()


def test_read_paired_unpaired_name(tmp_path: Path) -> None:
    root = _mics(tmp_path / "mics")
    nbi_folder = root / "polyps_NBI"
    (nbi_folder / "001.png").rename(nbi_folder / "other.png")
    with pytest.raises(DataError, match="no NBI partner") as info:
        read_paired(root, image_size=SIZE)
    assert str(root / "polyps_WLI" / "001.png") in str(info.value)


def test_kvasir_with_paired_nbi_folder(kvasir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbi_root = kvasir.with_name("kvasir-nbi")
    for name in KVASIR_CLASSES:
        (nbi_root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            # PNG partners of JPEG originals, one flat colour each so the pairing is visible.
            Image.new("RGB", (50, 40), (i, 100, 200)).save(nbi_root / name / f"img{i}.png")
    data = read_kvasir(kvasir, image_size=SIZE, nbi="paired")
    assert data.nbi.shape == data.wli.shape
    assert [int(v) for v in data.nbi[:PER_CLASS, 0, 0, 0]] == [0, 1, 2]

    monkeypatch.chdir(kvasir)
    relative = read_kvasir(Path("."), image_size=SIZE, nbi="paired")
    np.testing.assert_array_equal(relative.nbi, data.nbi)

    # Equal counts, but img1.jpg and img1.png would both claim the same partner.
    _save(kvasir / "polyps" / "img1.png", seed=3, shape=(40, 50))
    _save(nbi_root / "polyps" / "img3.png", seed=4, shape=(40, 50))
    with pytest.raises(DataError, match="share the stem 'img1'"):
        read_kvasir(kvasir, image_size=SIZE, nbi="paired")
    (kvasir / "polyps" / "img1.png").unlink()
    (nbi_root / "polyps" / "img3.png").unlink()

    (nbi_root / "polyps" / "img1.png").unlink()
    with pytest.raises(DataError, match="kvasir-nbi"):
        read_kvasir(kvasir, image_size=SIZE, nbi="paired")


def test_kvasir_paired_without_nbi_folder(kvasir: Path) -> None:
    with pytest.raises(DataError, match="kvasir-nbi"):
        read_kvasir(kvasir, image_size=SIZE, nbi="paired")


def test_generator_that_is_not_torchscript(kvasir: Path, tmp_path: Path) -> None:
    fake = tmp_path / "generator.pt"
    fake.write_text("this is not a model")
    with pytest.raises(DataError, match="not a TorchScript model") as info:
        read_kvasir(kvasir, image_size=SIZE, nbi=f"generator:{fake}")
    assert str(fake) in str(info.value)
    with pytest.raises(DataError, match="not found"):
        read_kvasir(kvasir, image_size=SIZE, nbi=f"generator:{tmp_path / 'missing.pt'}")


class _SwapRedBlue(torch.nn.Module):
    """A 1x1 convolution: an exactly predictable stand-in for a CycleGAN generator."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, kernel_size=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3)[[2, 1, 0]].view(3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_generator(kvasir: Path, tmp_path: Path) -> None:
    path = tmp_path / "generator.pt"
    torch.jit.save(torch.jit.script(_SwapRedBlue()), str(path))
    data = read_kvasir(kvasir, image_size=SIZE, nbi=f"generator:{path}", device="cpu")
    assert data.nbi.shape == data.wli.shape and data.nbi.dtype == np.uint8
    # [-1, 1] in and out: the channel swap must come back pixel-exact.
    np.testing.assert_array_equal(data.nbi, data.wli[..., ::-1])


class _Constant(torch.nn.Module):
    def __init__(self, value: float, channels: int = 3) -> None:
        super().__init__()
        self.value, self.channels = value, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, : self.channels], self.value)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.parametrize("value, pixel", [(-1.0, 0), (0.0, 128), (1.0, 255), (5.0, 255)])
def test_generator_output_range_is_minus_one_to_one(
    kvasir: Path, tmp_path: Path, value: float, pixel: int
) -> None:
    path = tmp_path / "constant.pt"
    torch.jit.save(torch.jit.script(_Constant(value)), str(path))
    data = read_kvasir(kvasir, image_size=SIZE, nbi=f"generator:{path}", device="cpu")
    assert (data.nbi == pixel).all()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_generator_with_wrong_output_shape(kvasir: Path, tmp_path: Path) -> None:
    path = tmp_path / "gray.pt"
    torch.jit.save(torch.jit.script(_Constant(0.0, channels=1)), str(path))
    with pytest.raises(DataError, match="returned") as info:
        read_kvasir(kvasir, image_size=SIZE, nbi=f"generator:{path}", device="cpu")
    assert str(path) in str(info.value)


def test_fingerprint_tracks_files_size_and_nbi(kvasir: Path, tmp_path: Path) -> None:
    base = source_fingerprint(kvasir, "kvasir", image_size=SIZE)
    assert base == source_fingerprint(kvasir, "kvasir", image_size=SIZE)
    assert base != source_fingerprint(kvasir, "kvasir", image_size=SIZE * 2)

    generator = tmp_path / "g.pt"
    generator.write_bytes(b"weights v1")
    with_generator = source_fingerprint(kvasir, "kvasir", image_size=SIZE, nbi=f"generator:{generator}")
    assert with_generator != base
    generator.write_bytes(b"weights v2")
    changed = source_fingerprint(kvasir, "kvasir", image_size=SIZE, nbi=f"generator:{generator}")
    assert changed != with_generator

    touched = kvasir / "polyps" / "img0.jpg"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert source_fingerprint(kvasir, "kvasir", image_size=SIZE) != base

    # Files the reader ignores do not invalidate the cache.
    current = source_fingerprint(kvasir, "kvasir", image_size=SIZE)
    _save(kvasir / "dyed-lifted-polyps" / "more.jpg", seed=7, shape=(40, 50))
    assert source_fingerprint(kvasir, "kvasir", image_size=SIZE) == current


def test_nbi_simulation_version_enters_only_the_keys_of_simulated_nbi(
        kvasir: Path, tmp_path: Path, monkeypatch) -> None:
    """A new simulation version rebuilds caches of `--nbi spectral` and of nothing else."""
    (tmp_path / "kvasir-nbi").symlink_to(kvasir)  # the same files serve as the paired NBI folder
    configs = {nbi: DataConfig(name="kvasir", image_size=SIZE, root=str(kvasir), nbi=nbi) for nbi in ("spectral", "paired")}
    configs["synthetic"] = DataConfig(name="synthetic", image_size=SIZE, synthetic={
        "train_per_class": 2, "val_per_class": 1, "test_per_class": 1, "seed": 0})
    before = {name: dataset_key(cfg) for name, cfg in configs.items()}
    monkeypatch.setattr(spectral, "SIMULATION_VERSION", spectral.SIMULATION_VERSION + 1)
    after = {name: dataset_key(cfg) for name, cfg in configs.items()}
    assert after["spectral"] != before["spectral"]
    assert after["paired"] == before["paired"] and after["synthetic"] == before["synthetic"]


def test_kvasir_v2_reads_the_kvasir_layout(kvasir: Path) -> None:
    v1, v2 = (DataConfig(name=name, image_size=SIZE, root=str(kvasir), nbi="spectral") for name in ("kvasir", "kvasir-v2"))
    assert dataset_key(v2)["fingerprint"] == dataset_key(v1)["fingerprint"]


def test_fingerprint_of_paired_layout(tmp_path: Path) -> None:
    root = _mics(tmp_path / "mics")
    base = source_fingerprint(root, "paired", image_size=SIZE)
    _save(root / "polyps_NBI" / "000.png", seed=123, shape=(41, 50))
    assert source_fingerprint(root, "paired", image_size=SIZE) != base
