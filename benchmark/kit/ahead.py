"""Values made a step ahead on a spare core: a step's batches, a step's random draws.

A value that depends on its step alone (the step's slice of the data, its seeded draws) can be made for step
it + 1 while step it trains. Where a core of this process's share is spare (`spare_cores`, the rule of single
mode's RandAugment worker) one thread per process makes such values, one at a time, in the order they are
asked for; torch releases the interpreter lock inside its ops, so the step runs beside it. A value is the same
made ahead or in line, and so is a record. In a pool of one cell per core nothing is spare and everything is
made in line; on a GPU no thread is started, as a step's work there is queued on the device without waiting.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import torch

from benchmark.kit.runtime import spare_cores

T = TypeVar("T")

_THREAD: tuple[int, ThreadPoolExecutor] | None = None  # (the process it belongs to, its one thread)


def _thread() -> ThreadPoolExecutor:
    """This process's thread, started on first use (a forked child starts its own)."""
    global _THREAD
    if _THREAD is None or _THREAD[0] != os.getpid():
        _THREAD = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="made-ahead"))
    return _THREAD[1]


def settle() -> None:
    """Waits until nothing is in the making. A training loop ends with it, so nothing made ahead for one run
    runs beside the next (an unlabeled batch made in line seeds the process's global generators for
    RandAugment)."""
    if _THREAD is not None and _THREAD[0] == os.getpid():
        _THREAD[1].submit(int).result()


class MadeAhead(ABC, Generic[T]):
    """A value for each step, `make(it)`, with step `it + 1`'s made on this process's thread meanwhile when a core
    is spare. A value asked for out of order (the first step, a resumed run's) is made on the thread too, after
    what is in the making there, so values are made one at a time, with the caller's torch thread count.

    A subclass defines `make` and holds what it needs: a `make` kept as an attribute (a bound method of the
    object that asks for the values) would be a reference cycle, keeping a run's data alive after the run until
    the garbage collector's next full pass."""

    def __init__(self, device: torch.device):
        self.ahead = torch.device(device).type == "cpu" and spare_cores() > 0  # decided once per run
        self._threads = torch.get_num_threads()
        self._next: tuple[int, Future] | None = None

    @abstractmethod
    def make(self, it: int) -> T:
        """Step `it`'s value, a function of the step alone."""

    def __call__(self, it: int) -> T:
        if not self.ahead:
            return self.make(it)
        if self._next is not None and self._next[0] == it:
            value = self._next[1].result()
        else:
            value = self._submit(it).result()
        self._next = (it + 1, self._submit(it + 1))
        return value

    def _submit(self, it: int) -> Future:
        return _thread().submit(self._make_on_thread, it)

    def _make_on_thread(self, it: int) -> T:
        if torch.get_num_threads() != self._threads:  # the thread's own OpenMP team size, set on its first use
            torch.set_num_threads(self._threads)
        return self.make(it)
