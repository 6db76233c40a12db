"""What is particular to the PostgreSQL store: migrations when nodes start at once, several nodes on one
database (row locks, creating one machine), the activity log's day partitions, the shared clock,
observers after commit, and how a server, the harness and the CLI are pointed at a database. The Store
contract itself runs on both stores in test_store.py."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from arcext.cli import main
from arcext.ids import MachineKey
from arcext.store import TinyDBStore
from arcext.store.capabilities import JournalFigures, ObservableStore, SharedClock
from arcext.store.factory import open_store
from arcext.store.postgres import PostgresStore, provision
from arcext.store.postgres.schema import LATEST, SchemaTooNew
from arcext.testing import ArcextServer
from conftest import API, machine_url, put_machine
from pgdb import fresh_database

SUB = "00000000-0000-0000-0000-000000000000"


def doc(key: MachineKey, **props: Any) -> dict[str, Any]:
    return {"machine": {"id": key.id, "name": key.name, "properties": props}, "extensions": {}}


def event(n: int, day: str) -> dict[str, Any]:
    return {"eventDataId": f"e{n}", "eventTimestamp": f"{day}T01:00:00.000000Z", "n": n}


@pytest.fixture
def nodes() -> Iterator[Callable[..., PostgresStore]]:
    """Opens stores ("nodes") on one empty database; closes them at the end."""
    url = fresh_database()
    opened: list[PostgresStore] = []

    def node(**options: Any) -> PostgresStore:
        store = PostgresStore(url, **options)
        opened.append(store)
        return store

    yield node
    for store in opened:
        store.close()


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database without the schema (not a copy of the template)."""
    fresh_database()  # skips without PostgreSQL
    admin = provision.admin_url()
    name = f"arcext_empty_{threading.get_native_id()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = provision.url_for(admin, name)
    yield url
    provision.drop(url)


def run_together(count: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(0..count-1)`` in threads released at once; their results (an exception fails the test)."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a thread never finished (a deadlock?)"
    return results


def test_nodes_starting_at_once_apply_each_migration_once(empty_database: str) -> None:
    stores = run_together(4, lambda _i: PostgresStore(empty_database))
    try:
        with psycopg.connect(empty_database) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == list(range(1, LATEST + 1))
        key = MachineKey(SUB, "rg", "m")
        stores[0].mutate_machine(key, lambda _old: (doc(key, n=1), None))
        assert stores[3].get_machine(key) is not None
    finally:
        for store in stores:
            store.close()
    PostgresStore(empty_database).close()  # a later start finds nothing to do


def test_a_database_a_newer_arcext_migrated_is_refused(empty_database: str) -> None:
    PostgresStore(empty_database).close()
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (LATEST + 1,))
    with pytest.raises(SchemaTooNew, match=f"version {LATEST + 1}"):
        PostgresStore(empty_database)


