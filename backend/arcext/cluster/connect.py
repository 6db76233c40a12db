"""Dedicated connections (the leader's lock, the listener): TCP keepalives on at both ends, so a dead peer is noticed.

The client's keepalives tell this node that the database vanished; the server's (``tcp_keepalives_*``, set for
the session) end the session of a node whose host vanished without closing its socket, and with it the
advisory locks it held (the leadership), about 11 s later instead of after the system's default (hours).
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..store.postgres.db import with_server_keepalives

Connection = psycopg.Connection[tuple[Any, ...]]


def dedicated(url: str) -> Connection:
    """A connection of its own, outside the store's pool, in autocommit mode."""
    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=5,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
        application_name="arcext-cluster",
        options=with_server_keepalives(url),
    )
