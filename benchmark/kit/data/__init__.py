"""The data layer: paired WLI/NBI datasets, cached once, split once per seed.

    raw, folder = load_dataset(cfg.data)              # decoded and cached
    split = make_split(raw, folder, cfg.data, labels=5, seed=0)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmark.kit.data.cache import cache_root, key_of, load_or_build
from benchmark.kit.data.splits import check_ratio, labeled_indices, split_indices
from benchmark.kit.data.types import KVASIR_CLASSES, PairedArrays, RawDataset, SemiSupervisedSplit
from benchmark.kit.errors import ConfigError, DataError, unknown_name
from benchmark.kit.files import atomic_write, warn_once
from benchmark.kit.schema import DATASETS, DataConfig

# Bump when decoding or rendering (synthetic.py) changes the arrays, so existing caches are rebuilt. The
# NBI simulation has its own version (spectral.SIMULATION_VERSION), in the key of the datasets it makes.
CACHE_VERSION = 2

__all__ = [
    "DATASETS", "KVASIR_CLASSES", "PairedArrays", "RawDataset", "SemiSupervisedSplit",
    "check_ratio", "labeled_subset", "load_dataset", "make_split", "dataset_key", "split_ratios", "split_seed",
]


def split_ratios(data_cfg: DataConfig) -> tuple[float, float, float]:
    """Train / val / test proportions of each class: `data.split`, or for the synthetic dataset its
    per-class scene counts (which every class has exactly, so the split takes exactly those counts)."""
    if data_cfg.name == "synthetic":
        syn = data_cfg.synthetic
        return tuple(float(getattr(syn, f"{part}_per_class")) for part in ("train", "val", "test"))
    return tuple(data_cfg.split)


def split_seed(data_cfg: DataConfig, seed: int, part: str = "split") -> int:
    """The seed that draws the train / val / test partition (`part` "split") or the labeled subsets
    ("labeled"): the run's, unless `data.split_seed` / `data.labeled_seed` fixes it."""
    fixed = getattr(data_cfg, f"{part}_seed")
    return seed if fixed is None else fixed


def _scenes_per_class(data_cfg: DataConfig) -> int:
    return int(sum(split_ratios(data_cfg)))


def dataset_key(data_cfg: DataConfig) -> dict:
    """Everything that determines the decoded arrays of a dataset."""
    name = data_cfg.name
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    size = data_cfg.image_size
    if name == "synthetic":
        return {"version": CACHE_VERSION, "name": name, "image_size": size,
                "num_per_class": _scenes_per_class(data_cfg), "seed": data_cfg.synthetic.seed}
    root = data_cfg.root
    if not root:
        raise ConfigError(f"dataset '{name}' needs --data-root (the folder holding its class folders)")
    from benchmark.kit.data.folders import source_fingerprint
    from benchmark.kit.data.spectral import SIMULATION_VERSION

    nbi = "paired" if name == "paired" else data_cfg.nbi
    key = {"version": CACHE_VERSION, "name": name, "image_size": size, "nbi": nbi,
           "fingerprint": source_fingerprint(Path(root), "paired" if name == "paired" else "kvasir", size, nbi)}
    if nbi == "spectral":  # only these arrays change with the simulation; other caches stay valid
        key["nbi_simulation"] = SIMULATION_VERSION
    return key


def load_dataset(data_cfg: DataConfig, progress: bool = False) -> tuple[RawDataset, Path]:
    """The decoded dataset and its cache folder (where split files live too)."""
    key = dataset_key(data_cfg)
    folder = cache_root() / f"{key['name']}-{key_of(key)}"
    return load_or_build(folder, key, lambda: _build(data_cfg, progress)), folder


def _build(data_cfg: DataConfig, progress: bool) -> RawDataset:
    name, size = data_cfg.name, data_cfg.image_size
    if name == "synthetic":
        from benchmark.kit.data.synthetic import render_synthetic

        return render_synthetic(_scenes_per_class(data_cfg), size, data_cfg.synthetic.seed)
    from benchmark.kit.data.folders import read_kvasir, read_paired

    root = Path(data_cfg.root)
    if name == "paired":
        return read_paired(root, size, progress=progress)
    return read_kvasir(root, size, nbi=data_cfg.nbi, progress=progress)


