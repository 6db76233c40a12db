"""Dedicated connections (the leader's lock, the listener): TCP keepalives on, so a dead peer is noticed."""

from __future__ import annotations

from typing import Any

import psycopg

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
    )
