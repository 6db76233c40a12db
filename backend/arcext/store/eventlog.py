"""Append-only activity-log segments: one JSON-lines file per UTC day, fsynced on append (or, for
events that travel in the store's journal, when the journal is checkpointed: see ``sync``).

TinyDB rewrites its whole file on every insert, which an append-heavy log cannot afford, so events
go to plain JSON-lines segments; every segment is read back into memory at start (90 days by
default), grouped by day so a time-bounded query only looks at the days it covers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from .atomic_storage import fsync_dir
from .base import Record
from .groupcommit import GroupCommitFile


class EventLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._day_lock = threading.Lock()
        self._days: dict[str, list[Record]] = {}
        for path in sorted(self.directory.glob("*.jsonl")):
            with open(path, "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # a torn final line from a crash: never acknowledged
                    event = orjson.loads(line)
                    self._days.setdefault(event["eventTimestamp"][:10], []).append(event)
        self._file_day = ""
        self._writer: GroupCommitFile | None = None

    def _writer_for(self, day: str) -> GroupCommitFile:
        with self._day_lock:
            if self._writer is None or day != self._file_day:
                path = self.directory / f"{day}.jsonl"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                fsync_dir(self.directory)
                if self._writer is None:
                    self._writer = GroupCommitFile(fd)
                else:
                    os.close(self._writer.swap(fd))
                self._file_day = day
            return self._writer

    def append(self, events: Iterable[Record], durable: bool = True) -> None:
        """Append ``events``; with ``durable`` (the default) returns once they are fsynced (group commit
        with other callers), otherwise at once (written in order; on disk after the next durable append
        or ``sync``)."""
        by_day: dict[str, list[Record]] = {}
        for event in events:
            by_day.setdefault(event["eventTimestamp"][:10], []).append(event)
        for day, batch in by_day.items():
            payload = b"".join(orjson.dumps(e) + b"\n" for e in batch)
            self._writer_for(day).append(payload, wait=durable)
            with self._lock:
                self._days.setdefault(day, []).extend(batch)

    def sync(self) -> None:
        """Return once every event appended so far is on disk."""
        with self._day_lock:
            writer = self._writer
        if writer is not None:
            writer.sync()

    def ensure(self, events: list[Record]) -> int:
        """Durably append those of ``events`` the log does not hold (by eventDataId); returns how many.

        After a crash, events that were written with ``durable=False`` but travelled in the journal are
        put back from it."""
        days = {e["eventTimestamp"][:10] for e in events}
        with self._lock:
            known = {e["eventDataId"] for d in days for e in self._days.get(d, ())}
        missing = [e for e in events if e["eventDataId"] not in known]
        if missing:
            self.append(missing, durable=True)
        return len(missing)

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
                if d != self._file_day:
                    (self.directory / f"{d}.jsonl").unlink(missing_ok=True)
                del self._days[d]
        return len(old)

    def close(self) -> None:
        with self._day_lock:
            if self._writer is not None:
                self._writer.close()
                os.close(self._writer.swap(-1))
                self._writer = None

    def clear(self) -> None:
        with self._day_lock, self._lock:
            for path in self.directory.glob("*.jsonl"):
                path.unlink()
            if self._writer is not None:
                self._writer.close()
                os.close(self._writer.swap(-1))
                self._writer = None
            self._file_day = ""
            self._days.clear()
