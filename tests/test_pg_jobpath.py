"""The PostgreSQL store's job path: a job's writes of its extension's record as one compare-and-set statement
(``PostgresStore.mutate_extension``) and the catalog's types kept per catalog version, with several stores
("nodes") on one database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from arcext.ids import MachineKey
from arcext.store.postgres import PostgresStore
from arcext.store.postgres.db import SeenRow
from pgdb import fresh_database

SUB = "00000000-0000-0000-0000-000000000000"
KEY = MachineKey(SUB, "rg", "m")
TODAY = "2026-12-05"


def machine(key: MachineKey, extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"machine": {"id": key.id, "name": key.name, "properties": {}}, "extensions": extensions or {}}


def event(n: int, day: str = TODAY) -> dict[str, Any]:
    return {"eventDataId": f"e{n}", "eventTimestamp": f"{day}T01:00:00.000000Z", "n": n}


@pytest.fixture
def nodes() -> Iterator[Callable[..., PostgresStore]]:
    url = fresh_database()
    opened: list[PostgresStore] = []

    def node(**options: Any) -> PostgresStore:
        store = PostgresStore(url, **options)
        opened.append(store)
        return store

    yield node
    for store in opened:
        store.close()


class Statements:
    """Counts the statements a store sends outside a transaction (``Database.connection``, ``Database.grouped``)."""

    def __init__(self, store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[str] = []
        real = store.db.connection
        counter = self

        class Counting:
            def __init__(self, conn: Any) -> None:
                self._conn = conn

            def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                counter.sent.append(str(query))
                return self._conn.execute(query, *args, **kwargs)

        @contextmanager
        def connection() -> Iterator[Any]:
            with real() as conn:
                yield Counting(conn)

        real_grouped = store.db.grouped

        def grouped(query: str, params: Any, order: Any = None) -> Any:
            counter.sent.append(query)
            return real_grouped(query, params, order)

        monkeypatch.setattr(store.db, "connection", connection)
        monkeypatch.setattr(store.db, "grouped", grouped)


def set_record(ext: str, value: Any, log: list[dict[str, Any]] | None = None) -> Callable[[Any], Any]:
    def change(doc: Any) -> Any:
        doc["extensions"][ext] = {"value": value}
        if log is not None:
            log.append(event(len(log) + 1))
        return doc, value

    return change


def test_an_extension_write_is_one_statement_with_its_events_when_nobody_raced_it(
    nodes: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = nodes()
    store.mutate_machine(KEY, lambda _doc: (machine(KEY), None))
    store.append_events([event(0)])  # today's partition exists (a new day's first event takes the lock)
    counted = Statements(store, monkeypatch)
    events: list[dict[str, Any]] = []
    assert store.mutate_extension(KEY, "a", set_record("a", 1, events), events) == 1
    assert len(counted.sent) == 2  # the row read with its version, then the write with the event
    events2: list[dict[str, Any]] = []
    store.mutate_extension(KEY, "a", set_record("a", 2, events2), events2)
    assert len(counted.sent) == 3  # the row as this thread wrote it: no read
    assert store.get_machine(KEY)["extensions"]["a"] == {"value": 2}  # type: ignore[index]
    assert [e["n"] for e in store.iter_events(TODAY, TODAY)] == [0, 1, 1]


def test_a_write_racing_another_runs_again_on_the_new_row_and_keeps_both(
    nodes: Callable[..., PostgresStore],
) -> None:
    first, second = nodes(), nodes()
    first.mutate_machine(KEY, lambda _doc: (machine(KEY), None))
    first.append_events([event(0)])
    runs: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    def change(doc: Any) -> Any:
        runs.append(dict(doc["extensions"]))
        if len(runs) == 1:  # another node writes the machine between this change's read and its write
            second.mutate_machine(KEY, set_record("b", "theirs"), extension="b")
        doc["extensions"]["a"] = {"value": "mine", "others": sorted(doc["extensions"])}
        events.append(event(len(runs)))
        return doc, len(runs)

    assert first.mutate_extension(KEY, "a", change, events) == 2
    assert runs == [{}, {"b": {"value": "theirs"}}]
    stored = second.get_machine(KEY)["extensions"]  # type: ignore[index]
    assert stored == {"a": {"value": "mine", "others": ["b"]}, "b": {"value": "theirs"}}
    assert [e["n"] for e in second.iter_events(TODAY, TODAY)] == [0, 2]  # the first run's event went with it
    assert events == [event(2)]


def test_a_write_overtaken_on_a_fresh_row_takes_the_row_lock(nodes: Callable[..., PostgresStore]) -> None:
    first, second = nodes(), nodes()
    first.mutate_machine(KEY, lambda _doc: (machine(KEY, {"n": {"value": 0}}), None))
    first.mutate_extension(KEY, "n", lambda doc: (doc, None))  # keeps nothing: a change that wrote nothing
    runs = 0

    def bump(doc: Any) -> Any:
        nonlocal runs
        runs += 1
        if runs == 1:  # overtaken on the optimistic attempt (the row as read just now)
            second.mutate_machine(KEY, set_record("other", runs), extension="other")
        doc["extensions"]["n"]["value"] += 1
        return doc, None

    first.mutate_extension(KEY, "n", bump)
    assert runs == 2  # optimistic, then under the row's lock (which nobody can overtake)
    stored = second.get_machine(KEY)["extensions"]  # type: ignore[index]
    assert stored == {"n": {"value": 1}, "other": {"value": 1}}


def test_a_kept_row_that_is_stale_is_read_again(nodes: Callable[..., PostgresStore]) -> None:
    first, second = nodes(), nodes()
    first.mutate_machine(KEY, lambda _doc: (machine(KEY), None))
    first.mutate_extension(KEY, "a", set_record("a", 1))  # keeps the row as written for this thread
    second.mutate_machine(KEY, set_record("b", 1), extension="b")
    seen: list[Any] = []

    def change(doc: Any) -> Any:
        seen.append(sorted(doc["extensions"]))
        doc["extensions"]["a"] = {"value": 2}
        return doc, None

    first.mutate_extension(KEY, "a", change)
    assert seen == [["a"], ["a", "b"]]  # the kept row first (its write missed), then the row as it is
    assert second.get_machine(KEY)["extensions"] == {"a": {"value": 2}, "b": {"value": 1}}  # type: ignore[index]


def test_a_change_that_fails_on_a_kept_row_runs_again_on_the_row_as_it_is(nodes: Callable[..., PostgresStore]) -> None:
    first, second = nodes(), nodes()
    first.mutate_machine(KEY, lambda _doc: (machine(KEY), None))
    first.mutate_extension(KEY, "a", set_record("a", 1))  # keeps the row as written for this thread
    second.mutate_machine(KEY, set_record("b", 1), extension="b")

    def needs_b(doc: Any) -> Any:
        doc["extensions"]["a"] = {"value": doc["extensions"]["b"]["value"] + 1}  # KeyError on the kept row
        return doc, "done"

    assert first.mutate_extension(KEY, "a", needs_b) == "done"
    assert second.get_machine(KEY)["extensions"]["a"] == {"value": 2}  # type: ignore[index]
    with pytest.raises(KeyError):  # on a row read just now it is the change's own failure
        first.mutate_extension(KEY, "a", lambda doc: (doc, doc["extensions"]["missing"]))


def test_an_offered_row_is_written_without_a_read_and_a_change_that_writes_nothing_reads_afresh(
    nodes: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = nodes()
    store.mutate_machine(KEY, lambda _doc: (machine(KEY, {"a": {"value": 0}}), None))
    with psycopg.connect(store.url) as conn:
        row = conn.execute("SELECT doc::text, xmin::text FROM machines").fetchone()
    assert row is not None
    counted = Statements(store, monkeypatch)
    store.db.offer_row(KEY.lower, SeenRow(row[0], row[1], 0))
    store.mutate_extension(KEY, "a", set_record("a", 1))
    assert len(counted.sent) == 1
    # a change that writes nothing on a row kept from before answers for the row as it is now
    store.db.offer_row(KEY.lower, SeenRow(row[0], row[1], 0))
    look = store.mutate_extension(KEY, "b", lambda doc: (doc, doc["extensions"]["a"]["value"]))  # no "b": no write
    assert look == 1
    assert len(counted.sent) == 2  # the read of the row as it is (nothing written to check the kept one with)


def test_writes_of_one_machine_from_two_nodes_at_once_lose_nothing(nodes: Callable[..., PostgresStore]) -> None:
    stores = [nodes(), nodes()]
    stores[0].mutate_machine(KEY, lambda _doc: (machine(KEY), None))
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(15):

                def bump(doc: Any, i: int = i) -> Any:
                    counter = doc["extensions"].setdefault("shared", {"value": 0})
                    counter["value"] += 1
                    return doc, None

                stores[i % 2].mutate_extension(KEY, "shared", bump)
                stores[i % 2].mutate_extension(KEY, f"own{i}", set_record(f"own{i}", i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    stored = stores[1].get_machine(KEY)["extensions"]  # type: ignore[index]
    assert stored["shared"] == {"value": 90}
    assert {name: rec["value"] for name, rec in stored.items() if name != "shared"} == {f"own{i}": i for i in range(6)}


def test_a_missing_machine_and_a_new_days_events_go_the_locked_way(nodes: Callable[..., PostgresStore]) -> None:
    store = nodes()
    assert store.mutate_extension(KEY, "a", lambda doc: (doc, doc is None)) is True
    store.mutate_machine(KEY, lambda _doc: (machine(KEY), None))
    events: list[dict[str, Any]] = []
    store.mutate_extension(KEY, "a", set_record("a", 1, events), events)  # the day's partition is made
    assert [e["n"] for e in store.iter_events(TODAY, TODAY)] == [1]


# --- the catalog ------------------------------------------------------------------------------------


def supported(store: PostgresStore, ext: str = "a") -> Callable[[Any], Any]:
    """A job's kind of change: looks at its type in the catalog, writes what it saw."""

    def change(doc: Any) -> Any:
        record = store.get_extension_type("Pub", "Type")
        value = record["autoUpgradeSupported"] if record else None
        doc["extensions"][ext] = {"value": value}
        return doc, value

    return change


