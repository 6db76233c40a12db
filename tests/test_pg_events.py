"""The activity log's day partitions (store/postgres/events.py): a writer that finds a day's partition made by
another node takes no lock (the lock would be held until its transaction commits, and every writer of the day's
first events would wait for the one before it)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from arcext.store.postgres import PostgresStore
from arcext.store.postgres.events import PARTITION_LOCK
from pgdb import fresh_database


def event(n: int) -> dict[str, Any]:
    return {"eventDataId": f"e{n}", "eventTimestamp": "2026-11-25T01:00:00.000000Z", "n": n}


def test_a_day_made_by_another_node_is_written_without_the_partition_lock() -> None:
    url = fresh_database()
    first, second = PostgresStore(url), PostgresStore(url)
    holder = psycopg.connect(url, autocommit=True)
    try:
        first.append_events([event(1)])  # makes the day's partition
        holder.execute("SELECT pg_advisory_lock(%s)", (PARTITION_LOCK,))  # as a node making another day would
        done = threading.Event()

        def write() -> None:
            second.append_events([event(2)])  # this node has not seen the day yet
            done.set()

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        assert done.wait(10), "the write waited for the partition lock"
        holder.execute("SELECT pg_advisory_unlock(%s)", (PARTITION_LOCK,))
        second.append_events([event(3), {**event(4), "eventTimestamp": "2026-11-26T01:00:00.000000Z"}])  # a new day
        assert [e["n"] for e in first.iter_events("2026-11-25", "2026-11-26")] == [1, 2, 3, 4]
    finally:
        holder.close()
        first.close()
        second.close()
