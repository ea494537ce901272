"""One run on several GPUs (or CPU processes) of one node: `torchrun --nproc_per_node N` and
DistributedDataParallel.

torchrun starts N copies of the same command and tells each its place through the environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `init()` joins them into one process group;
every function here is then a collective or a question about it. Without torchrun (or with one
process) `init()` does nothing and every function answers "one process" (rank 0 of 1, data and
objects passed through untouched), so a single-process run computes exactly what it computed before
this module existed.

How a run is split (docs/scale-out.md, "One run on several GPUs"):
- data: every process draws the same global batch (the same indices, epoch permutations and random
  augmentations as a single-process run) and keeps rows `rank::world` of it (`shard_rows`);
- gradients: a method calls its model through `distribute()`, a DistributedDataParallel wrapper that
  averages gradients across processes in `backward`, so every process takes the same optimizer step
  and the weights stay identical;
- files: rank 0 alone writes checkpoints, caches, curves and records; the others wait for it where
  they need its files (`barrier`) or its decisions (`broadcast_object`).
"""
from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from benchmark.kit.errors import ConfigError

# How long a process waits at a collective for the others. Ranks 1..N-1 wait for rank 0 while it alone
# evaluates a finished cell and writes its files, builds MICS's shift dictionary, or waits for the MICS
# pre-training cache that another job is computing (hours). A process that dies ends the group at once
# (torchrun stops the others), so this limit only matters for a process that hangs while alive.
TIMEOUT = timedelta(hours=24)


def init() -> None:
    """Join torchrun's process group when this process is one of several; otherwise do nothing.

    Idempotent. With CUDA, the process uses GPU LOCAL_RANK (so `cuda` means that GPU for everything
    it runs) and the group has both backends: NCCL for CUDA tensors (gradients, queues) and gloo for
    CPU tensors and for the objects and barriers with which rank 0 leads the others. Without CUDA, gloo."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the process that writes files and decides for the others."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj`, on every process (the others' `obj` is ignored). Picklable objects only."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_ranks(flag: torch.Tensor) -> bool:
    """Whether a boolean scalar is true on every process: one decision all of them take alike."""
    if world_size() == 1:
        return bool(flag)
    value = flag.detach().reshape(()).to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value)


@torch.no_grad()
def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's `tensor` concatenated along dim 0 in rank order, without gradient (ALBEF's
    `concat_all_gather`, for momentum features entering a queue). Same shape on every process."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def shard_rows(rows: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """This process's share of a global batch: rows `rank::world` (all of them in one process).

    Everything random about a batch is drawn for the whole global batch and then shared out, so every
    sample is what it is in a single-process run, whichever process it lands on."""
    if world_size() == 1:
        return rows
    return rows[rank() :: world_size()]


def check_batch_size(batch_size: int) -> None:
    """Global batches must split evenly: equal shares keep the average of the processes' mean losses
    the mean over the global batch, and let `all_gather` concatenate equal shapes."""
    if batch_size % world_size():
        raise ConfigError(f"a batch of {batch_size} does not split evenly over {world_size()} processes; under "
                          f"torchrun every batch size must be a multiple of {world_size()} (--set train.batch_size=...)")


class _Call(nn.Module):
    """Makes `module.<name>` the forward of a module DistributedDataParallel can wrap: DDP averages
    the gradients of what its own `forward` computes, and a model's training step is often another
    method (e.g. `forward_loss`)."""

    def __init__(self, module: nn.Module, name: str):
        super().__init__()
        self.module, self.name = module, name

    def forward(self, *args, **kwargs):
        return getattr(self.module, self.name)(*args, **kwargs)


def distribute(module: nn.Module, call: str = "forward") -> Callable:
    """What a training step calls instead of `module.<call>`: in one process that very method, called as
    a module (`_Call`), as DDP calls it; under torchrun a DistributedDataParallel wrapper around it, so
    `backward` averages the gradients of `module`'s parameters across processes (the optimizer keeps
    stepping the same tensors). Either way what the step computes through its model is one module call,
    the forward pass a plain PyTorch loop would make (what `perf`'s bare loop replays).

    DDP's defaults: every parameter that requires grad must get a gradient in each step (DDP says so
    at the second step otherwise), and rank 0's buffers are copied to the others before each forward
    (the suite's buffers, MICS's queues and dictionaries, are alike everywhere anyway)."""
    step = module if call == "forward" else _Call(module, call)
    return step if world_size() == 1 else DistributedDataParallel(step)


def check_replicas(params: Iterable[torch.Tensor], where: str) -> None:
    """Raise unless every process holds bitwise the same `params`: a method whose step does not go
    through `distribute()` would train each process on its own share of the data, silently."""
    if world_size() == 1:
        return
    digest = hashlib.sha256()
    for p in params:
        digest.update(p.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    digests = [None] * world_size()
    dist.all_gather_object(digests, digest.hexdigest())
    if len(set(digests)) > 1:
        raise ConfigError(f"{where}: the {world_size()} processes hold different weights; the method's "
                          "training step must call its model through ctx.distribute(...) to run under torchrun")
