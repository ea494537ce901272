"""The worker process that makes single mode's strong sources (USB's RandAugment) ahead of the step that needs
them, one per training process and kept for every run of it, like a persistent DataLoader worker.

The hand-over is made to cost the training step as little as it can (docs/perf.md, "What single mode's worker
costs"). The training process runs no thread for it (a ProcessPoolExecutor feeds and drains its queues with two
threads, which took CPU time from a one-thread step on two cores); it talks to the worker over one socket, a
small pickled header then the images' raw bytes, sent from and read into buffers it keeps for the next batches
(a fresh 200 kB array is fresh memory pages, and faulting them in cost more than the copy). In the worker a
thread reads requests as they come (the worker hands the interpreter lock over every 0.5 ms, so that thread is
never kept waiting by the job's Python code), and a request is sent only once the worker has said it is ready
(its imports done and its job warmed up): a request never waits for the worker, and until then the training
process makes its batches itself.

The worker is spawned, not forked: a fresh interpreter inherits none of the training process's files, so it
never holds a cell's lock (`benchmark.kit.files.file_lock`), nor the state of its threads. It ends with the
training process (`follow_parent`), ignores Ctrl-C (the training process handles it), and is stopped at exit
(a daemon process, terminated by multiprocessing's exit handler if the stop message went unheard), so it
never outlives a run nor keeps one from ending.
"""
from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.util
import os
import socket
import sys
import threading
from typing import Callable, Hashable

import numpy as np

from benchmark.kit.lifetime import follow_parent

Key = Hashable  # a batch's name: (the stream that asked, its batch number)
_READY = "ready"  # the worker's first message
Job = Callable[[np.ndarray, int, int], np.ndarray]  # (uint8 images, py_seed, np_seed) -> uint8 images


class WorkerLost(RuntimeError):
    """The worker process died (killed, out of memory): a new one is started on the next request."""


class Augmenter:
    """The worker process and what has been asked of it. `ask` sends a request; `take` returns its images
    (waiting for them); `forget` drops requests no step will take."""

    def __init__(self, job: Job):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._socket = _socket_of(self._conn)
        self.process = context.Process(target=_serve, args=(child, job, os.getpid()), name="randaugment",
                                       daemon=True)
        self.process.start()
        child.close()
        self._ready = False  # whether it has said it is past its start-up
        self._asked: set[Key] = set()
        self._back: dict[Key, np.ndarray] = {}
        self._buffers: dict[tuple, list[np.ndarray]] = collections.defaultdict(list)  # free, by shape
        self._lent: np.ndarray | None = None  # the array `take` returned last

    def ready(self) -> bool:
        """Whether the worker is past its start-up (a fresh interpreter's imports take seconds): only then
        are requests sent."""
        if not self._ready:
            self._receive(until=None)
        return self._ready

    def asked(self, key: Key) -> bool:
        return key in self._asked or key in self._back

    def ask(self, key: Key, source: np.ndarray, index: np.ndarray, py_seed: int, np_seed: int) -> None:
        """Asks for the job on images `source[index]`."""
        images = self._buffer((len(index), *source.shape[1:]), source.dtype)
        np.take(source, index, axis=0, out=images)
        try:
            self._conn.send(("make", key, images.shape, py_seed, np_seed))
            self._socket.sendall(images)
        except OSError:
            raise WorkerLost("the RandAugment worker is gone") from None
        finally:
            self._recycle(images)
        self._asked.add(key)

    def take(self, key: Key) -> np.ndarray | None:
        """The images of request `key`, waiting for them if it was asked for; None if it was not. The request
        is forgotten. The array is valid until the next `take`."""
        if self._lent is not None:
            self._recycle(self._lent)
            self._lent = None
        self._receive(until=key if key in self._asked else None)
        self._asked.discard(key)
        self._lent = self._back.pop(key, None)
        return self._lent

    def forget(self, keep: Callable[[Key], bool]) -> None:
        """Requests for which `keep` is false are dropped here and, if not started, in the worker."""
        for key in [key for key in self._back if not keep(key)]:
            self._recycle(self._back.pop(key))
        stale = {key for key in self._asked if not keep(key)}
        if stale:
            self._asked -= stale
            self._send(("forget", stale))

    def close(self) -> None:
        self._send(None)
        self._socket.close()
        self._conn.close()

    def _buffer(self, shape: tuple, dtype=np.uint8) -> np.ndarray:
        free = self._buffers[shape]
        return free.pop() if free else np.empty(shape, dtype)

    def _recycle(self, array: np.ndarray) -> None:
        self._buffers[array.shape].append(array)

    def _send(self, message) -> None:
        try:
            self._conn.send(message)
        except OSError:
            pass  # the worker is gone already: nothing left to tell it

    def _receive(self, until: Key | None) -> None:
        """Reads every answer that is there, and waits for `until`'s if it is not."""
        try:
            while self._conn.poll() or (until is not None and until not in self._back):
                key, answer = self._conn.recv()
                if key == _READY:
                    self._ready = True
                    continue
                if isinstance(answer, BaseException):
                    raise answer
                images = self._buffer(answer)
                _read_into(self._socket, images)
                if key in self._asked:
                    self._asked.discard(key)
                    self._back[key] = images
                else:
                    self._recycle(images)
        except (EOFError, OSError):
            raise WorkerLost("the RandAugment worker is gone") from None


