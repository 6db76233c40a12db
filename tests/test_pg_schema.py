"""The PostgreSQL store's schema migration 3 (store/postgres/schema.py): lz4 and in-row storage for machine
documents, lz4 for activity-log events, the events' unused indexes dropped. A database made at version 2, with
data, upgrades; the documents read back unchanged and what is written afterwards is kept as migration 3 says."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from arcext.ids import MachineKey
from arcext.store.postgres import PostgresStore, provision
from arcext.store.postgres.schema import LATEST, MIGRATION_LOCK, MIGRATIONS, apply_migrations
from pgdb import fresh_database

SUB = "00000000-0000-0000-0000-000000000000"
PROVIDER = "Microsoft.HybridCompute"


def lz4_available(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ).fetchone()
    return bool(row and row[0])


@pytest.fixture
def version_2_database() -> Iterator[str]:
    """A database migrated to schema version 2 only, holding a machine and a day's activity-log partition."""
    fresh_database()  # skips without PostgreSQL
    admin = provision.admin_url()
    name = f"arcext_v2_{threading.get_native_id()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = provision.url_for(admin, name)
    with psycopg.connect(url, autocommit=True) as conn:
        apply_migrations(conn, MIGRATION_LOCK, "schema_version", [m for m in MIGRATIONS if m[0] <= 2])
        conn.execute(
            "INSERT INTO machines (subscription, resource_group, name, doc) VALUES (%s, 'rg', 'old', %s)",
            (SUB, Jsonb(machine_doc(MachineKey(SUB, "rg", "old"), 40))),
        )
        conn.execute(
            "CREATE TABLE events_20261124 PARTITION OF events FOR VALUES FROM ('2026-11-24') TO ('2026-11-25')"
        )
        conn.execute(
            "INSERT INTO events (day, event_timestamp, event_data_id, subscription_id, operation_id, caller, doc)"
            " VALUES ('2026-11-24', '2026-11-24T01:00:00.000000Z', 'e1', %s, 'op-1', 'someone', %s)",
            (SUB, Jsonb(event(1, "2026-11-24", "op-1"))),
        )
    yield url
    provision.drop(url)


def machine_doc(key: MachineKey, extensions: int) -> dict[str, Any]:
    """A document of about the size of the benchmark's (3 extensions: about 5 KB of JSON)."""
    return {
        "machine": {"id": key.id, "name": key.name, "properties": {"osName": "windows", "status": "Connected"}},
        "extensions": {f"ext{i}": extension_record(i, "1.0.0") for i in range(extensions)},
    }


def noise(*parts: object) -> str:
    """64 characters that do not compress (as the benchmark's ids and sealed settings do not)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def extension_record(i: int, version: str) -> dict[str, Any]:
    return {
        "outcomes": {noise("rollout", i, version)[:36]: "Succeeded"},
        "lkg": version,
        "upgrade": {"toVersion": "1.0.1", "attempt": 1, "startedAt": "2026-11-24T01:00:00.000000Z"},
        "resource": {
            "id": f"/subscriptions/{SUB}/resourceGroups/rg/providers/{PROVIDER}/machines/m/extensions/e{i}",
            "properties": {"typeHandlerVersion": version, "settings": {"n": i, "mode": "AutomaticByPlatform"}},
        },
        "protected": noise("sealed", i) + noise("sealed", i, 1),
    }


def event(n: int, day: str, operation: str) -> dict[str, Any]:
    return {
        "eventDataId": f"e{n}",
        "eventTimestamp": f"{day}T01:00:00.000000Z",
        "subscriptionId": SUB,
        "operationId": operation,
        "caller": "someone",
        "n": n,
        "description": "x" * 2500,  # a row over the 2 KB above which PostgreSQL compresses it
    }


def column_settings(conn: psycopg.Connection[Any], table: str) -> dict[str, tuple[str, str]]:
    """Each column's (storage, compression) of ``table``."""
    rows = conn.execute(
        "SELECT attname, attstorage, attcompression FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
        (table,),
    ).fetchall()
    return {str(name): (str(storage), str(compression)) for name, storage, compression in rows}


