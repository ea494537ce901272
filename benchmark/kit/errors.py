"""User-facing errors: the CLI prints their message on one line and exits with code 2."""
from __future__ import annotations

import errno


class BenchmarkError(Exception):
    """Bad input from the user (names, values, files); never a bug in the suite."""

    exit_code = 2


class DataError(BenchmarkError):
    """A dataset folder, file or image that cannot be used, named in the message."""


class ConfigError(BenchmarkError):
    """An unknown name or a bad value in the configuration or on the command line."""


def unknown_name(kind: str, name: str, valid) -> ConfigError:
    """The one-line error for a name that is not among the valid choices."""
    choices = ", ".join(sorted(valid))
    return ConfigError(f"unknown {kind} '{name}'; valid: {choices}")


# What the machine, not the run, is short of: no space, no write access, a file where a folder must be.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST)


def storage_error(err: OSError) -> BenchmarkError | None:
    """The one-line error for an OSError that no retry can fix (a full disk, a read-only or
    unwritable folder), naming the file; None for any other OSError."""
    if err.errno not in STORAGE_ERRNOS:
        return None
    where = f" {err.filename}" if err.filename else ""
    return BenchmarkError(f"cannot write{where}: {err.strerror or err}")
