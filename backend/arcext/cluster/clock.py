"""The manual clock of a cluster: the store's clock row, read on every ``now()`` so that every node sees
a move at once (``POST /arcext/v1/clock/advance`` on one node, then ``engine/run`` on another)."""

from __future__ import annotations

from datetime import UTC, datetime

from ..clock import ManualClock
from ..store.postgres.store import PostgresStore


class SharedManualClock(ManualClock):
    def __init__(self, store: PostgresStore, start: datetime | None = None) -> None:
        super().__init__(start)
        self._store = store
        self._start = self._now
        self._now = store.get_clock(self._start)  # the first node sets the time

    def now(self) -> datetime:
        with self._store.db.connection() as conn:
            row = conn.execute("SELECT now FROM clock WHERE id = 1").fetchone()
        if row is None:  # emptied meanwhile (a test's reset)
            return self._store.get_clock(self._start)
        moment: datetime = row[0]
        return moment.astimezone(UTC)

    def advance(self, seconds: float) -> datetime:
        return self._store.advance_clock(seconds, self._start)
