"""`data describe|prepare|samples|calibrate`: look at a dataset before training on it."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.harness.config import parse_overrides, set_dotted
from benchmark.kit.config_files import DEFAULT_PROFILE, load_profile
from benchmark.kit.data import DATASETS, dataset_key, labeled_subset, load_dataset, load_split_indices
from benchmark.kit.errors import ConfigError, unknown_name
from benchmark.kit.files import atomic_write
from benchmark.kit.schema import DataConfig, checked

ACTIONS = ("describe", "prepare", "samples", "calibrate")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", help=f"one of {', '.join(ACTIONS)}")
    parser.add_argument("--dataset", default="synthetic", help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--data-root", default=None, help="folder of a real dataset")
    parser.add_argument("--nbi", default=None, help="spectral | generator:PATH | paired")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="whose data settings (image size, ...) to use")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--labels", default="5,10,30,50", help="label ratios to count in `describe`")
    parser.add_argument("--per-class", type=int, default=8, help="images per class in `samples`")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder for `samples`")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="data.* override")


def data_config(args: argparse.Namespace) -> DataConfig:
    """The profile's data section with the command line's dataset, folder, NBI source and `--set data.*`."""
    values = {"data": load_profile(args.profile)["data"]}
    values["data"]["name"] = args.dataset
    if args.data_root is not None:
        values["data"]["root"] = args.data_root
    if args.nbi is not None:
        values["data"]["nbi"] = args.nbi
    for key, value in parse_overrides(args.overrides).items():
        set_dotted(values, key, value)
    return checked(DataConfig, values["data"], "--set / --nbi", prefix="data")


def main(args: argparse.Namespace) -> int:
    if args.action not in ACTIONS:
        raise unknown_name("data action", args.action, ACTIONS)
    if args.dataset not in DATASETS:
        raise unknown_name("dataset", args.dataset, DATASETS)
    data_cfg = data_config(args)
    if args.action == "calibrate":
        return _calibrate(args.dataset, data_cfg)
    raw, folder = load_dataset(data_cfg, progress=True)
    if args.action == "prepare":
        print(f"{args.dataset}: {len(raw)} pairs of {raw.wli.shape[1]}x{raw.wli.shape[2]} cached in {folder}")
    elif args.action == "describe":
        print(describe(raw, folder, data_cfg, args.seed, [float(r) for r in args.labels.split(",")]))
    else:
        path = write_samples(raw, args.out / f"samples_{args.dataset}.png", args.per_class, args.seed)
        print(f"wrote {path}")
    return 0


def describe(raw, folder: Path, data_cfg: DataConfig, seed: int, ratios: list[float]) -> str:
    """Per-class counts per split part and labeled counts per ratio, as a text table."""
    import pandas as pd

    parts = load_split_indices(raw, folder, data_cfg, seed)
    table = pd.DataFrame(index=list(raw.classes))
    for name, idx in parts.items():
        table[name] = np.bincount(raw.labels[idx], minlength=len(raw.classes))
    for r in ratios:
        lab = labeled_subset(raw, parts, data_cfg, r, seed)
        table[f"labeled@{r:g}%"] = np.bincount(raw.labels[lab], minlength=len(raw.classes))
    table.loc["total"] = table.sum()
    return f"{data_cfg.name} (seed {seed}, cache {folder})\n{table.to_string()}"


def write_samples(raw, path: Path, per_class: int, seed: int) -> Path:
    """A PNG grid: for each class, a row of WLI images above the row of their NBI partners."""
    rng = np.random.default_rng(seed)
    h, w = raw.wli.shape[1:3]
    rows = []
    for c in range(len(raw.classes)):
        members = np.flatnonzero(raw.labels == c)
        pick = np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False))
        for images in (raw.wli, raw.nbi):
            row = np.zeros((h, per_class * w, 3), dtype=np.uint8)
            for j, i in enumerate(pick):
                row[:, j * w:(j + 1) * w] = images[i]
            rows.append(row)
    with atomic_write(path) as tmp:
        Image.fromarray(np.concatenate(rows)).save(tmp, format="PNG")
    return path


def _calibrate(dataset: str, data_cfg: DataConfig) -> int:
    """The synthetic dataset's difficulty, measured with a fixed small CNN (docs/synthetic.md)."""
    if dataset != "synthetic":
        raise ConfigError(f"'data calibrate' measures the synthetic dataset only, not '{dataset}'")
    from benchmark.kit.data.calibration import calibrate

    table = calibrate(dataset_key(data_cfg)["num_per_class"], data_cfg.image_size, data_cfg.synthetic.seed)
    print(table.to_string())
    return 0
