"""The manual clock of a cluster: the store's clock row, so that every node sees a move at once
(``POST /arcext/v1/clock/advance`` on one node, then ``engine/run`` on another).

``now()`` reads the row, except inside ``pinned(moment)``: a job reads the time once, with its claim (the
claim's statement returns the row), and every ``now()`` of that job's thread answers that time. A move made
while the job runs is seen by the next job, as if the job had run a moment earlier; without the pin a job
read the row four times (about a tenth of its statements). The wall clock (SystemClock) never reads it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from ..clock import ManualClock
from ..store.postgres.store import PostgresStore

#: the claim's column that reads the shared clock (arcext.cluster.node)
CLOCK_COLUMN = "(SELECT now FROM clock WHERE id = 1)"


class SharedManualClock(ManualClock):
    def __init__(self, store: PostgresStore, start: datetime | None = None) -> None:
        super().__init__(start)
        self._store = store
        self._start = self._now
        self._now = store.get_clock(self._start)  # the first node sets the time
        self._local = threading.local()

    def now(self) -> datetime:
        pinned: datetime | None = getattr(self._local, "pinned", None)
        if pinned is not None:
            return pinned
        with self._store.db.connection() as conn:
            row = conn.execute("SELECT now FROM clock WHERE id = 1").fetchone()
        if row is None:  # emptied meanwhile (a test's reset)
            return self._store.get_clock(self._start)
        moment: datetime = row[0]
        return moment.astimezone(UTC)

    @contextmanager
    def pinned(self, moment: datetime | None) -> Iterator[None]:
        """Within the block, this thread's ``now()`` is ``moment`` (the row as read a moment ago; None: not pinned)."""
        outer = getattr(self._local, "pinned", None)
        self._local.pinned = moment.astimezone(UTC) if moment is not None else outer
        try:
            yield
        finally:
            self._local.pinned = outer

    def advance(self, seconds: float) -> datetime:
        return self._store.advance_clock(seconds, self._start)