def test_a_version_2_database_upgrades_and_keeps_its_data(version_2_database: str) -> None:
    store = PostgresStore(version_2_database)
    try:
        old = MachineKey(SUB, "rg", "old")
        assert store.get_machine(old) == machine_doc(old, 40)
        assert [e["n"] for e in store.iter_events("2026-11-24", "2026-11-24", ("operationId", "op-1"))] == [1]
        # written after the upgrade: the machine's new version, and an event in a partition made now
        store.mutate_machine(old, lambda doc: (doc, None), extension="ext0")
        store.append_events([event(2, "2026-11-25", "op-2")])
        assert [e["n"] for e in store.iter_events("2026-11-24", "2026-11-25")] == [1, 2]
        assert [e["n"] for e in store.iter_events("2026-11-24", "2026-11-25", ("subscriptionId", SUB))] == [1, 2]
        assert [e["n"] for e in store.iter_events("2026-11-24", "2026-11-25", ("caller", "someone"))] == [1, 2]
    finally:
        store.close()
    with psycopg.connect(version_2_database, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")] == list(
            range(1, LATEST + 1)
        )
        lz4 = lz4_available(conn)
        compression = "l" if lz4 else ""
        machines = column_settings(conn, "machines")
        assert machines["doc"] == ("m", compression)
        assert {machines[c][0] for c in ("subscription", "resource_group", "name")} == {"m"}
        options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = 'machines'::regclass").fetchone()
        assert options is not None and "fillfactor=75" in options[0]
        for table in ("events", "events_20261124", "events_20261125"):  # the old partition and the new one
            assert column_settings(conn, table)["doc"] == ("x", compression), table
        indexes = {
            str(r[0])
            for r in conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'events'::regclass")
        }
        assert indexes == {
            *("events_order", "events_time", "events_subscription", "events_operation"),
            *("events_subscription_resource", "events_subscription_caller"),  # migration 4: the activity query's
        }
        if lz4:  # values written since are lz4; the row written before keeps pglz until it is rewritten
            methods = conn.execute("SELECT day, pg_column_compression(doc) FROM events ORDER BY day").fetchall()
            assert [m for _day, m in methods] == ["pglz", "lz4"]
            row = conn.execute("SELECT pg_column_compression(doc) FROM machines").fetchone()
            assert row is not None and row[0] == "lz4"


def test_a_machine_document_stays_in_its_row() -> None:
    """A compressed document over 2 KB (as a machine's in the middle of a job in the benchmark) is kept in the row,
    and so are its key's columns: nothing goes to the TOAST table. (Whether its new versions stay on their page,
    HOT updates, depends on pruning the page, which other sessions' snapshots may hold back: the benchmark's figure,
    not a test's.)"""
    url = fresh_database()
    store = PostgresStore(url)
    try:
        keys = [MachineKey(SUB, "rg", f"machine-{i:06d}") for i in range(20)]
        for key in keys:
            store.mutate_machine(key, lambda _old, key=key: (machine_doc(key, 9), None))
        with psycopg.connect(url, autocommit=True) as conn:
            sizes = conn.execute("SELECT min(pg_column_size(doc)), max(pg_column_size(doc)) FROM machines").fetchone()
            assert sizes is not None
            if lz4_available(conn):  # lz4-compressed: over 2 KB (pglz would make it a little smaller)
                assert 2100 < sizes[0] <= sizes[1] < 2500
            for round_ in range(3):
                for key in keys:

                    def change(doc: Any, r: int = round_) -> tuple[Any, None]:
                        doc["extensions"]["ext0"] = extension_record(0, f"1.0.{r}")
                        return doc, None

                    store.mutate_extension(key, "ext0", change)
            toasted = conn.execute(
                "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'machines'::regclass"
            ).fetchone()
            assert toasted == (0,)
        assert store.get_machine(keys[0])["extensions"]["ext0"] == extension_record(0, "1.0.2")  # type: ignore[index]
    finally:
        store.close()


