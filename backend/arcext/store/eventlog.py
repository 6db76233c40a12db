"""Append-only activity-log segments: one JSON-lines file per UTC day, fsynced on append.

TinyDB rewrites its whole file on every insert, which an append-heavy log cannot afford, so events
go to plain JSON-lines segments; every segment is read back into memory at start (90 days by
default), grouped by day so a time-bounded query only looks at the days it covers.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from .atomic_storage import fsync_dir
from .base import Record


class EventLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: list[Record] = []
        self._queued = 0
        self._flushed = 0
        self._flushing = False
        self._days: dict[str, list[Record]] = {}
        for path in sorted(self.directory.glob("*.jsonl")):
            events: list[Record] = []
            with open(path, "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # a torn final line from a crash: never acknowledged
                    events.append(json.loads(line))
            self._days[path.stem] = events

    def append(self, events: Iterable[Record]) -> None:
        """Durably append ``events``; returns once they are fsynced.

        Group commit: concurrent callers queue their events and one of them writes and fsyncs
        everything queued so far, so 64 upgrade workers cost one fsync per burst, not 64."""
        batch = list(events)
        if not batch:
            return
        with self._cond:
            self._pending.extend(batch)
            self._queued += 1
            ticket = self._queued
            while self._flushed < ticket:
                if not self._flushing:
                    self._flushing = True
                    todo, self._pending = self._pending, []
                    upto = self._queued
                    self._cond.release()
                    try:
                        self._write(todo)
                    finally:
                        self._cond.acquire()
                        self._flushing = False
                        self._flushed = upto
                        self._cond.notify_all()
                else:
                    self._cond.wait()

    def _write(self, events: list[Record]) -> None:
        by_day: dict[str, list[Record]] = {}
        for event in events:
            by_day.setdefault(event["eventTimestamp"][:10], []).append(event)
        for day, batch in by_day.items():
            path = self.directory / f"{day}.jsonl"
            new = not path.exists()
            payload = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in batch)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            if new:
                fsync_dir(self.directory)
            with self._lock:
                self._days.setdefault(day, []).extend(batch)

    def between(self, start_day: str, end_day: str) -> Iterator[Record]:
        with self._lock:
            days = [d for d in sorted(self._days) if start_day <= d <= end_day]
            chunks = [list(self._days[d]) for d in days]
        for chunk in chunks:
            yield from chunk

    def prune_before(self, day: str) -> int:
        with self._lock:
            old = [d for d in self._days if d < day]
            for d in old:
                (self.directory / f"{d}.jsonl").unlink(missing_ok=True)
                del self._days[d]
        return len(old)

    def clear(self) -> None:
        with self._lock:
            for d in list(self._days):
                (self.directory / f"{d}.jsonl").unlink(missing_ok=True)
            self._days.clear()
