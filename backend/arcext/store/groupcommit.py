"""Appends to one file with group commit: one writer thread, one fsync per burst.

Callers hand their bytes to the writer. A waiting caller (``wait=True``) blocks on its own lock until
its bytes are fsynced, so each caller wakes exactly once (a shared condition would wake every waiter on
every flush). The writer takes everything queued, writes it, fsyncs when anyone in the batch waits,
and releases those callers: under load, dozens of appends share one fsync; alone, an append costs one
write and one fsync. Appends nobody waits for are written at once and made durable by the next waited
append (or ``sync``): the activity log's events ride in the journal until then.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable


class _Request:
    """One append; ``done`` is a lock taken at creation and released by the writer: the caller's
    second acquire blocks until then (one futex wake, where an Event costs a condition and two locks)."""

    __slots__ = ("data", "done", "error")

    def __init__(self, data: bytes, wait: bool) -> None:
        self.data = data
        self.done: threading.Lock | None = None
        if wait:
            self.done = threading.Lock()
            self.done.acquire()
        self.error: BaseException | None = None


class GroupCommitFile:
    def __init__(self, fd: int, after_write: Callable[[bytes], None] | None = None) -> None:
        self._fd = fd
        self._after_write = after_write
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._switch = threading.Lock()  # held by the writer while it writes; by swap() to change files
        self._thread = threading.Thread(target=self._run, name="arcext-group-commit", daemon=True)
        self._thread.start()

    def append(self, data: bytes, wait: bool = True) -> None:
        """Append ``data``; returns once it is on disk (fsynced), or at once with ``wait=False``
        (written in order, fsynced by the next waited-for append or ``sync``)."""
        request = _Request(data, wait)
        self._queue.put(request)
        if request.done is None:
            return
        request.done.acquire()
        if request.error is not None:
            raise request.error

    def sync(self) -> None:
        """Return once everything appended before is on disk."""
        self.append(b"", wait=True)

    def swap(self, fd: int) -> int:
        """Send later appends to ``fd``; returns the previous descriptor, fsynced (-1 closes nothing new)."""
        with self._switch:
            old, self._fd = self._fd, fd
            if old >= 0:
                os.fsync(old)
            return old

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            payload = b"".join(r.data for r in batch)
            error: BaseException | None = None
            with self._switch:
                try:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(self._fd, view) :]
                    if any(r.done is not None for r in batch):
                        os.fsync(self._fd)
                    if self._after_write is not None:
                        self._after_write(payload)
                except BaseException as exc:  # every waiter learns that its append failed
                    error = exc
            for request in batch:
                request.error = error
                if request.done is not None:
                    request.done.release()
            if stop:
                return
