"""The portal's tables on PostgreSQL, migrated apart from the store's own schema, the cluster's and the webhooks'.

They have a version table of their own (``portal_schema_version``) and an advisory lock of their own, applied
when the portal's storage is opened on a database (every node does, so nodes starting at once are safe); like the
store's, a released entry is never edited: a change is a new entry at the end of ``MIGRATIONS``.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

from ..store.postgres.schema import apply_migrations

#: the advisory lock nodes take to migrate these tables ("arcprt" in ASCII)
PORTAL_MIGRATION_LOCK: Final = 0x617263707274

_V1 = """
-- the portal's signed-in sessions, which every node honours: only the SHA-256 of a session id (the id itself is
-- in the signed cookie alone) and when the session ends; Sign out deletes the row, expired rows are swept
CREATE TABLE portal_sessions (
    ref text COLLATE "C" PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX portal_sessions_expiry ON portal_sessions (expires_at);

-- the key that signs the portal's cookies (one row), sealed with secret.key (the data key every node shares);
-- the first node to start writes it, the others read it
CREATE TABLE portal_signing_key (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    sealed text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

MIGRATIONS: Final[list[tuple[int, str]]] = [(1, _V1)]

#: versions older releases work with unchanged (new tables they do not read): apply_migrations
KEEPS_OLDER: Final = frozenset({1})

#: every table above (what emptying a database for reuse, as the tests do, must also empty)
TABLES: Final = ("portal_sessions", "portal_signing_key")


def migrate_portal(conn: psycopg.Connection[Any]) -> list[int]:
    """Create or update the portal's tables (safe when several nodes start at once); ``conn`` in autocommit."""
    return apply_migrations(conn, PORTAL_MIGRATION_LOCK, "portal_schema_version", MIGRATIONS, KEEPS_OLDER)
