"""Files that several processes share: written so that readers never see half of one, locked so that
whatever must not happen twice at once does not, named by a stable hash of what went into them, and
checked for being whole when read.

Locks are `flock`s, which the kernel releases when their process dies, even by SIGKILL, so no lock is
ever left stale."""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

_log = logging.getLogger(__name__)
_warned: set[str] = set()


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of `obj` as sorted JSON (anything JSON cannot encode as its str()): equal for equal
    contents in any key order, across processes and machines; the name of a cache entry or a config."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for the `with` block to write; renamed onto `path` when the block
    ends normally, removed when it raises. A kill mid-write leaves `path` as it was (and the temporary
    file, which the next writer holding the same lock removes: `remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None:  # e.g. a full disk found when a file object is flushed: name the file
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_if_changed(path: Path, data: bytes) -> Path:
    """`data` written whole to `path` (`atomic_write`), unless `path` already holds exactly it: a
    finished, read-only reports folder can be published again as a no-op."""
    path = Path(path)
    if path.exists() and path.read_bytes() == data:
        return path
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return path


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


def holder_is_gone(holder: str) -> bool:
    """Whether the process a lock file names ("host pid N since ...") is known to have ended: it ran on
    this host and its pid is free. A lock held while its holder is gone is held by a process that
    inherited it, which the suite never lets happen; for another host nothing is known (False)."""
    parts = holder.split()
    if len(parts) < 3 or parts[0] != socket.gethostname() or parts[1] != "pid" or not parts[2].isdigit():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files `atomic_write(path)` left when its process was killed. Only for a
    caller that holds the lock every writer of `path` holds: then no other writer is mid-write."""
    for tmp in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def zip_problem(path: Path, full: bool = False) -> str | None:
    """What is wrong with a zip file (`.npz`, `torch.save`'s format), or None when it is whole.

    Reading the central directory, which a zip file ends with, finds a truncated file at once;
    `full` also reads every member and checks its CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip() if full else None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return f"member {bad} fails its CRC check" if bad else None


def warn_once(path: Path, problem: str, action: str) -> None:
    """One line naming a damaged file, what is wrong with it and what is done about it; once per file
    and command, however often the file is read."""
    line = f"warning: damaged file {path} ({problem}): {action}"
    if line not in _warned:
        _warned.add(line)
        tqdm.write(line, file=sys.stderr)  # the terminal, above any progress bar
        _log.info(line)  # and the run's log, when a run is reading it


def forget_warnings() -> None:
    """A new command reports every damaged file it reads again (commands may share a process)."""
    _warned.clear()
