"""Device, precision, threads and seeds: the parts of a run that depend on the machine."""
from __future__ import annotations

import os
import random
import resource
import subprocess
from pathlib import Path

import numpy as np
import torch

from benchmark.kit.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else the CPU."""
    if name not in DEVICES:
        raise ConfigError(f"unknown device '{name}'; valid: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def resolve_amp(setting, device: torch.device) -> bool:
    """`auto` means mixed precision on CUDA, full precision on the CPU."""
    if setting == "auto":
        return device.type == "cuda"
    return bool(setting)


def resolve_amp_dtype(setting: str) -> torch.dtype | None:
    """`runtime.amp_dtype` as a torch dtype; `auto` is None: autocast's own default for the device."""
    return None if setting == "auto" else getattr(torch, setting)


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_CELLS_AT_ONCE = [1]  # cells that share this machine's cores with this process: `share_cores`


def share_cores(cells: int) -> None:
    """This process is one of `cells` that run at once on the same cores (a slot of `run --workers`)."""
    _CELLS_AT_ONCE[0] = max(1, int(cells))


def spare_cores() -> int:
    """Cores of this process's share that its torch threads leave free: where helper work (e.g. single
    mode's RandAugment worker) runs without taking CPU time from a training step, its own or another cell's.
    The cores are shared by the cells that run at once and, under torchrun, by the processes on this machine."""
    processes = _CELLS_AT_ONCE[0] * int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return available_cores() // processes - torch.get_num_threads()


def configure_threads(threads: int) -> None:
    """`runtime.threads`: a fixed count keeps a run's floating-point sums, and so its record, the same on
    any machine; 0 takes every core."""
    torch.set_num_threads(int(threads) or available_cores())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def code_version() -> str:
    """The git commit of the suite's source (with `-dirty` for local changes), else 'unknown'."""
    here = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