def test_a_type_changed_on_one_node_is_seen_by_the_next_change_on_another(
    nodes: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = nodes(), nodes()
    first.mutate_machine(KEY, lambda _doc: (machine(KEY), None))
    first.put_extension_type({"publisher": "Pub", "type": "Type", "autoUpgradeSupported": True})
    assert second.mutate_extension(KEY, "a", supported(second)) is True
    counted = Statements(second, monkeypatch)
    assert second.mutate_extension(KEY, "a", supported(second)) is True
    assert not any("extension_types" in q for q in counted.sent)  # the kept type, at the version read with the row
    first.put_extension_type({"publisher": "Pub", "type": "Type", "autoUpgradeSupported": False})
    assert second.mutate_extension(KEY, "a", supported(second)) is False
    assert second.mutate_machine(KEY, supported(second), extension="a") is False  # the locked way as well
    first.clear()  # deleting types moves the version on too
    first.mutate_machine(KEY, lambda _doc: (machine(KEY), None))
    assert second.mutate_extension(KEY, "a", supported(second)) is None


def test_a_type_changed_between_a_changes_read_and_its_write_makes_it_run_again(
    nodes: Callable[..., PostgresStore],
) -> None:
    first, second = nodes(), nodes()
    first.mutate_machine(KEY, lambda _doc: (machine(KEY), None))
    first.put_extension_type({"publisher": "Pub", "type": "Type", "autoUpgradeSupported": True})
    seen: list[Any] = []
    look = supported(second)

    def change(doc: Any) -> Any:
        doc, value = look(doc)
        seen.append(value)
        if len(seen) == 1:  # the operator turns automatic upgrade off on another node meanwhile
            first.put_extension_type({"publisher": "Pub", "type": "Type", "autoUpgradeSupported": False})
        return doc, value

    assert second.mutate_extension(KEY, "a", change) is False
    assert seen == [True, False]
    assert first.get_machine(KEY)["extensions"]["a"] == {"value": False}  # type: ignore[index]


def test_reads_outside_a_change_read_the_table(nodes: Callable[..., PostgresStore]) -> None:
    first, second = nodes(), nodes()
    first.put_extension_type({"publisher": "Pub", "type": "Type", "autoUpgradeSupported": True})
    assert second.get_extension_type("pub", "type")["autoUpgradeSupported"] is True  # type: ignore[index]
    first.put_extension_type({"publisher": "Pub", "type": "Type", "autoUpgradeSupported": False})
    assert second.get_extension_type("pub", "type")["autoUpgradeSupported"] is False  # type: ignore[index]


# --- the cluster's job ends (group commit) ------------------------------------------------------------


def test_job_ends_finishing_together_go_in_one_statement_each_committed_before_it_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from arcext.cluster.node import ClusterNode
    from arcext.cluster.schema import migrate_cluster
    from arcext.cluster.settings import ClusterSettings
    from arcext.store.postgres.db import Database
    from arcext.upgrades.jobs import JobResult

    url = fresh_database()
    db = Database(url, max_size=4)
    try:
        with db.connection() as conn:
            migrate_cluster(conn)
            for table in ("engine_jobs", "engine_results", "engine_calls"):
                conn.execute(f"DELETE FROM {table}")
        engine = SimpleNamespace(execute_call=lambda method, args: None)
        node = ClusterNode(url, db, engine, ClusterSettings(), workers=12)  # type: ignore[arg-type]  # never started
        with db.connection() as conn:
            ids = [
                int(row[0])
                for row in conn.execute(
                    "INSERT INTO engine_jobs (subscription, resource_group, name, ext, claimed_by, lease_until)"
                    " SELECT 'sub', 'rg', 'm' || i, 'ama', %s, now() + interval '1 minute'"
                    " FROM generate_series(0, 12) AS i RETURNING id",
                    (node.node_id,),
                ).fetchall()
            ]
            # the last one's lease was lost: the node that took it over reports it, not this one
            conn.execute("UPDATE engine_jobs SET claimed_by = 'another-node' WHERE id = %s", (ids[-1],))
        sent: list[int] = []
        real = db.connection
        first_sent = threading.Event()

        @contextmanager
        def slow_first() -> Iterator[Any]:
            with real() as conn:
                sent.append(1)
                if len(sent) == 1:  # the first end's statement is slow: the others pile up behind it
                    first_sent.set()
                    threading.Event().wait(0.3)
                yield conn

        monkeypatch.setattr(db, "connection", slow_first)
        seen_at_return: dict[int, bool] = {}

        def finish(i: int) -> None:
            if i:
                first_sent.wait(5)
            node._finish(ids[i], MachineKey(SUB, "rg", f"m{i}"), "ama", JobResult(KEY, "ama", "Succeeded", {}))
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM engine_jobs WHERE id = %s", (ids[i],)).fetchone()
            seen_at_return[i] = row == (0,)

        threads = [threading.Thread(target=finish, args=(i,)) for i in range(13)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert seen_at_return == {i: i < 12 for i in range(13)}  # each end was committed when its call returned
        assert len(sent) == 2  # the first end, then the twelve that came while it was on its way
        with psycopg.connect(url) as conn:
            results = conn.execute("SELECT count(*) FROM engine_results").fetchone()
            left = conn.execute("SELECT id FROM engine_jobs").fetchall()
        assert results == (12,)
        assert left == [(ids[-1],)]
    finally:
        db.close()


def test_writes_asked_for_together_are_committed_together_and_a_failed_group_runs_each_on_its_own() -> None:
    from arcext.store.postgres.db import Database

    url = fresh_database()
    db = Database(url, max_size=4)
    try:
        with db.connection() as conn:
            conn.execute("CREATE TABLE grouped_test (n int, d int)")

        def together(values: list[int]) -> dict[int, Any]:
            """The first write is slow: the others, asked for meanwhile, go in the next group."""
            out: dict[int, Any] = {}
            first_on_its_way = threading.Event()

            def write(i: int) -> None:
                if i:
                    first_on_its_way.wait(5)
                    threading.Event().wait(0.05)
                    query = "INSERT INTO grouped_test VALUES (%s, 1 / %s) RETURNING n"
                else:
                    first_on_its_way.set()
                    query = "INSERT INTO grouped_test SELECT %s, %s FROM pg_sleep(0.4) RETURNING n"
                try:
                    out[i] = db.grouped(query, (i, values[i]))
                except psycopg.Error as exc:
                    out[i] = type(exc).__name__

            threads = [threading.Thread(target=write, args=(i,)) for i in range(len(values))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            return out

        assert together([1, 1, 1, 1, 1]) == {i: [(i,)] for i in range(5)}
        with db.connection() as conn:
            versions = conn.execute("SELECT n, xmin::text FROM grouped_test ORDER BY n").fetchall()
        assert len({xmin for n, xmin in versions if n}) == 1  # the four asked for together: one transaction
        with db.connection() as conn:
            conn.execute("DELETE FROM grouped_test")
        outcome = together([1, 1, 0, 1])  # one of the group fails: the others are written all the same
        assert outcome == {0: [(0,)], 1: [(1,)], 2: "DivisionByZero", 3: [(3,)]}
        with db.connection() as conn:
            assert conn.execute("SELECT n FROM grouped_test ORDER BY n").fetchall() == [(0,), (1,), (3,)]
    finally:
        db.close()
