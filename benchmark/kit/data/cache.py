"""Decoded datasets cached once on disk as uint8 arrays, keyed by what went into them."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from benchmark.kit.data.types import RawDataset
from benchmark.kit.files import stable_hash, warn_once

ARRAYS = ("wli.npy", "nbi.npy", "labels.npy")


def cache_root() -> Path:
    """`$MICS_BENCH_CACHE`, else `$XDG_CACHE_HOME/mics-bench`, else `~/.cache/mics-bench`."""
    if os.environ.get("MICS_BENCH_CACHE"):
        return Path(os.environ["MICS_BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mics-bench"


def key_of(parts: dict) -> str:
    return stable_hash(parts)


class DamagedCache(Exception):
    """A cache file that is not what `load_or_build` wrote: `path` and what is wrong with it."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def load_or_build(folder: Path, key_parts: dict, build: Callable[[], RawDataset]) -> RawDataset:
    """Read `folder` if it holds a complete cache, else build and write it atomically.

    The arrays are written into a temporary sibling folder that is renamed into place only when
    complete, so an interrupted or failed build leaves nothing behind. A damaged cache (a file
    truncated, missing or rewritten) is reported in one line naming the file, and built again."""
    if (folder / "meta.json").exists():
        try:
            return _read(folder)
        except DamagedCache as err:
            warn_once(err.path, err.problem, f"the cache {folder.name} is built again")
            _discard(folder)
    raw = build()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    try:
        np.save(tmp / "wli.npy", raw.wli)
        np.save(tmp / "nbi.npy", raw.nbi)
        np.save(tmp / "labels.npy", raw.labels)
        meta = {"key": key_parts, "classes": list(raw.classes), "sources": list(raw.sources),
                "bytes": {name: (tmp / name).stat().st_size for name in ARRAYS}}
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
    """The cached arrays, each file checked: sizes as written (caches of CACHE_VERSION 2 have none),
    arrays that load, agree in length and hold labels of existing classes."""
    meta = _checked(folder / "meta.json", lambda p: json.loads(p.read_text()))
    if not isinstance(meta, dict) or not {"classes", "sources"} <= meta.keys():
        raise DamagedCache(folder / "meta.json", "no classes and sources")
    for name, size in meta.get("bytes", {}).items():
        if _checked(folder / name, lambda p: p.stat().st_size) != size:
            raise DamagedCache(folder / name, f"{(folder / name).stat().st_size} bytes, not {size}")
    wli, nbi, labels = (_checked(folder / name, lambda p: np.load(p, mmap_mode="r")) for name in ARRAYS)
    labels = np.asarray(labels)
    if len(labels) != len(meta["sources"]) or (len(labels) and not 0 <= labels.min() <= labels.max() < len(meta["classes"])):
        raise DamagedCache(folder / "labels.npy", f"not {len(meta['sources'])} labels of {len(meta['classes'])} classes")
    for name, array in (("wli.npy", wli), ("nbi.npy", nbi)):
        if array.shape[:1] != labels.shape or array.dtype != np.uint8:
            raise DamagedCache(folder / name, f"{array.dtype} array of shape {array.shape} for {len(labels)} images")
    return RawDataset(wli=wli, nbi=nbi, labels=labels, classes=tuple(meta["classes"]), sources=tuple(meta["sources"]))


def _checked(path: Path, read: Callable[[Path], object]):
    """`read(path)`, any error of reading it turned into a DamagedCache naming the file."""
    try:
        return read(path)
    except (OSError, ValueError, EOFError) as err:  # json's and numpy's format errors are ValueErrors
        raise DamagedCache(path, f"{type(err).__name__}: {err}") from None


def _discard(folder: Path) -> None:
    """Move a damaged cache aside (a rename: readers that have its arrays open keep them), then delete it."""
    aside = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    try:
        os.replace(folder, aside / "damaged")
    except FileNotFoundError:  # another process moved it first
        pass
    shutil.rmtree(aside, ignore_errors=True)