def _socket_of(conn) -> socket.socket:
    """The socket under a duplex `multiprocessing` connection, for the images' raw bytes."""
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(conn.fileno()))


def _read_into(sock: socket.socket, array: np.ndarray) -> None:
    view, got = memoryview(array).cast("B"), 0
    while got < len(view):
        n = sock.recv_into(view[got:], len(view) - got, socket.MSG_WAITALL)
        if n == 0:
            raise EOFError
        got += n


def _serve(conn, job: Job, parent: int) -> None:
    """The worker process: a thread queues the requests as they arrive; this one makes them in order."""
    follow_parent(parent)
    sys.setswitchinterval(0.0005)
    sock = _socket_of(conn)
    job(np.zeros((1, 8, 8, 3), np.uint8), 0, 0)  # its first call's imports
    conn.send((_READY, None))
    queue: collections.deque = collections.deque()
    ready = threading.Condition()

    def read() -> None:
        while True:
            try:
                message = conn.recv()
                if message is not None and message[0] == "make":
                    _, key, shape, py_seed, np_seed = message
                    images = np.empty(shape, np.uint8)
                    _read_into(sock, images)
                    message = (key, images, py_seed, np_seed)
            except (EOFError, OSError):
                message = None
            with ready:
                if message is not None and message[0] == "forget":
                    for request in [r for r in queue if r is not None and r[0] in message[1]]:
                        queue.remove(request)
                else:
                    queue.append(message)
                ready.notify()
            if message is None:
                return

    threading.Thread(target=read, name="requests", daemon=True).start()
    while True:
        with ready:
            while not queue:
                ready.wait()
            request = queue.popleft()
        if request is None:
            return
        key, images, py_seed, np_seed = request
        try:
            answer = np.ascontiguousarray(job(images, py_seed, np_seed), dtype=np.uint8)
        except Exception as err:  # the training process raises it where the batch is taken
            conn.send((key, err))
            continue
        conn.send((key, answer.shape))
        sock.sendall(answer)


_WORKER: Augmenter | None = None


def augmenter(job: Job, restart: bool = False) -> Augmenter:
    """This process's worker running `job`, started on first use (or again after `restart`)."""
    global _WORKER
    if restart and _WORKER is not None:
        _WORKER.close()
        _WORKER = None
    if _WORKER is None:
        _WORKER = Augmenter(job)
        # Stopped before a multiprocessing worker (a `run --workers` slot) ends and joins its children.
        multiprocessing.util.Finalize(_WORKER, _WORKER.close, exitpriority=100)
    return _WORKER