def split_file(folder: Path, data_cfg: DataConfig, seed: int) -> Path:
    ratios = "-".join(f"{r:g}" for r in split_ratios(data_cfg))
    return folder / f"split-{ratios}-seed{split_seed(data_cfg, seed)}.json"


def load_split_indices(raw: RawDataset, folder: Path, data_cfg: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """The train/val/test indices of a run's seed, read from (or first written to) its split file."""
    path = split_file(folder, data_cfg, seed)
    if path.exists():
        try:
            saved = {k: np.asarray(v, dtype=np.int64) for k, v in json.loads(path.read_text()).items()}
            if saved.keys() == {"train", "val", "test"} and np.array_equal(
                    np.sort(np.concatenate(list(saved.values()))), np.arange(len(raw))):
                return saved
            problem = f"not a partition of the {len(raw)} images into train, val and test"
        except (ValueError, TypeError, AttributeError) as err:  # not JSON, or not lists of integers
            problem = f"{type(err).__name__}: {err}"
        warn_once(path, problem, "written again")
    parts = split_indices(raw.labels, split_ratios(data_cfg), split_seed(data_cfg, seed))
    _check_every_class(raw, parts, split_ratios(data_cfg))
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({k: v.tolist() for k, v in parts.items()}))
    return parts


def _check_every_class(raw: RawDataset, parts: dict[str, np.ndarray], data_split) -> None:
    """Every class in train, val and test: a class with too few images would leave validation or
    test without it (or empty), and its accuracy undefined."""
    for name, idx in parts.items():
        counts = np.bincount(raw.labels[idx], minlength=len(raw.classes))
        if (counts == 0).any():
            c = int(np.argmin(counts))
            total = int((raw.labels == c).sum())
            raise DataError(f"class '{raw.classes[c]}' has {total} image{'s' * (total != 1)}: too few for one in "
                            f"each of train, val and test (none in {name} with data.split "
                            f"{list(data_split)}); add images to it")


def _part(raw: RawDataset, idx: np.ndarray, hide_labels: bool = False) -> PairedArrays:
    labels = np.full(len(idx), -1, dtype=np.int64) if hide_labels else raw.labels[idx].astype(np.int64)
    return PairedArrays(wli=np.ascontiguousarray(raw.wli[idx]), nbi=np.ascontiguousarray(raw.nbi[idx]),
                        labels=labels, index=idx)


def labeled_subset(raw: RawDataset, parts: dict[str, np.ndarray], data_cfg: DataConfig, labels: float,
                   seed: int) -> np.ndarray:
    """Dataset indices of the labeled images of a run: `labels` % of each class of `parts["train"]`."""
    return labeled_indices(parts["train"], raw.labels, labels, split_seed(data_cfg, seed, "labeled"), raw.classes)


def make_split(raw: RawDataset, folder: Path, data_cfg: DataConfig, labels: float, seed: int) -> SemiSupervisedSplit:
    """The semi-supervised view of one (dataset, seed, label ratio)."""
    parts = load_split_indices(raw, folder, data_cfg, seed)
    labeled = labeled_subset(raw, parts, data_cfg, labels, seed)
    # USB's include_lb_to_ulb: the labeled images are also unlabeled images (its default, and usb_cv's)
    unlabeled = parts["train"] if data_cfg.include_labeled_in_unlabeled else np.setdiff1d(parts["train"], labeled)
    return SemiSupervisedSplit(
        dataset=data_cfg.name, classes=raw.classes, labels_percent=check_ratio(labels),
        labeled=_part(raw, labeled), unlabeled=_part(raw, unlabeled, hide_labels=True),
        val=_part(raw, parts["val"]), test=_part(raw, parts["test"]),
    )
