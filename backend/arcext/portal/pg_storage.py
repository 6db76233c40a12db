"""The portal's sessions and signing key on PostgreSQL: tables every node sharing the database reads.

A sign-in on one node is honoured by every node, and Sign out on any node ends the session everywhere at the
next request (each portal request looks its session up in the database: one indexed read). Times are the
database's (``now()``), so nodes whose clocks differ agree on when a session expires.

The cookie signing key is one row, sealed with the data key (``secret.key``, which every node must share anyway:
arcext.crypto): the first node to start writes a new one (INSERT ... ON CONFLICT DO NOTHING) and every node,
that one included, uses the row it then reads back, so nodes starting at once agree. The key is never printed or
logged, and a database dump alone does not reveal it.
"""

from __future__ import annotations

import logging
import secrets

from ..crypto import SecretBox
from ..store.postgres.db import Database
from .pg_schema import migrate_portal
from .sessions import PortalStorage, new_session_id, session_ref

log = logging.getLogger(__name__)

#: the field of the sealed document that holds the key
KEY_FIELD = "portalSigningKey"

#: a sign-in also sweeps (a bounded number of) expired sessions; rows another sign-in is sweeping are skipped
_START = """
WITH swept AS (
    DELETE FROM portal_sessions WHERE ref IN (
        SELECT ref FROM portal_sessions WHERE expires_at <= now() LIMIT 1000 FOR UPDATE SKIP LOCKED
    )
)
INSERT INTO portal_sessions (ref, expires_at) VALUES (%s, now() + %s * interval '1 second')
"""
_SWEEP = """
DELETE FROM portal_sessions WHERE ref IN (
    SELECT ref FROM portal_sessions WHERE expires_at <= now() FOR UPDATE SKIP LOCKED
)
"""


class DatabaseSessions:
    """The signed-in sessions in the ``portal_sessions`` table (the PostgreSQL store's PortalSessions)."""

    def __init__(self, db: Database, lifetime_s: float) -> None:
        self.db = db
        self.lifetime_s = lifetime_s

    def start(self) -> str:
        session_id = new_session_id()
        with self.db.connection() as conn:
            conn.execute(_START, (session_ref(session_id), self.lifetime_s))
        return session_id

    def alive(self, session_id: object) -> bool:
        if not isinstance(session_id, str) or not session_id:
            return False
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT 1 FROM portal_sessions WHERE ref = %s AND expires_at > now()", (session_ref(session_id),)
            ).fetchone()
        return row is not None

    def end(self, session_id: object) -> None:
        if not isinstance(session_id, str) or not session_id:
            return
        with self.db.connection() as conn:
            conn.execute("DELETE FROM portal_sessions WHERE ref = %s", (session_ref(session_id),))

    def sweep(self) -> int:
        """Delete the expired sessions; how many."""
        with self.db.connection() as conn:
            return conn.execute(_SWEEP).rowcount


def _opened(box: SecretBox, sealed: str) -> str | None:
    """The key in ``sealed``, or None when this node's data key cannot open it (or it holds no usable key)."""
    try:
        value = box.open(sealed).get(KEY_FIELD)
    except (RuntimeError, ValueError):
        return None
    return value if isinstance(value, str) and len(value) >= 32 else None


def database_signing_key(db: Database, box: SecretBox, attempts: int = 5) -> str:
    """The cookie signing key every node on ``db`` shares, written by the first node to ask (race-safe).

    A row this node's data key cannot open (a database restored without its ``secret.key``, or a node given
    another key than the others) is replaced by a new key, with a warning: the portal's users sign in again."""
    with db.connection() as conn:
        for _ in range(attempts):
            candidate = box.seal({KEY_FIELD: secrets.token_hex(32)})
            conn.execute("INSERT INTO portal_signing_key (sealed) VALUES (%s) ON CONFLICT DO NOTHING", (candidate,))
            row = conn.execute("SELECT sealed FROM portal_signing_key").fetchone()
            if row is None:  # deleted between the two statements (an operator rotating it): write one again
                continue
            key = _opened(box, str(row[0]))
            if key is not None:
                return key
            log.warning(
                "The portal's cookie signing key in the database was sealed with another secret.key; replacing it "
                "with a new one (portal users sign in again). Every node on one database needs the same "
                "secret.key: a node with another one cannot read what the others sealed (docs/deploy.md)."
            )
            conn.execute("DELETE FROM portal_signing_key WHERE sealed = %s", (row[0],))
    raise RuntimeError(
        "The portal's cookie signing key in the database keeps changing under this node: do the nodes on this "
        "database have different secret.key files? (docs/deploy.md)"
    )


def open_database_storage(db: Database, box: SecretBox, lifetime_s: float) -> PortalStorage:
    """The portal's tables on ``db`` (migrated first), its signing key, and its sessions (expired ones swept)."""
    with db.connection() as conn:
        applied = migrate_portal(conn)
    if applied:
        log.info("Portal tables migrated to version %d", applied[-1])
    sessions = DatabaseSessions(db, lifetime_s)
    sessions.sweep()
    return PortalStorage(database_signing_key(db, box), sessions)
