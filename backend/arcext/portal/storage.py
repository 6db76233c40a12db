"""Which storage the portal's sessions and signing key use: the store the server opened decides.

On PostgreSQL, the database's tables (``pg_storage``: every node shares the sessions and the signing key, so the
portal needs no session affinity); on the embedded store, files in the data directory (``file_storage``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..crypto import SecretBox
from ..store.base import Store
from ..store.tinydb_store import TinyDBStore
from .file_storage import FileSessions, load_secret_key
from .sessions import PortalStorage

if TYPE_CHECKING:
    from ..store.postgres.db import Database


def _database(store: Store) -> Database | None:
    if isinstance(store, TinyDBStore):
        return None
    from ..store.postgres.store import PostgresStore  # the store's own module: loaded already when it is one

    return store.db if isinstance(store, PostgresStore) else None


def open_portal_storage(store: Store, box: SecretBox, data_dir: Path, lifetime_s: float) -> PortalStorage:
    """The portal's storage beside ``store`` (``box``: the data key, ``lifetime_s``: how long a session lasts)."""
    database = _database(store)
    if database is None:
        return PortalStorage(load_secret_key(data_dir), FileSessions(data_dir, lifetime_s))
    from .pg_storage import open_database_storage  # psycopg loads only when a database is used

    return open_database_storage(database, box, lifetime_s)
