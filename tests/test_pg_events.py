"""The activity log's day partitions (store/postgres/events.py): a writer that finds a day's partition made by
another node takes no lock (the lock would be held until its transaction commits, and every writer of the day's
first events would wait for the one before it)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest

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


def days_made(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events'::regclass"
        ).fetchall()
    return {f"{name[7:11]}-{name[11:13]}-{name[13:15]}" for (name,) in rows}


def reader_of_the_log(url: str) -> psycopg.Connection[Any]:
    """A transaction that read the activity log and stays open (a long activity query, an export)."""
    conn = psycopg.connect(url)
    conn.execute("SELECT count(*) FROM events").fetchall()
    return conn


def within(seconds: float, call: Any) -> tuple[bool, Any]:
    """Run ``call`` on a thread; (whether it returned within ``seconds``, what it returned). A call that waits for
    a lock the test holds does not hang the test: the test lets go of the lock after this returns."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    return (not thread.is_alive() and bool(out)), (out[0] if out else None)


def test_a_day_made_ahead_is_written_while_a_long_reader_holds_the_log() -> None:
    """Making a day's partition needs the log to itself; made a day early (``prepare_event_days``, the engine's
    tick), the day's first writers make nothing, and a transaction that reads the log for long holds up no write.
    Made by the first write instead (no preparing), that write would wait for the reader, and every writer of
    the log behind it."""
    url = fresh_database()
    first, second = PostgresStore(url), PostgresStore(url)
    try:
        first.append_events([event(1)])
        assert first.prepare_event_days(["2026-11-25", "2026-11-26"]) is True
        assert {"2026-11-25", "2026-11-26"} <= days_made(url)
        reader = reader_of_the_log(url)
        done = threading.Event()

        def write() -> None:
            second.append_events([{**event(2), "eventTimestamp": "2026-11-26T00:00:01.000000Z"}])
            done.set()

        threading.Thread(target=write, daemon=True).start()
        written = done.wait(10)
        reader.close()
        assert written, "the first write of the new day waited for a reader of the log"
        assert [e["n"] for e in first.iter_events("2026-11-26", "2026-11-26")] == [2]
    finally:
        first.close()
        second.close()


def test_making_a_day_ahead_gives_way_to_a_long_reader_and_tries_again_later() -> None:
    """While a transaction reads the log, the partition's making waits at most ``AHEAD_LOCK_TIMEOUT_MS`` (writers
    queue behind a waiting DDL: they wait that long at most), returns False, and does not try again for
    ``AHEAD_RETRY_SECONDS``; once the reader is gone, the next attempt makes it."""
    url = fresh_database()
    store = PostgresStore(url)
    try:
        store.append_events([event(1)])
        reader = reader_of_the_log(url)
        try:
            returned, made = within(2.0, lambda: store.prepare_event_days(["2026-11-27"]))
            assert returned and made is False, "making a partition waited for a reader of the log"
            writer = PostgresStore(url)
            try:
                # an existing day's partition: nothing waits for the reader (nor for a partition's making)
                returned, _ = within(2.0, lambda: writer.append_events([event(2)]))
                assert returned
            finally:
                writer.close()
        finally:
            reader.close()
        assert "2026-11-27" not in days_made(url)
        assert store.prepare_event_days(["2026-11-27"]) is False  # not before AHEAD_RETRY_SECONDS
        store._events._ahead_at = 0.0  # AHEAD_RETRY_SECONDS later
        assert store.prepare_event_days(["2026-11-27"]) is True
        assert "2026-11-27" in days_made(url)
    finally:
        store.close()


