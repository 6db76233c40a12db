"""The tables the nodes of a cluster coordinate through, migrated apart from the store's own schema.

They have a version table of their own (``cluster_schema_version``) and an advisory lock of their own,
so the store's migrations and these never wait for each other; like the store's, a released entry is
never edited: a change is a new entry at the end of ``MIGRATIONS``.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

from ..store.postgres.schema import apply_migrations

#: the advisory lock nodes take to migrate these tables ("arcclu" in ASCII)
CLUSTER_MIGRATION_LOCK: Final = 0x617263636C75

_V1 = """
-- upgrade jobs the leader dispatched and any node may claim (claimed_by/lease_until: who runs it, until when)
CREATE TABLE engine_jobs (
    id bigserial PRIMARY KEY,
    subscription text NOT NULL,
    resource_group text NOT NULL,
    name text NOT NULL,
    ext text NOT NULL,
    resume boolean NOT NULL DEFAULT false,
    template jsonb,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    claimed_by text,
    lease_until timestamptz,
    claims int NOT NULL DEFAULT 0
);
CREATE INDEX engine_jobs_claimable ON engine_jobs (lease_until NULLS FIRST, id);

-- each job's end, for the leader's bookkeeping (Engine._on_result)
CREATE TABLE engine_results (
    id bigserial PRIMARY KEY,
    node text NOT NULL,
    result jsonb NOT NULL
);

-- engine calls a follower forwards to the leader
CREATE TABLE engine_calls (
    id bigserial PRIMARY KEY,
    method text NOT NULL,
    args jsonb NOT NULL,
    taken_by int,                            -- the leader's lock connection (pg_backend_pid) that took it
    result jsonb,
    error jsonb,
    done boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX engine_calls_waiting ON engine_calls (id) WHERE taken_by IS NULL;

-- simulated hosts (arcext serve --simulate) every node drives
CREATE TABLE simhosts (
    key text COLLATE "C" PRIMARY KEY,
    doc jsonb NOT NULL
);
"""

#: one queued or running job per extension: a second enqueue of the same target (a batch retried after a
#: commit whose answer was lost, a deposed leader still dispatching) finds the first and is dropped
_V2 = """
CREATE UNIQUE INDEX engine_jobs_target ON engine_jobs (subscription, resource_group, name, ext);
"""

#: the job path's churn (docs/multinode.md, "Where a job's cost goes"): ``engine_jobs_claimable`` served no query (the
#: claim scans the primary key in id order) and, indexing ``lease_until``, made every claim and lease renewal a
#: non-HOT update (a new entry in each index); with it gone and room left on each page (fillfactor 70) they stay on
#: their page. A simulated host's document (about 2.4 KB, rewritten by every host operation) is compressed with lz4
#: where the server has it, not pglz, and its rows get room on their page too.
_V3 = """
DROP INDEX engine_jobs_claimable;
ALTER TABLE engine_jobs SET (fillfactor = 70);
ALTER TABLE simhosts SET (fillfactor = 70);
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE simhosts ALTER COLUMN doc SET COMPRESSION lz4;
    END IF;
END
$$;
"""

MIGRATIONS: Final[list[tuple[int, str]]] = [(1, _V1), (2, _V2), (3, _V3)]

#: versions older releases work with unchanged (storage settings, an index they never used): apply_migrations
KEEPS_OLDER: Final = frozenset({3})


def migrate_cluster(conn: psycopg.Connection[Any]) -> list[int]:
    """Create or update the cluster's tables (safe when several nodes start at once); ``conn`` in autocommit."""
    return apply_migrations(conn, CLUSTER_MIGRATION_LOCK, "cluster_schema_version", MIGRATIONS, KEEPS_OLDER)
