"""The webhook tables on PostgreSQL, migrated apart from the store's own schema and the cluster's.

They have a version table of their own (``webhook_schema_version``) and an advisory lock of their own; like
the store's, a released entry is never edited: a change is a new entry at the end of ``MIGRATIONS``.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

from ..store.postgres.schema import apply_migrations

#: the advisory lock nodes take to migrate these tables ("arcwhm" in ASCII)
WEBHOOK_MIGRATION_LOCK: Final = 0x61726377686D

_V1 = """
-- the registry: one row per webhook; secret is sealed with the key file every node shares (never the secret)
CREATE TABLE webhook_hooks (
    name text COLLATE "C" PRIMARY KEY,
    uid text NOT NULL UNIQUE,            -- this incarnation: a webhook deleted and made again is another one
    url text NOT NULL,
    events jsonb NOT NULL,
    secret text NOT NULL,
    created_at text NOT NULL,            -- the clock's ISO stamp: the webhook hears of events from then on
    disabled boolean NOT NULL DEFAULT false,
    disabled_reason text,
    before jsonb NOT NULL DEFAULT '[]'   -- ids of events stamped with created_at that were there before it
);

-- the outbox: one message per event and webhook (the CloudEvents body written once), and its delivery
CREATE TABLE webhook_messages (
    seq bigserial PRIMARY KEY,           -- the delivery order
    hook_uid text NOT NULL,
    id text NOT NULL,                    -- the CloudEvent id (webhook-id)
    type text NOT NULL,
    subject text NOT NULL,
    time text NOT NULL,
    body text NOT NULL,
    created double precision NOT NULL,   -- wall clock, seconds since the epoch
    state text NOT NULL DEFAULT 'Pending',
    attempts int NOT NULL DEFAULT 0,
    next_at double precision NOT NULL DEFAULT 0,
    last_status int,
    last_error text,
    last_at double precision,
    delivered_at double precision,
    UNIQUE (hook_uid, id)                -- every node may put the same event in: the first one counts
);
CREATE INDEX webhook_messages_pending ON webhook_messages (hook_uid, seq) WHERE state = 'Pending';
CREATE INDEX webhook_messages_by_hook ON webhook_messages (hook_uid, seq);

-- the newest activity-log timestamp the outbox took in (one row; a reconcile at start looks back from it)
CREATE TABLE webhook_state (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    watermark text NOT NULL
);

-- the state each rollout's events last announced (a rollout event that announces nothing new is left out)
CREATE TABLE webhook_rollouts (
    id text COLLATE "C" PRIMARY KEY,
    state text NOT NULL
);
"""

MIGRATIONS: Final[list[tuple[int, str]]] = [(1, _V1)]

#: every table above (a test database's reset empties them)
TABLES: Final = ("webhook_hooks", "webhook_messages", "webhook_state", "webhook_rollouts")


def migrate_webhooks(conn: psycopg.Connection[Any]) -> list[int]:
    """Create or update the webhook tables (safe when several nodes start at once); ``conn`` in autocommit."""
    return apply_migrations(conn, WEBHOOK_MIGRATION_LOCK, "webhook_schema_version", MIGRATIONS)
