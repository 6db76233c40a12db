"""The activity log as a table partitioned by UTC day.

A day's partition (``events_YYYYMMDD``) is made ahead of its day (``prepare``: today's and tomorrow's, by the
engine's tick), and otherwise the first time an event of that day is written, in the writing transaction;
either way under a transaction-level advisory lock (two nodes making one day at once would otherwise race
between "does it exist" and "create it"); a writer that finds the day's partition made already takes no lock.
Pruning drops whole partitions: no row-by-row delete, no bloat. How long to keep events (90 days) is the
caller's rule.

Making or dropping a partition needs the whole ``events`` table to itself for a moment (ACCESS EXCLUSIVE): it
waits for every transaction that read or wrote the log, and while it waits every later reader and writer of
the log waits behind it, every job's and API write's included (they carry their events). An activity query
that runs for a minute at midnight would hold the whole control plane for that minute. So the partitions are
made a day early and dropped with a short ``lock_timeout`` (``AHEAD_LOCK_TIMEOUT_MS``): a busy log is tried
again later (``AHEAD_RETRY_SECONDS``; tomorrow's partition has a whole day), never waited for.

The fields a query may filter on are columns (``COLUMNS``); those the store's callers look events up by have
indexes: time (``event_timestamp``), subscription, operation, and for the activity log's query (``of_subscription``)
a subscription's events by resource (and what is under it) and by caller, both without case. Schema migration 3
dropped the raw correlation, caller, resource and ``eventDataId`` indexes, which no query used; migration 4 added
the two by resource and caller. The event itself is the JSONB ``doc``. Events come back oldest first: by day,
then in order of writing (``seq``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..base import Record
from .db import Connection, Database

#: taken by every transaction that makes or drops partitions ("arcext:events" would not fit 64 bits)
PARTITION_LOCK: Final = 0x617263657602

#: how long making a partition ahead of its day, or dropping an old one, waits for its locks (the module's docstring)
AHEAD_LOCK_TIMEOUT_MS: Final = 100
#: after an attempt to make partitions ahead found the log busy, the next one comes this much later
AHEAD_RETRY_SECONDS: Final = 60.0

log = logging.getLogger(__name__)

#: event field -> the column that holds it (strings only; anything else is NULL there)
COLUMNS: Final[dict[str, str]] = {
    "eventTimestamp": "event_timestamp",
    "eventDataId": "event_data_id",
    "subscriptionId": "subscription_id",
    "operationId": "operation_id",
    "correlationId": "correlation_id",
    "caller": "caller",
    "resourceId": "resource_id",
}
_PARTITION = re.compile(r"^events_(\d{4})(\d{2})(\d{2})$")

_INSERT_COLUMNS = (
    "INSERT INTO events (day, event_timestamp, event_data_id, subscription_id, operation_id, correlation_id,"
    " caller, resource_id, doc)"
)
_INSERT = _INSERT_COLUMNS + " VALUES "
_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s)"


def _days(start_day: str, end_day: str) -> tuple[date, date] | None:
    """The first and last day (YYYY-MM-DD) of a query; None when either is not a date (nothing matches)."""
    try:
        return date.fromisoformat(start_day), date.fromisoformat(end_day)
    except ValueError:
        return None


def _text(event: Record, field: str) -> str | None:
    value = event.get(field)
    return value if isinstance(value, str) else None


def _row_params(day: Any, e: Record) -> tuple[Any, ...]:
    """The parameters of one event's row (``_ROW``): its day's partition key, the indexed columns, the event."""
    return (
        day,
        e["eventTimestamp"],
        e["eventDataId"],
        _text(e, "subscriptionId"),
        _text(e, "operationId"),
        _text(e, "correlationId"),
        _text(e, "caller"),
        _text(e, "resourceId"),
        Jsonb(e),
    )


def _day_of(event: Record) -> date:
    return date.fromisoformat(str(event["eventTimestamp"])[:10])


def missing_partition(error: psycopg.errors.CheckViolation) -> bool:
    """Whether ``error`` is an insert into a day with no partition."""
    return str(error.diag.message_primary or "").startswith("no partition of relation")


def event_days(events: Iterable[Record]) -> set[date]:
    """The UTC days of ``events`` (their partitions' keys)."""
    return {_day_of(e) for e in events}


def _create_partition(day: date) -> sql.Composed:
    return sql.SQL("CREATE TABLE {} PARTITION OF events FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(partition_name(day)), sql.Literal(day), sql.Literal(day + timedelta(days=1))
    )


def _drop_partition(day: date) -> sql.Composed:
    return sql.SQL("DROP TABLE {}").format(sql.Identifier(partition_name(day)))


def partition_name(day: date) -> str:
    return f"events_{day:%Y%m%d}"


#: events per INSERT statement (9 parameters each; PostgreSQL's limit is 65,535 per statement)
ROWS_PER_STATEMENT: Final = 1000


class EventTable:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._known: set[date] = set()  # days whose partition this process has seen committed
        #: moves whenever this process drops partitions: days seen before a drop are not remembered after it
        #: (``made``), so a making that raced a drop (tests' reset, a pruning) leaves no day known that is gone
        self._generation = 0
        self._ahead_at = 0.0  # time.monotonic() before which ``prepare`` does not try again

    # --- writing (inside the caller's transaction) -------------------------------------------------
    def insert(
        self, conn: Connection, events: list[Record], along: tuple[str, tuple[Any, ...]] | None = None
    ) -> set[date]:
        """Insert ``events`` in the caller's transaction; returns the days it made partitions for (``made``
        once that transaction committed). ``along`` (a data-modifying statement and its parameters) runs in
        the same statement, as a CTE: a machine's change and its events are one statement, not two."""
        by_day = [(_day_of(e), e) for e in events]
        made = self._ensure(conn, {d for d, _ in by_day})
        # a statement carries at most 65,535 parameters (9 per event): a big batch (an audit's repairs after a
        # leader's crash) goes in statements of ROWS_PER_STATEMENT events, all in the caller's transaction
        for start in range(0, len(by_day), ROWS_PER_STATEMENT):
            chunk = by_day[start : start + ROWS_PER_STATEMENT]
            params: list[Any] = []
            for day, e in chunk:
                params += _row_params(day, e)
            query = _INSERT + ", ".join([_ROW] * len(chunk))
            if along is not None and start == 0:
                query = f"WITH along AS ({along[0]}) {query}"
                params[:0] = along[1]
            conn.execute(query, params)
        return made

    def insert_along(self, events: list[Record]) -> tuple[str, list[Any]] | None:
        """An insert of ``events`` that writes them only if the CTE ``along`` returned a row, to send in one
        statement with that change (``MachineTable.compare_and_set``); None when it cannot be one statement (a
        day's partition this process has not seen, or more events than fit in one)."""
        if not events or len(events) > ROWS_PER_STATEMENT:
            return None
        days = [_day_of(e) for e in events]
        with self._lock:
            if not self._known.issuperset(days):
                return None
        params: list[Any] = []
        for day, e in zip(days, events, strict=True):
            params += _row_params(day, e)
        rows = ", ".join([_ROW] * len(events))
        return f"{_INSERT_COLUMNS} SELECT v.* FROM (VALUES {rows}) AS v, along", params

    def prepare(self, days: Iterable[date]) -> bool:
        """Make the partitions of ``days`` ahead of their events, waiting at most ``AHEAD_LOCK_TIMEOUT_MS`` for the
        locks; True when they all exist. False when the log was busy (tried again ``AHEAD_RETRY_SECONDS`` later:
        until then this returns False at once)."""
        wanted = set(days)
        with self._lock:
            missing = wanted - self._known
            if not missing:
                return True
            if time.monotonic() < self._ahead_at:
                return False
            generation = self._generation
        try:
            with self._db.transaction() as conn:
                conn.execute(f"SET LOCAL lock_timeout = '{AHEAD_LOCK_TIMEOUT_MS}ms'")
                self._ensure(conn, missing)  # the write path's making, with the short wait
        except psycopg.errors.LockNotAvailable:
            with self._lock:
                self._ahead_at = time.monotonic() + AHEAD_RETRY_SECONDS
            log.warning(
                "Could not make the activity log's partition for %s ahead of time: a transaction on the log held it"
                " for over %d ms; trying again in %d s",
                ", ".join(str(d) for d in sorted(missing)),
                AHEAD_LOCK_TIMEOUT_MS,
                AHEAD_RETRY_SECONDS,
            )
            return False
        self.made(missing, generation)
        return True

    def generation(self) -> int:
        """Pass to ``made`` what this returned before the partitions were looked for."""
        with self._lock:
            return self._generation

    def made(self, days: Iterable[date], generation: int) -> None:
        """Remember ``days`` as made (their partitions committed), unless partitions were dropped since
        ``generation``."""
        with self._lock:
            if generation == self._generation:
                self._known.update(days)

    def forget(self, days: Iterable[date]) -> None:
        """Days whose partitions turned out to be gone (another node dropped them): made again when written."""
        with self._lock:
            self._known.difference_update(days)

    def _ensure(self, conn: Connection, days: set[date]) -> set[date]:
        with self._lock:
            missing = days - self._known
        if not missing:
            return set()
        if missing <= self._partitions(conn):
            # made (and committed) by another node or thread: no lock. Taken, the lock would be held until this
            # transaction commits, and every writer of a new day's first events would wait for the one before it
            return missing
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        existing = self._partitions(conn)
        for day in sorted(missing - existing):
            conn.execute(_create_partition(day))
        return missing

    @staticmethod
    def _partitions(conn: Connection) -> set[date]:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events'::regclass"
        ).fetchall()
        days: set[date] = set()
        for (name,) in rows:
            m = _PARTITION.match(name)
            if m:
                days.add(date(int(m[1]), int(m[2]), int(m[3])))
        return days

    # --- reading ----------------------------------------------------------------------------------
    def between(
        self, start_day: str, end_day: str, where: tuple[str, str] | None = None, batch: int = 1000
    ) -> Iterator[Record]:
        """Events of the days ``start_day``..``end_day`` (YYYY-MM-DD), oldest first; with ``where`` only those
        whose top-level ``field`` is the string ``value``. Read a batch per query: no connection is held
        while the caller looks at them."""
        days = _days(start_day, end_day)
        if days is None:
            return iter(())
        conditions: list[sql.Composable] = [sql.SQL("day BETWEEN %s AND %s")]
        params: list[Any] = [*days]
        if where is not None:
            field, value = where
            column = COLUMNS.get(field)
            if column is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
            else:
                conditions.append(sql.SQL("doc -> %s = %s"))
                params += [field, Jsonb(value)]
        return self._pages(conditions, params, batch)

    def of_subscription(
        self,
        start_day: str,
        end_day: str,
        subscription: str,
        resource_id: str | None = None,
        caller: str | None = None,
        batch: int = 1000,
    ) -> Iterator[Record]:
        """``Store.query_events``: a subscription's events of the days, narrowed to one resource and what is under
        it, and to one caller (both without case), by the indexes ``events_subscription_resource`` and
        ``events_subscription_caller``."""
        days = _days(start_day, end_day)
        if days is None:
            return iter(())
        conditions: list[sql.Composable] = [sql.SQL("subscription_id = %s"), sql.SQL("day BETWEEN %s AND %s")]
        params: list[Any] = [subscription, *days]
        if resource_id:
            want = resource_id.lower().rstrip("/")
            # under it: from "<id>/" up to "<id>0" ("0" follows "/"), in byte order (the pattern operators, which
            # the text_pattern_ops index serves, with a parameter too, unlike LIKE in a generic plan)
            conditions.append(
                sql.SQL("(lower(resource_id) = %s OR (lower(resource_id) ~>=~ %s AND lower(resource_id) ~<~ %s))")
            )
            params += [want, want + "/", want + "0"]
        if caller:
            conditions.append(sql.SQL("lower(caller) = %s"))
            params.append(caller.lower())
        return self._pages(conditions, params, batch)

    def _pages(self, conditions: list[sql.Composable], params: list[Any], batch: int) -> Iterator[Record]:
        """The rows matching every condition, oldest first, a batch per query (keyset on day and seq): no
        connection is held while the caller looks at them."""
        base = sql.SQL(" AND ").join(conditions)
        after: tuple[date, int] | None = None
        while True:
            query = sql.SQL("SELECT day, seq, doc FROM events WHERE {}{} ORDER BY day, seq LIMIT %s").format(
                base, sql.SQL(" AND (day, seq) > (%s, %s)") if after else sql.SQL("")
            )
            with self._db.connection() as conn:
                rows = conn.execute(query, [*params, *(after or ()), batch]).fetchall()
            for row in rows:
                yield row[2]
            if len(rows) < batch:
                return
            after = (rows[-1][0], rows[-1][1])

    # --- pruning and clearing --------------------------------------------------------------------------
    def prune_before(self, day: str) -> int:
        """Drop the partitions of the days before ``day``; returns how many days went (none when the log was busy
        for over ``AHEAD_LOCK_TIMEOUT_MS``: they go at a later pruning)."""
        cutoff = date.fromisoformat(day)
        try:
            with self._db.transaction() as conn:
                old = sorted(d for d in self._partitions(conn) if d < cutoff)
                if old:
                    conn.execute(f"SET LOCAL lock_timeout = '{AHEAD_LOCK_TIMEOUT_MS}ms'")
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
                    old = sorted(d for d in self._partitions(conn) if d < cutoff)
                for d in old:
                    conn.execute(_drop_partition(d))
        except psycopg.errors.LockNotAvailable:
            log.warning(
                "Could not drop the activity log's partitions before %s: a transaction on the log held it for over"
                " %d ms; they go at a later pruning",
                day,
                AHEAD_LOCK_TIMEOUT_MS,
            )
            return 0
        if old:
            with self._lock:
                self._known.difference_update(old)
                self._generation += 1
        return len(old)

    def drop_all(self, conn: Connection) -> None:
        """Drop every partition (tests' reset); in the caller's transaction."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        for d in sorted(self._partitions(conn)):
            conn.execute(_drop_partition(d))
        with self._lock:
            self._known.clear()
            self._generation += 1
