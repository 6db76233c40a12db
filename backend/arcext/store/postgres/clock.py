"""One shared manual clock for every node: a single row, moved atomically.

With the embedded store a manual clock is a file in the data directory (arcext/clock.py). Nodes
sharing a database must share the time as well, or one node's advanced clock would make another's
due times jump: the row is read on start (``get_clock`` writes ``start`` when there is none yet)
and moved with ``advance_clock``, one UPDATE, so two nodes advancing at once add up.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .db import Database


class ClockRow:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, start: datetime) -> datetime:
        """The shared time; the first caller sets it to ``start``."""
        with self._db.connection() as conn:
            row = conn.execute(
                "INSERT INTO clock (id, now) VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET now = clock.now"
                " RETURNING now",
                (start,),
            ).fetchone()
        assert row is not None
        moment: datetime = row[0]
        return moment.astimezone(UTC)

    def advance(self, seconds: float, start: datetime) -> datetime:
        """Move the shared time forward by ``seconds`` (from ``start`` when it was never set); returns it."""
        with self._db.connection() as conn:
            row = conn.execute(
                "INSERT INTO clock (id, now) VALUES (1, %s + make_interval(secs => %s))"
                " ON CONFLICT (id) DO UPDATE SET now = clock.now + make_interval(secs => %s) RETURNING now",
                (start, seconds, seconds),
            ).fetchone()
        assert row is not None
        moment: datetime = row[0]
        return moment.astimezone(UTC)
