"""Dedicated connections (the leader's lock, the listener): TCP keepalives on at both ends, so a dead peer is noticed.

The client's keepalives tell this node that the database vanished; the server's (``tcp_keepalives_*``, set for
the session) end the session of a node whose host vanished without closing its socket, and with it the
advisory locks it held (the leadership), about 11 s later instead of after the system's default (hours).
"""

from __future__ import annotations

from ..store.postgres import db
from ..store.postgres.db import Connection

__all__ = ["Connection", "dedicated"]


def dedicated(url: str) -> Connection:
    """A connection of its own, outside the store's pool, in autocommit mode."""
    return db.dedicated(url, "arcext-cluster")
