"""Files that several processes share: written so that readers never see half of one, locked so that
whatever must not happen twice at once does not, and named by a stable hash of what went into them.

Locks are `flock`s, which the kernel releases when their process dies, even by SIGKILL, so no lock is
ever left stale."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of `obj` as sorted JSON (anything JSON cannot encode as its str()): equal for equal
    contents in any key order, across processes and machines; the name of a cache entry or a config."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for the `with` block to write; renamed onto `path` when the block
    ends normally, removed when it raises. A kill mid-write leaves `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's bytes, read in blocks (weights files, generators)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def file_lock(path: Path, wait: bool = True, enabled: bool = True) -> Iterator[bool]:
    """Hold an exclusive `flock` on `path` for the `with` block; yields whether it was acquired.

    With `wait=False` a lock held elsewhere yields False at once. The holder writes who it is into
    the file, for `lock_holder`. Lock files are never deleted: deleting one while another process
    waits on it would let two processes hold "the" lock at once. `enabled=False` takes no lock (the
    processes of one torchrun job that follow the one holding it for all)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not enabled:
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            acquired = True
        except BlockingIOError:
            acquired = False
        if acquired:
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        yield acquired
    finally:
        os.close(fd)  # releases the lock


def lock_holder(path: Path) -> str | None:
    """Who holds the lock on `path` ("host pid N since ..."), or None when nobody does."""
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a shared lock: read-only is enough
        except BlockingIOError:
            return Path(path).read_text().strip() or "another process"
        return None
    finally:
        os.close(fd)
