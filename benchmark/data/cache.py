"""Decoded datasets cached once on disk as uint8 arrays, keyed by what went into them."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..files import stable_hash
from .types import RawDataset


def cache_root() -> Path:
    """`$MICS_BENCH_CACHE`, else `$XDG_CACHE_HOME/mics-bench`, else `~/.cache/mics-bench`."""
    if os.environ.get("MICS_BENCH_CACHE"):
        return Path(os.environ["MICS_BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mics-bench"


def key_of(parts: dict) -> str:
    return stable_hash(parts)


def load_or_build(folder: Path, key_parts: dict, build: Callable[[], RawDataset]) -> RawDataset:
    """Read `folder` if it holds a complete cache, else build and write it atomically.

    The arrays are written into a temporary sibling folder that is renamed into place only when
    complete, so an interrupted or failed build leaves nothing behind."""
    if (folder / "meta.json").exists():
        return _read(folder)
    raw = build()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    try:
        np.save(tmp / "wli.npy", raw.wli)
        np.save(tmp / "nbi.npy", raw.nbi)
        np.save(tmp / "labels.npy", raw.labels)
        meta = {"key": key_parts, "classes": list(raw.classes), "sources": list(raw.sources)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _read(folder)


def _read(folder: Path) -> RawDataset:
    meta = json.loads((folder / "meta.json").read_text())
    return RawDataset(
        wli=np.load(folder / "wli.npy", mmap_mode="r"),
        nbi=np.load(folder / "nbi.npy", mmap_mode="r"),
        labels=np.load(folder / "labels.npy"),
        classes=tuple(meta["classes"]),
        sources=tuple(meta["sources"]),
    )
