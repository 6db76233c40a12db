"""Durable appends to one file with group commit: one writer thread, one fsync per burst.

Callers hand their bytes to the writer and wait on their own event, so each caller wakes exactly
once (a shared condition would wake every waiter on every flush). The writer takes everything
queued, writes it, fsyncs, and releases those callers: under load, dozens of appends share one
fsync; alone, an append costs one write and one fsync.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable


class _Request:
    __slots__ = ("data", "done", "error")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done = threading.Event()
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
        (later appends are written after it, so a waited-for append also covers it)."""
        request = _Request(data)
        self._queue.put(request)
        if not wait:
            return
        request.done.wait()
        if request.error is not None:
            raise request.error

    def swap(self, fd: int) -> int:
        """Send later appends to ``fd``; returns the previous descriptor (everything before is synced)."""
        with self._switch:
            old, self._fd = self._fd, fd
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
                    os.fsync(self._fd)
                    if self._after_write is not None:
                        self._after_write(payload)
                except BaseException as exc:  # every waiter learns that its append failed
                    error = exc
            for request in batch:
                request.error = error
                request.done.set()
            if stop:
                return