def test_a_database_migrated_by_a_newer_arcext_is_used_when_its_new_versions_keep_older_releases(
    empty_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling upgrade: a node of this release restarted after a newer one migrated the database starts when
    every version it does not know is marked as keeping older releases working, and says so; one unmarked
    version among them and it is refused. The versions this release applies carry its marks."""
    from arcext.store.postgres.schema import KEEPS_OLDER

    PostgresStore(empty_database).close()
    with psycopg.connect(empty_database, autocommit=True) as conn:
        marks = dict(conn.execute("SELECT version, keeps_older FROM schema_version").fetchall())
        assert marks == {v: v in KEEPS_OLDER for v in range(1, LATEST + 1)}
        conn.execute(
            "INSERT INTO schema_version (version, keeps_older) VALUES (%s, true), (%s, true)", (LATEST + 1, LATEST + 2)
        )
    with caplog.at_level("WARNING", logger="arcext.store.postgres.schema"):
        store = PostgresStore(empty_database)
    try:
        key = MachineKey(SUB, "rg", "m")
        store.mutate_machine(key, lambda _old: (doc(key, n=1), None))
        assert store.get_machine(key) is not None
    finally:
        store.close()
    assert f"version {LATEST + 2}, newer than this arcext's {LATEST}" in caplog.text
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version, keeps_older) VALUES (%s, false)", (LATEST + 3,))
    with pytest.raises(SchemaTooNew, match=f"version {LATEST + 3} changed it"):
        PostgresStore(empty_database)


def test_two_nodes_changing_one_machine_lose_no_change(nodes: Callable[..., PostgresStore]) -> None:
    first, second = nodes(), nodes()
    key = MachineKey(SUB, "rg", "m")
    first.mutate_machine(key, lambda _old: (doc(key, n=0), None))

    def bump(current: Any) -> Any:
        current["machine"]["properties"]["n"] += 1
        return current, None

    run_together(6, lambda i: [(first if i % 2 else second).mutate_machine(key, bump) for _ in range(20)])
    assert first.get_machine(key)["machine"]["properties"]["n"] == 120  # type: ignore[index]


def test_two_nodes_creating_one_machine_at_once_create_it_once(nodes: Callable[..., PostgresStore]) -> None:
    stores = [nodes(), nodes()]
    for round_ in range(5):
        key = MachineKey(SUB, "rg", f"new-{round_}")

        def create(i: int, key: MachineKey = key) -> str:
            def change(current: Any) -> Any:
                if current is not None:
                    return current, "found"
                return doc(key, creator=i), "created"

            return stores[i % 2].mutate_machine(key, change)

        outcomes = run_together(4, create)
        assert sorted(outcomes) == ["created", "found", "found", "found"]


def partitions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events'::regclass ORDER BY 1"
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_the_activity_log_is_partitioned_by_day_and_pruned_a_day_at_a_time(
    nodes: Callable[..., PostgresStore],
) -> None:
    first, second = nodes(), nodes()
    first.append_events([event(1, "2026-11-23"), event(2, "2026-11-24")])
    # two nodes writing the first events of the same new day at once: one makes the partition
    run_together(4, lambda i: (first if i % 2 else second).append_events([event(10 + i, "2026-11-25")]))
    assert partitions(first.url) == ["events_20261123", "events_20261124", "events_20261125"]
    assert sorted(e["n"] for e in second.iter_events("2026-11-25", "2026-11-25")) == [10, 11, 12, 13]
    assert first.prune_events_before("2026-11-25") == 2
    assert partitions(first.url) == ["events_20261125"]
    assert sorted(e["n"] for e in first.iter_events("2026-01-01", "2026-12-31")) == [10, 11, 12, 13]
    first.append_events([event(3, "2026-11-23")])  # a pruned day comes back when written again
    assert [e["n"] for e in first.iter_events("2026-11-23", "2026-11-23")] == [3]


def test_a_change_may_read_the_store_inside_its_transaction_even_with_one_connection(
    nodes: Callable[..., PostgresStore],
) -> None:
    """The engine's changes look up the catalog: with every pooled connection held by such a change,
    asking the pool for another would wait for ever. The change's own transaction serves them."""
    store = nodes(min_connections=1, max_connections=1)
    store.put_extension_type({"publisher": "P", "type": "T", "autoUpgradeSupported": True})
    key, other = MachineKey(SUB, "rg", "m"), MachineKey(SUB, "rg", "other")
    store.mutate_machine(other, lambda _old: (doc(other, n=5), None))

    def change(current: Any) -> Any:
        supported = store.get_extension_type("p", "t")["autoUpgradeSupported"]  # type: ignore[index]
        seen = store.get_machine(other)["machine"]["properties"]["n"]  # type: ignore[index]
        store.append_events([event(1, "2026-11-25")])  # joins this transaction
        return doc(key, supported=supported, seen=seen), "ok"

    assert run_together(1, lambda _i: store.mutate_machine(key, change)) == ["ok"]
    assert store.get_machine(key)["machine"]["properties"] == {"supported": True, "seen": 5}  # type: ignore[index]

    def failing(current: Any) -> Any:
        store.append_events([event(2, "2026-11-25")])
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.mutate_machine(key, failing)
    assert [e["n"] for e in store.iter_events("2026-11-25", "2026-11-25")] == [1]  # event 2 went with its change


def test_observers_hear_of_committed_writes_only(nodes: Callable[..., PostgresStore]) -> None:
    store, other_node = nodes(), nodes()
    assert isinstance(store, ObservableStore) and not isinstance(store, JournalFigures)
    key = MachineKey(SUB, "rg", "m")
    seen_by_other_node: list[bool] = []
    timings: list[float] = []

    def listener(events: list[dict[str, Any]]) -> None:
        seen_by_other_node.append(other_node.get_machine(key) is not None)  # committed: visible everywhere

    store.set_event_listener(listener)
    store.set_write_observer(timings.append)
    store.mutate_machine(key, lambda _old: (doc(key), None), events=[event(1, "2026-11-25")])

    def failing(current: Any) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.mutate_machine(key, failing, events=[event(2, "2026-11-25")])
    assert seen_by_other_node == [True]
    assert len(timings) == 1 and 0 < timings[0] < 5


def test_nodes_share_one_manual_clock(nodes: Callable[..., PostgresStore]) -> None:
    first, second = nodes(), nodes()
    assert isinstance(first, SharedClock)
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert first.get_clock(start) == start
    assert second.get_clock(start + timedelta(days=9)) == start  # the first caller set it
    run_together(4, lambda i: (first if i % 2 else second).advance_clock(1800, start))
    assert second.get_clock(start) == start + timedelta(hours=2)


def test_open_store_picks_the_store_by_database_url(tmp_path: Path) -> None:
    url = fresh_database()
    embedded = open_store(tmp_path, None)
    database = open_store(tmp_path, url)
    try:
        assert isinstance(embedded, TinyDBStore) and isinstance(embedded, JournalFigures)
        assert isinstance(database, PostgresStore)
        assert re.fullmatch(r"PostgresStore\([\w.]+:\d+/arcext_t_\d+_\d+\)", repr(database))  # no password
    finally:
        embedded.close()
        database.close()


def test_token_commands_take_a_database(tmp_path: Path) -> None:
    url = fresh_database()
    runner = CliRunner()
    created = runner.invoke(
        main,
        ["token", "create", "--role", "Reader", "--scope", "/", "--name", "ci", "--data-dir", str(tmp_path)],
        env={"ARCEXT_DATABASE_URL": url},
    )
    assert created.exit_code == 0, created.output
    listed = runner.invoke(main, ["token", "list", "--database", url, "--data-dir", str(tmp_path)])
    (token_id,) = re.findall(r"^(\w+)\tci\tReader\t/", listed.output, re.MULTILINE)
    assert not (tmp_path / "tokens.json").exists(), "nothing went to the embedded store"
    store = PostgresStore(url)
    try:
        assert [t["name"] for t in store.list_tokens()] == ["ci"]
        revoked = runner.invoke(main, ["token", "revoke", token_id, "--database", url, "--data-dir", str(tmp_path)])
        assert revoked.exit_code == 0, revoked.output
        assert store.list_tokens() == []
    finally:
        store.close()


def test_a_harness_server_on_a_database_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    url = fresh_database()
    with ArcextServer(tmp_path / "data", database_url=url) as server:
        assert isinstance(server.services.store, PostgresStore)
        with server.session() as session:
            put_machine(session, server, "m1")
        metrics = server.services.metrics.render().decode()
        written = re.search(r"^arcext_store_write_duration_seconds_count (\S+)$", metrics, re.MULTILINE)
        assert written and float(written.group(1)) >= 1  # the commit timer is wired to the metrics
    with ArcextServer(tmp_path / "data", database_url=url) as again:
        with again.session() as session:
            r = session.get(machine_url(again, "m1"), params={"api-version": API})
        assert r.status_code == 200, r.text


def test_a_released_scratch_database_is_given_out_again_empty(tmp_path: Path) -> None:
    """The harness's databases: a stopped server's is emptied and reused, not copied again from the template."""
    fresh_database()  # skips without PostgreSQL
    url = provision.for_directory(tmp_path / "first")
    assert provision.for_directory(tmp_path / "first") == url  # a restart on the directory finds it
    store = PostgresStore(url)
    key = MachineKey(SUB, "rg", "m")
    store.mutate_machine(key, lambda _old: (doc(key), None), events=[event(1, "2026-11-25")])
    store.put_token({"id": "t", "hash": "h", "name": "n", "role": "Reader", "scope": "/", "createdAt": "x"})
    store.close()
    provision.release(url)
    assert provision.for_directory(tmp_path / "second") == url
    store = PostgresStore(url)
    try:
        assert store.count_machines() == 0 and store.list_tokens() == []
        assert list(store.iter_events("2000-01-01", "9999-12-31")) == [] and partitions(url) == []
    finally:
        store.close()
        provision.release(url)


def test_the_activity_query_is_narrowed_by_the_database_with_its_indexes(nodes: Callable[..., PostgresStore]) -> None:
    """A query for one resource (and what is under it) or one caller returns only those events from the
    database, and its plan reads them through the subscription's resource and caller indexes: also as the generic
    plan of a prepared statement (psycopg prepares a query run five times), where a LIKE pattern could not be."""
    store = nodes()
    sub = "00000000-0000-0000-0000-000000000000"
    base = f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.HybridCompute/machines"
    events = [
        {
            "eventDataId": f"e{n}",
            "eventTimestamp": "2026-11-25T01:00:00.000000Z",
            "subscriptionId": sub,
            "resourceId": f"{base}/m{n % 500}" + ("/extensions/e" if n % 2 else ""),
            "caller": f"user{n % 250}@example.com",
            "n": n,
        }
        for n in range(5000)
    ]
    store.append_events(events)
    want = {
        e["n"]
        for e in events
        if e["resourceId"].lower().startswith(f"{base}/m7/".lower()) or e["resourceId"] == f"{base}/m7"
    }
    for _ in range(7):  # past the prepare threshold
        got = {e["n"] for e in store.query_events("2026-11-25", "2026-11-25", sub, resource_id=f"{base.upper()}/M7")}
        assert got == want and len(want) == 10
    assert {e["n"] for e in store.query_events("2026-11-25", "2026-11-25", sub, caller="USER3@example.com")} == {
        n for n in range(5000) if n % 250 == 3
    }
    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute("ANALYZE events")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(
            "PREPARE by_resource(text, text, text, text) AS SELECT doc FROM events WHERE subscription_id = $1"
            " AND day = '2026-11-25' AND (lower(resource_id) = $2 OR (lower(resource_id) ~>=~ $3"
            " AND lower(resource_id) ~<~ $4)) ORDER BY day, seq"
        )
        m7 = f"{base}/m7".lower()
        plan = "\n".join(
            r[0] for r in conn.execute(f"EXPLAIN EXECUTE by_resource('{sub}', '{m7}', '{m7}/', '{m7}0')").fetchall()
        )
        assert "Seq Scan" not in plan and "Index Cond: ((subscription_id = " in plan and "~>=~" in plan, plan
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT doc FROM events WHERE subscription_id = %s AND day = '2026-11-25'"
                " AND lower(caller) = 'user3@example.com'",
                (sub,),
            ).fetchall()
        )
        assert "Seq Scan" not in plan and "(lower(caller) = " in plan, plan
