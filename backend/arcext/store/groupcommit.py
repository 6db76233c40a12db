"""Appends to one file with group commit: one writer thread, one fsync per burst.

Callers hand their bytes to the writer. A waiting caller (``wait=True``) blocks on its own lock until
its bytes are fsynced, so each caller wakes exactly once (a shared condition would wake every waiter on
every flush). The writer takes everything queued, writes it, fsyncs when anyone in the batch waits,
and releases those callers: under load, dozens of appends share one fsync; alone, an append costs one
write and one fsync.

Appends nobody waits for (``wait=False``: the activity log's events, which ride in the journal until
the log is synced) are only buffered: the writer writes them ahead of the next waited-for append, on
``sync``, when the buffer passes ``lazy_bytes`` or after ``lazy_seconds``. Waking the writer thread for
each of them cost a thread switch per upgrade step.
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
    lazy_bytes = 256 * 1024
    lazy_seconds = 1.0

    def __init__(self, fd: int, after_write: Callable[[bytes], None] | None = None) -> None:
        self._fd = fd
        self._after_write = after_write
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._pending: list[bytes] = []  # unwaited appends, in order
        self._pending_size = 0
        self._pending_lock = threading.Lock()
        self._switch = threading.Lock()  # held by the writer while it writes; by swap() to change files
        self._thread = threading.Thread(target=self._run, name="arcext-group-commit", daemon=True)
        self._thread.start()

    def append(self, data: bytes, wait: bool = True) -> None:
        """Append ``data``; returns once it is on disk (fsynced), or at once with ``wait=False``
        (written in order, soon; fsynced by the next waited-for append or ``sync``)."""
        if not wait:
            with self._pending_lock:
                self._pending.append(data)
                self._pending_size += len(data)
                full = self._pending_size >= self.lazy_bytes
            if full:
                self._queue.put(_Request(b"", wait=False))  # wake the writer to write the buffer
            return
        request = _Request(data, wait=True)
        self._queue.put(request)
        assert request.done is not None
        request.done.acquire()
        if request.error is not None:
            raise request.error

    def sync(self) -> None:
        """Return once everything appended before is on disk."""
        self.append(b"", wait=True)

    def _take_pending(self) -> bytes:
        with self._pending_lock:
            data = b"".join(self._pending)
            self._pending = []
            self._pending_size = 0
        return data

    def _write(self, payload: bytes, sync: bool) -> None:
        view = memoryview(payload)
        while view:
            view = view[os.write(self._fd, view) :]
        if sync:
            os.fsync(self._fd)
        if payload and self._after_write is not None:
            self._after_write(payload)

    def swap(self, fd: int) -> int:
        """Send later appends to ``fd``; returns the previous descriptor with everything appended so far
        written to it and fsynced (-1 opens nothing new)."""
        with self._switch:
            if self._fd >= 0:
                self._write(self._take_pending(), sync=True)
            old, self._fd = self._fd, fd
            return old

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.lazy_seconds)
            except queue.Empty:
                first = _Request(b"", wait=False)  # idle: write what is buffered
            stop = first is None
            batch = [] if first is None else [first]
            while not stop:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            error: BaseException | None = None
            with self._switch:
                try:
                    payload = self._take_pending() + b"".join(r.data for r in batch)
                    if payload or batch:
                        self._write(payload, sync=stop or any(r.done is not None for r in batch))
                except BaseException as exc:  # every waiter learns that its append failed
                    error = exc
            for request in batch:
                request.error = error
                if request.done is not None:
                    request.done.release()
            if stop:
                return
