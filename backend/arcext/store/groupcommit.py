"""Appends to one file with group commit: one write and one fsync per burst, done by a caller.

Leader and followers: a caller whose append finds no flush in progress becomes the leader. It takes
everything buffered (its own bytes and whatever others appended), writes it, fsyncs, and releases the
callers that data covered. Callers that append while a flush is in progress wait on their own lock;
when the flush ends, the first of those still waiting is woken as the next leader. Under load dozens
of appends share one fsync; alone, an append costs one write and one fsync in the caller's own thread,
with no hand-off to a writer thread (two thread switches per append, which the upgrade workers paid
twice per job).

Appends nobody waits for (``wait=False``: the activity log's events, which ride in the journal until
the log is synced) are only buffered: they are written ahead of the next waited-for append, on
``sync``, when the buffer passes ``lazy_bytes`` or within ``lazy_seconds`` (a timer thread).

A failed write or fsync fails the file for good: whatever came after it would sit behind a hole (or a
torn line), and an fsync that succeeds after a failed one says nothing about the bytes that failed. Every
later waited append, ``sync`` and ``swap`` raises that error; unwaited bytes are dropped. The owner
recovers by restarting (the journal replays up to the tear; the event log is repaired from it).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class _Waiter:
    """A waiting append: ``lock`` is taken at creation and released when the append is on disk (or the
    waiter is made the next leader: ``lead``)."""

    __slots__ = ("error", "lead", "lock", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.lead = False
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.lock.acquire()


class GroupCommitFile:
    lazy_bytes = 256 * 1024
    lazy_seconds = 1.0

    def __init__(self, fd: int, after_write: Callable[[bytes], None] | None = None) -> None:
        self._fd = fd
        self._after_write = after_write
        self._mutex = threading.Lock()
        self._buffer: list[bytes] = []  # appended, not yet written, in order
        self._buffered = 0
        self._appended = 0  # sequence number of the last waited-for append
        self._flushing = False  # a leader is writing
        self._waiters: list[_Waiter] = []
        self._failed: BaseException | None = None  # the first failed write or fsync (see the module doc)
        self._closed = threading.Event()
        self._timer = threading.Thread(target=self._lazy_flusher, name="arcext-group-commit", daemon=True)
        self._timer.start()

    # --- appending ----------------------------------------------------------------------------------
    def append(self, data: bytes, wait: bool = True) -> None:
        """Append ``data``; returns once it is on disk (fsynced), or at once with ``wait=False``
        (written in order, soon; fsynced by the next waited-for append or ``sync``)."""
        with self._mutex:
            if data:
                self._buffer.append(data)
                self._buffered += len(data)
            if not wait:
                if self._buffered < self.lazy_bytes or self._flushing:
                    return
                self._flushing = True  # a full buffer: write it now, without an fsync
                waiter = None
            else:
                self._appended += 1
                waiter = _Waiter(self._appended)
                if self._flushing:
                    self._waiters.append(waiter)
                else:
                    self._flushing = True
                    waiter.lead = True
        if waiter is None:
            self._lead(sync=False, own=None)
            return
        if not waiter.lead:
            waiter.lock.acquire()  # released when our bytes are on disk, or when it is our turn to lead
            if not waiter.lead:
                if waiter.error is not None:
                    raise waiter.error
                return
        self._lead(sync=True, own=waiter)
        if waiter.error is not None:
            raise waiter.error

    def sync(self) -> None:
        """Return once everything appended before is on disk."""
        self.append(b"", wait=True)

    def _lead(self, sync: bool, own: _Waiter | None) -> None:
        """Write (and with ``sync`` fsync) everything buffered; release the waiters it covers and hand the
        lead to the first one still waiting."""
        with self._mutex:
            payload = b"".join(self._buffer)
            self._buffer = []
            self._buffered = 0
            covered = self._appended
        failed_before = self._failed is not None
        error = self._write_or_fail(payload, sync)
        if error is not None and own is None and not failed_before:
            log.error("Writing buffered appends failed: %s", error)  # nobody waits to be told
        with self._mutex:
            if own is not None:
                own.error = error
            if not sync:  # an unsynced flush covers no waiter
                covered = 0
            remaining = []
            for waiter in self._waiters:
                if waiter.seq <= covered:
                    waiter.error = error
                    waiter.lock.release()
                else:
                    remaining.append(waiter)
            self._waiters = remaining
            if remaining:
                nxt = remaining.pop(0)
                self._waiters = remaining
                nxt.lead = True
                nxt.lock.release()  # still flushing: the next leader takes over
            else:
                self._flushing = False

    def _write_or_fail(self, payload: bytes, sync: bool) -> BaseException | None:
        """Write (by the leader only); the error the file has failed with, now or before, if any."""
        if self._failed is not None:
            return self._failed  # the payload goes nowhere: it would follow a hole
        try:
            self._write(payload, sync)
        except BaseException as exc:  # every append in this flush, and every later one, learns that it failed
            self._failed = exc
        return self._failed

    def _write(self, payload: bytes, sync: bool) -> None:
        view = memoryview(payload)
        while view:
            view = view[os.write(self._fd, view) :]
        if sync:
            # append-only files: fdatasync flushes the data and the size (all a reader needs), not timestamps,
            # which spares a metadata commit per flush and made the engine's runs steadier
            os.fdatasync(self._fd)
        if payload and self._after_write is not None:
            self._after_write(payload)

    def _become_leader(self) -> bool:
        """Take the lead if nobody has it (for the timer and for swap)."""
        with self._mutex:
            if self._flushing:
                return False
            self._flushing = True
            return True

    def _lazy_flusher(self) -> None:
        while not self._closed.wait(self.lazy_seconds):
            with self._mutex:
                idle_data = bool(self._buffer)
            if idle_data and self._become_leader():
                self._lead(sync=False, own=None)

    # --- files ------------------------------------------------------------------------------------
    def swap(self, fd: int) -> int:
        """Send later appends to ``fd``; returns the previous descriptor with everything appended so far
        written to it and fsynced (-1 opens nothing new)."""
        while not self._become_leader():
            self.sync()  # wait for the flush in progress to end, then try again
        old = self._fd
        try:
            if old >= 0:
                with self._mutex:
                    payload = b"".join(self._buffer)
                    self._buffer = []
                    self._buffered = 0
                error = self._write_or_fail(payload, sync=True)
                if error is not None:
                    raise error
            self._fd = fd
        finally:
            with self._mutex:
                # waiters that queued meanwhile had their bytes buffered for the new file: lead them there
                if self._waiters:
                    nxt = self._waiters.pop(0)
                    nxt.lead = True
                    nxt.lock.release()
                else:
                    self._flushing = False
        return old

    def close(self) -> None:
        """Stop the timer; what is still buffered is written by the ``swap`` that follows (or a last sync)."""
        self._closed.set()
        self._timer.join(timeout=10)