def test_the_cluster_tables_upgrade_from_version_2(version_2_database: str) -> None:
    """Cluster migration 3 (arcext.cluster.schema): the claim index no query used is gone, engine_jobs and simhosts
    leave room on their pages, simhosts' documents are lz4; queued jobs and hosts stay."""
    from arcext.cluster.schema import CLUSTER_MIGRATION_LOCK, migrate_cluster
    from arcext.cluster.schema import MIGRATIONS as CLUSTER_MIGRATIONS

    with psycopg.connect(version_2_database, autocommit=True) as conn:
        earlier = [m for m in CLUSTER_MIGRATIONS if m[0] <= 2]
        apply_migrations(conn, CLUSTER_MIGRATION_LOCK, "cluster_schema_version", earlier)
        conn.execute("INSERT INTO engine_jobs (subscription, resource_group, name, ext) VALUES ('s', 'rg', 'm', 'e')")
        conn.execute("INSERT INTO simhosts (key, doc) VALUES ('s/rg/m', %s)", (Jsonb({"n": 1}),))
        assert migrate_cluster(conn) == [m[0] for m in CLUSTER_MIGRATIONS if m[0] > 2]
        assert migrate_cluster(conn) == []  # once
        indexes = {
            str(r[0])
            for r in conn.execute(
                "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'engine_jobs'::regclass"
            )
        }
        assert indexes == {"engine_jobs_pkey", "engine_jobs_target"}
        for table in ("engine_jobs", "simhosts"):
            options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()
            assert options is not None and "fillfactor=70" in options[0], table
        assert column_settings(conn, "simhosts")["doc"] == ("x", "l" if lz4_available(conn) else "")
        assert conn.execute("SELECT name FROM engine_jobs").fetchall() == [("m",)]
        assert conn.execute("SELECT doc FROM simhosts").fetchall() == [({"n": 1},)]


def test_a_migration_gives_way_to_a_long_transaction_and_applies_once_it_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A migration that alters a table waits for every transaction using it, and every later user of the table
    waits behind the migration: the running nodes' writes would stop for as long as a backup or a long query
    ran. It waits at most ``MIGRATION_LOCK_TIMEOUT_MS`` per attempt (the running nodes' writes go on between
    attempts) and applies once the table is free."""
    from arcext.store.postgres import schema

    url = fresh_database()
    monkeypatch.setattr(schema, "MIGRATION_LOCK_TIMEOUT_MS", 200)
    monkeypatch.setattr(schema, "MIGRATION_RETRY_SECONDS", 0.3)
    table = f"mig_probe_{threading.get_native_id()}"
    steps = [
        (1, f"CREATE TABLE {table} (n int)"),
        (2, f"ALTER TABLE {table} ADD COLUMN m int"),
    ]
    lock = 0x6D6967726174  # a lock of this test's own
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_version")
        apply_migrations(conn, lock, f"{table}_version", steps[:1])
    reader = psycopg.connect(url)  # a long transaction that read the table
    reader.execute(f"SELECT count(*) FROM {table}").fetchall()
    applied: list[list[int]] = []

    def migrate() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            applied.append(apply_migrations(conn, lock, f"{table}_version", steps))

    migrating = threading.Thread(target=migrate, daemon=True)
    try:
        migrating.start()
        time.sleep(0.8)  # the migration has tried and given up at least once
        writes_ran = 0
        with psycopg.connect(url, autocommit=True) as writer:
            writer.execute("SET lock_timeout = '3s'")  # longer than one attempt: fails only if a migration never yields
            for n in range(5):
                writer.execute(f"INSERT INTO {table} (n) VALUES (%s)", (n,))
                writes_ran += 1
                time.sleep(0.1)
        assert writes_ran == 5
        assert not applied, "the migration ran while the long transaction still held the table"
    finally:
        reader.close()
    migrating.join(10)
    assert applied == [[2]]
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(f"SELECT count(m) FROM {table}").fetchone() == (0,)
        conn.execute(f"DROP TABLE {table}, {table}_version")
