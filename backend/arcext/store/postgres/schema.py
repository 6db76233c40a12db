"""The PostgreSQL store's schema: numbered migrations, applied at start in one transaction.

Every server node runs ``migrate`` when it opens the store. The transaction first takes a
transaction-level advisory lock (``pg_advisory_xact_lock``), so nodes starting at once apply each
migration exactly once: the second waits, then finds the ``schema_version`` rows the first wrote.
A migration is never edited once released: a change of schema is a new entry at the end of
``MIGRATIONS``.

Text keys are ``COLLATE "C"`` (byte order, which for UTF-8 is code-point order): listings then sort
exactly as Python sorts strings, which is the order the embedded store pages in.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import psycopg

log = logging.getLogger(__name__)

#: The advisory lock every node takes to migrate (any constant; "arcext" in ASCII).
MIGRATION_LOCK: Final = 0x617263657874

_V1 = """
CREATE TABLE machines (
    subscription text COLLATE "C" NOT NULL,  -- lower case, as the rest of the key
    resource_group text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    doc jsonb NOT NULL,                      -- {"machine": {...}, "extensions": {<lower name>: record}}
    PRIMARY KEY (subscription, resource_group, name)
);

CREATE TABLE operations (
    id text PRIMARY KEY,
    status text,
    end_time text,                           -- ISO 8601 (compares as text), NULL while running
    doc jsonb NOT NULL
);
CREATE INDEX operations_status ON operations (status);
CREATE INDEX operations_end_time ON operations (end_time) WHERE end_time IS NOT NULL;

CREATE TABLE tokens (
    seq bigint GENERATED ALWAYS AS IDENTITY,  -- listing order: first written first
    id text PRIMARY KEY,
    hash text NOT NULL UNIQUE,
    doc jsonb NOT NULL
);

CREATE TABLE extension_types (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    publisher text COLLATE "C" NOT NULL,     -- lower case, as type and version
    type text COLLATE "C" NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (publisher, type)
);

CREATE TABLE extension_versions (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    publisher text COLLATE "C" NOT NULL,
    type text COLLATE "C" NOT NULL,
    version text COLLATE "C" NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (publisher, type, version)
);