def test_pruning_gives_way_to_a_long_reader_and_drops_the_days_at_a_later_pruning() -> None:
    url = fresh_database()
    store = PostgresStore(url)
    try:
        store.append_events([event(1), {**event(2), "eventTimestamp": "2026-11-26T01:00:00.000000Z"}])
        reader = reader_of_the_log(url)
        try:
            returned, dropped = within(2.0, lambda: store.prune_events_before("2026-11-26"))
            assert returned and dropped == 0, "pruning waited for a reader of the log"
        finally:
            reader.close()
        assert "2026-11-25" in days_made(url)
        assert store.prune_events_before("2026-11-26") == 1
        assert "2026-11-25" not in days_made(url)
        assert [e["n"] for e in store.iter_events("2026-11-25", "2026-11-26")] == [2]
    finally:
        store.close()


def test_a_server_makes_today_and_tomorrow_at_start_and_the_next_days_as_its_clock_moves(tmp_path: Any) -> None:
    from arcext.services import Services

    url = fresh_database()
    services = Services.open(tmp_path, manual_clock=True, database_url=url)
    try:
        services.start()
        today = services.clock.now().date()
        assert {str(today), str(today + timedelta(days=1))} <= days_made(url)
        services.clock.advance(2 * 86400)  # type: ignore[attr-defined]
        later = today + timedelta(days=3)
        deadline = time.monotonic() + 10
        while str(later) not in days_made(url) and time.monotonic() < deadline:
            time.sleep(0.2)  # the engine's tick (every second) makes them
        assert {str(today + timedelta(days=2)), str(later)} <= days_made(url)
    finally:
        services.close()


def test_a_job_write_whose_day_another_node_dropped_makes_the_day_again() -> None:
    """A node remembers the days whose partitions it saw, and a job's write sends its events with the change in
    one statement on that knowledge. When another node dropped the day meanwhile (its pruning after a clock
    moved, a test harness's reset), the statement fails on the missing partition; nothing is written, the node
    forgets the day, and the write goes through the locked path, which makes the day again."""
    from arcext.ids import MachineKey

    url = fresh_database()
    node, other = PostgresStore(url), PostgresStore(url)
    key = MachineKey("00000000-0000-0000-0000-000000000000", "rg", "m")
    try:
        node.mutate_machine(
            key, lambda _d: ({"machine": {"id": key.id, "name": "m"}, "extensions": {"e": {"v": 0}}}, None)
        )
        node.append_events([event(1)])  # the node knows the day now
        assert other.prune_events_before("2026-11-26") == 1  # ... which the other node drops

        def change(doc: Any) -> tuple[Any, None]:
            doc["extensions"]["e"] = {"v": 1}
            return doc, None

        node.mutate_extension(key, "e", change, events=[event(2)])
        stored = node.get_machine(key)
        assert stored is not None and stored["extensions"]["e"] == {"v": 1}
        assert [e["n"] for e in other.iter_events("2026-11-25", "2026-11-25")] == [2]
    finally:
        node.close()
        other.close()


def test_a_day_seen_before_this_process_dropped_partitions_is_not_remembered_after() -> None:
    """The race a test harness's reset ran into (the engine's tick made today's partition while the reset dropped
    every partition): a making that looked before a drop and finished after it must not leave the day known."""
    from datetime import date

    url = fresh_database()
    store = PostgresStore(url)
    try:
        table = store._events
        seen_at = table.generation()
        with store.db.transaction() as conn:
            table.drop_all(conn)
        table.made({date(2026, 11, 25)}, seen_at)
        assert table.insert_along([event(1)]) is None, "a dropped day is still taken as made"
        table.made({date(2026, 11, 25)}, table.generation())
        assert table.insert_along([event(1)]) is not None
    finally:
        store.close()


def test_a_write_whose_day_another_node_dropped_fails_once_and_the_next_one_makes_the_day() -> None:
    url = fresh_database()
    node, other = PostgresStore(url), PostgresStore(url)
    try:
        node.append_events([event(1)])
        assert other.prune_events_before("2026-11-26") == 1
        with pytest.raises(psycopg.errors.CheckViolation):
            node.append_events([event(2)])  # the transaction that finds the day gone
        node.append_events([event(3)])
        assert [e["n"] for e in other.iter_events("2026-11-25", "2026-11-25")][-1] == 3
    finally:
        node.close()
        other.close()
