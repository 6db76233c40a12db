"""Append-only activity-log segments: one JSON-lines file per UTC day, fsynced on append (or, for
events that travel in the store's journal, when the journal is checkpointed: see ``sync``).

TinyDB rewrites its whole file on every insert, which an append-heavy log cannot afford, so events
go to plain JSON-lines segments; every segment is read back into memory at start (90 days by
default), grouped by day so a time-bounded query only looks at the days it covers.

In memory each event is kept as its JSON line (bytes), parsed when a query reads it: an event as
dicts is about forty objects the cyclic GC has to traverse on every full collection, and a fleet's
upgrades write two per job; a bytes line is one object the GC never looks at, and a third of the size.
A query can name a fragment of the line (``contains``) to skip the lines that cannot match unparsed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson

from .atomic_storage import fsync_dir
from .base import Record
from .groupcommit import GroupCommitFile

log = logging.getLogger(__name__)

_TIMESTAMP = b'"eventTimestamp":"'
_DATA_ID = b'"eventDataId":"'


def _field(line: bytes, marker: bytes) -> str:
    """A string field of a compact orjson line (a value without escapes), read without parsing it."""
    at = line.index(marker) + len(marker)
    return line[at : line.index(b'"', at)].decode()


def _day(line: bytes) -> str:
    at = line.index(_TIMESTAMP) + len(_TIMESTAMP)
    return line[at : at + 10].decode()


def field_fragment(name: str, value: str) -> bytes:
    """The bytes ``"name":"value"`` as they appear in a stored line (orjson's compact form)."""
    return orjson.dumps({name: value})[1:-1]


class EventLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._day_lock = threading.Lock()
        self._days: dict[str, list[bytes]] = {}
        for path in sorted(self.directory.glob("*.jsonl")):
            with open(path, "rb") as fh:
                offset = 0
                for line in fh:
                    if not line.endswith(b"\n"):
                        # a torn final line from a crash (never acknowledged): cut it off, or the next
                        # append to this day's file would continue it and make one unreadable line of both
                        os.truncate(path, offset)
                        break
                    offset += len(line)
                    line = line[:-1]
                    if _TIMESTAMP not in line:  # written by another serializer: normalise it once
                        line = orjson.dumps(orjson.loads(line))
                    self._days.setdefault(_day(line), []).append(line)
        self._file_day = ""
        self._writer: GroupCommitFile | None = None
        #: called with the events of every append once the log holds them (metrics, logs, webhooks: see
        #: arcext.telemetry); it must be quick and must not write to the log
        self.listener: Callable[[list[Record]], None] | None = None

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
        events = list(events)
        self.append_lines([orjson.dumps(e) for e in events], durable, events)

    def append_lines(self, lines: list[bytes], durable: bool = True, records: list[Record] | None = None) -> None:
        """``append`` for events already serialized with ``orjson.dumps`` (one line each, no newline);
        ``records`` are the same events as dicts, for the listener."""
        by_day: dict[str, list[bytes]] = {}
        for line in lines:
            by_day.setdefault(_day(line), []).append(line)
        for day, batch in by_day.items():
            payload = b"\n".join(batch) + b"\n"
            self._writer_for(day).append(payload, wait=durable)
            with self._lock:
                self._days.setdefault(day, []).extend(batch)
        if records and self.listener is not None:
            try:
                self.listener(records)
            except Exception:  # observers never fail a write
                log.exception("An activity-log listener failed")

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
            known = {_field(line, _DATA_ID) for d in days for line in self._days.get(d, ())}
        missing = [e for e in events if e["eventDataId"] not in known]
        if missing:
            self.append(missing, durable=True)
        return len(missing)

    def between(self, start_day: str, end_day: str, contains: bytes | None = None) -> Iterator[Record]:
        """Events of the days from ``start_day`` to ``end_day``, in order of writing; with ``contains``
        only those whose line holds that fragment (see ``field_fragment``)."""
        with self._lock:
            days = [d for d in sorted(self._days) if start_day <= d <= end_day]
            chunks = [list(self._days[d]) for d in days]
        for chunk in chunks:
            for line in chunk:
                if contains is None or contains in line:
                    yield orjson.loads(line)

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