CREATE TABLE maintenance (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    kind text NOT NULL,                      -- the Store's maintenance "table": configurations, assignments
    key text COLLATE "C" NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE TABLE rollouts (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    id text PRIMARY KEY,
    plan jsonb NOT NULL,                     -- every batch's targets: large, written once
    state jsonb NOT NULL                     -- the rest, rewritten on every change
);

-- The activity log, one partition per UTC day (made on demand; pruning drops whole days).
CREATE TABLE events (
    day date NOT NULL,                       -- the UTC day of event_timestamp
    seq bigserial NOT NULL,                  -- order of writing within a day
    event_timestamp text NOT NULL,
    event_data_id text NOT NULL,
    subscription_id text,
    operation_id text,
    correlation_id text,
    caller text,
    resource_id text,
    doc jsonb NOT NULL
) PARTITION BY RANGE (day);
CREATE INDEX events_order ON events (day, seq);
CREATE INDEX events_time ON events (event_timestamp);
CREATE INDEX events_subscription ON events (subscription_id, day, seq);
CREATE INDEX events_operation ON events (operation_id);
CREATE INDEX events_correlation ON events (correlation_id);
CREATE INDEX events_caller ON events (caller);
CREATE INDEX events_resource ON events (resource_id);
CREATE INDEX events_data_id ON events (event_data_id);

-- One shared clock for every node (a manual clock that tests and --manual-clock move).
CREATE TABLE clock (
    id int PRIMARY KEY CHECK (id = 1),
    now timestamptz NOT NULL
);
"""

# The catalog's version: every statement that changes extension_types moves it on (a statement-level trigger),
# so a node may keep the types it read and know, from one number read along another query, whether they are
# still current (store/postgres/records.py CatalogTables).
_V2 = """
CREATE TABLE catalog_version (
    id int PRIMARY KEY CHECK (id = 1),
    v bigint NOT NULL
);
INSERT INTO catalog_version (id, v) VALUES (1, 1);
CREATE FUNCTION arcext_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_version SET v = v + 1 WHERE id = 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER extension_types_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON extension_types
    FOR EACH STATEMENT EXECUTE FUNCTION arcext_catalog_changed();
"""

# The job path's cost in the database (docs/multinode.md, "Where a job's cost goes"):
# - A machine's document (about 5 KB of JSON for three extensions) is a new value on every change of one of its
#   records. Above about 2 KB a row is compressed, with pglz by default: the largest share of the database's CPU
#   in the rollout benchmark. lz4 (where the server was built with it) costs a fraction of that. lz4 compresses a
#   little less, and a document in the middle of its job then no longer fitted the 2 KB a row is kept in: it went
#   to the TOAST table (another insert, another index, per write). STORAGE MAIN keeps it in the row (out of line
#   only when a row would not fit a page); the key's columns too, or they would be moved out of line first (any
#   value over 24 bytes, a subscription id, is). A fillfactor of 75 leaves room on a page for the next version of
#   its rows, so an update stays on its page (a HOT update: no new entry in the primary key).
# - An activity-log event (about 2 KB) is compressed too: lz4 as well (new partitions take the parent's setting;
#   the partitions there are now are set one by one). Its storage stays EXTENDED: compressed, the event fits the
#   row. Of its eight indexes four served no query: the store looked events up by day and order, subscription,
#   operation and timestamp only (arcext.activity, arcext.services; the API's other fields filtered the rows
#   those found), so the others (correlation, caller, resource, event data id) go. Migration 4 adds the two
#   the activity log's query by resource and by caller can use.
_V3 = """
DO $$
DECLARE
    part regclass;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE machines ALTER COLUMN doc SET COMPRESSION lz4;
        ALTER TABLE events ALTER COLUMN doc SET COMPRESSION lz4;
        FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'events'::regclass LOOP
            EXECUTE format('ALTER TABLE %s ALTER COLUMN doc SET COMPRESSION lz4', part);
        END LOOP;
    END IF;
END
$$;
ALTER TABLE machines ALTER COLUMN doc SET STORAGE MAIN, ALTER COLUMN subscription SET STORAGE MAIN,
    ALTER COLUMN resource_group SET STORAGE MAIN, ALTER COLUMN name SET STORAGE MAIN;
ALTER TABLE machines SET (fillfactor = 75);
DROP INDEX events_correlation, events_caller, events_resource, events_data_id;
"""

# The activity log's query (Store.query_events): a subscription's events narrowed to a resource and what is under
# it, or to a caller, both without case. The indexes of migration 1 on the raw columns (dropped by 3) could not
# serve those (case, prefix), so such a query read all the subscription's events of the days. These can: the
# prefix's range is compared in byte order (~>=~, ~<~), which text_pattern_ops serves (the column's collation
# is not "C").
_V4 = """
CREATE INDEX events_subscription_resource ON events (subscription_id, lower(resource_id) text_pattern_ops);
CREATE INDEX events_subscription_caller ON events (subscription_id, lower(caller));
"""

# Extension packages (arcext.hosts.pg_packages): every node attaches and reads the same ones. A package is its
# record (keyed publisher/type/version, lower case) and its zip, content-addressed, in chunks of a MiB (up to 512
# of them): a zip is compressed already, so its chunks are stored as they are (STORAGE EXTERNAL).
_V5 = """
CREATE TABLE packages (key text PRIMARY KEY, sha256 text NOT NULL, record jsonb NOT NULL);
CREATE INDEX packages_sha256 ON packages (sha256);
CREATE TABLE package_chunks (sha256 text NOT NULL, n integer NOT NULL, data bytea NOT NULL, PRIMARY KEY (sha256, n));
ALTER TABLE package_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
"""

#: (version, SQL); applied in order, each once.
MIGRATIONS: Final[list[tuple[int, str]]] = [(1, _V1), (2, _V2), (3, _V3), (4, _V4), (5, _V5)]

#: the versions whose change older releases work with unchanged (``apply_migrations``): storage settings, indexes,
#: new tables
KEEPS_OLDER: Final = frozenset({3, 4, 5})

LATEST: Final = MIGRATIONS[-1][0]


#: How long a migration waits for the locks of the tables it changes, per attempt. A migration that alters a table
#: needs it to itself, waits for every transaction that uses it (a long activity query, a ``pg_dump`` running), and
#: while it waits every other user of the table waits behind it: the running nodes' writes. So it gives up after
#: this long, lets them go on, and tries again ``MIGRATION_RETRY_SECONDS`` later (the starting node waits, saying
#: why), as many times as it takes.
MIGRATION_LOCK_TIMEOUT_MS = 2000
MIGRATION_RETRY_SECONDS = 5.0


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer arcext than this one."""


def migrate(conn: psycopg.Connection[tuple[object, ...]]) -> list[int]:
    """Bring the database to the latest schema; returns the versions this call applied.

    Safe when several nodes call it at once (see the module docstring). ``conn`` must be in
    autocommit mode (the migration is its own transaction)."""
    return apply_migrations(conn, MIGRATION_LOCK, "schema_version", MIGRATIONS, KEEPS_OLDER)


def apply_migrations(
    conn: psycopg.Connection[Any],
    lock: int,
    version_table: str,
    migrations: list[tuple[int, str]],
    keeps_older: frozenset[int] = frozenset(),
) -> list[int]:
    """Apply the numbered ``migrations`` not yet recorded in ``version_table``, in one transaction under the
    advisory lock ``lock``.

    ``keeps_older``: the versions whose change the code of the releases before it works with unchanged (a new
    table or index, a storage setting; not a renamed or retyped column). Each version is recorded with that mark,
    so a node of an older release (from the release that brought these marks on) still starts on a database a
    newer one migrated when every version it does not know is marked so: a rolling upgrade, node by node. A
    database with a newer version not marked is refused (SchemaTooNew).

    An attempt that waits for a table's lock longer than ``MIGRATION_LOCK_TIMEOUT_MS`` applies nothing and is made
    again ``MIGRATION_RETRY_SECONDS`` later, until one succeeds."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return _apply_once(conn, lock, version_table, migrations, keeps_older)
        except psycopg.errors.LockNotAvailable:
            log.warning(
                "A schema migration (%s) waited over %d ms for a table a transaction holds (a long query, a"
                " backup); it let the running nodes go on and tries again in %g s (attempt %d)",
                version_table,
                MIGRATION_LOCK_TIMEOUT_MS,
                MIGRATION_RETRY_SECONDS,
                attempt,
            )
            time.sleep(MIGRATION_RETRY_SECONDS)


def _apply_once(
    conn: psycopg.Connection[Any],
    lock: int,
    version_table: str,
    migrations: list[tuple[int, str]],
    keeps_older: frozenset[int],
) -> list[int]:
    """One attempt of ``apply_migrations``: LockNotAvailable when a table was held for longer than
    ``MIGRATION_LOCK_TIMEOUT_MS`` (nothing applied)."""
    latest = migrations[-1][0]
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))  # another node migrating: as long as it takes
        conn.execute(f"SET LOCAL lock_timeout = '{int(MIGRATION_LOCK_TIMEOUT_MS)}ms'")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {version_table} ("
            " version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # the mark came after the table: NULL for the versions recorded before it (not known to keep older code)
        conn.execute(f"ALTER TABLE {version_table} ADD COLUMN IF NOT EXISTS keeps_older boolean")
        row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {version_table}").fetchone()
        current = int(row[0]) if row else 0
        if current > latest:
            unknown = conn.execute(
                f"SELECT version, coalesce(keeps_older, false) FROM {version_table} WHERE version > %s"
                " ORDER BY version",
                (latest,),
            ).fetchall()
            breaking = [int(v) for v, keeps in unknown if not keeps]
            if breaking:
                raise SchemaTooNew(
                    f"the database's schema is version {current}; this arcext knows up to {latest}, and version "
                    f"{breaking[0]} changed it in a way this release cannot work with: run the newer arcext"
                )
            log.warning(
                "The database's %s is version %d, newer than this arcext's %d; the newer versions keep older "
                "releases working (a rolling upgrade): upgrade this node too",
                version_table,
                current,
                latest,
            )
            return []
        applied: list[int] = []
        for version, sql in migrations:
            if version <= current:
                continue
            conn.execute(sql.encode())  # several statements: no parameters, simple query protocol
            conn.execute(
                f"INSERT INTO {version_table} (version, keeps_older) VALUES (%s, %s)",
                (version, version in keeps_older),
            )
            applied.append(version)
        return applied
