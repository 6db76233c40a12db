"""Which store a server (or a CLI command) opens: PostgreSQL when given a database URL, else the
embedded TinyDB store in the data directory."""

from __future__ import annotations

from pathlib import Path

from .base import Store
from .tinydb_store import TinyDBStore


def open_store(data_dir: Path, database_url: str | None = None, *, tokens_only: bool = False) -> Store:
    """The store for ``database_url`` (``postgresql://...``) or, without one, the embedded store in
    ``data_dir``. ``tokens_only``: for CLI token commands (the embedded store then skips loading
    machines; a database store opens only a connection or two)."""
    if database_url:
        from .postgres import PostgresStore  # psycopg loads only when a database is used

        return PostgresStore(database_url, max_connections=2 if tokens_only else 20)
    return TinyDBStore(data_dir, tokens_only=tokens_only)
