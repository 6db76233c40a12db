"""Injectable clocks: the wall clock, and a manual one tests and `--manual-clock` advance by hand."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, TypedDict


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ClockFile(TypedDict):
    """What a persistent manual clock keeps on disk."""

    now: str


class ManualClock:
    """A clock that only moves when told to.

    With ``path`` the clock is persistent: it starts where it was last left (the file), and every
    move is written (fsync'd, then renamed into place) before it is reported, so a restart never
    takes time back and stored due times never jump into the future."""

    def __init__(self, start: datetime | None = None, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._path = path
        saved = self._load(path) if path is not None else None
        self._now = saved or start or datetime.now(UTC)
        if path is not None and saved is None:
            self._save(self._now)

    @staticmethod
    def _load(path: Path) -> datetime | None:
        try:
            data: ClockFile = json.loads(path.read_text(encoding="utf-8"))
            return datetime.fromisoformat(data["now"])
        except FileNotFoundError:
            return None

    def _save(self, now: datetime) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        record: ClockFile = {"now": now.isoformat()}
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path)
        directory = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            moved = self._now + timedelta(seconds=seconds)
            self._save(moved)  # durable before anyone sees the new time
            self._now = moved
            return self._now


def iso(ts: datetime) -> str:
    """ARM timestamps: ISO 8601 in UTC with a trailing Z and 7 fractional digits trimmed to 6."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_iso(text: str) -> datetime:
    """The inverse of ``iso``, and lenient about the forms clients send: a trailing ``Z`` or ``z``,
    an explicit offset, or none (taken as UTC). Always returns an aware datetime in UTC.
    Raises ValueError for text that is not an ISO 8601 timestamp."""
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
