"""Which storage the portal's sessions and signing key use: the database the nodes share, if the server has one.

On PostgreSQL, the database's tables (``pg_storage``: every node shares the sessions and the signing key, so the
portal needs no session affinity); on the embedded store, files in the data directory (``file_storage``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..crypto import SecretBox
from .file_storage import FileSessions, load_secret_key
from .sessions import PortalStorage

if TYPE_CHECKING:
    from ..store.postgres.db import Database


def open_portal_storage(database: Database | None, box: SecretBox, data_dir: Path, lifetime_s: float) -> PortalStorage:
    """The portal's storage: in ``database`` (the one the nodes share, ``Services.shared_db``), else in ``data_dir``
    (``box``: the data key, ``lifetime_s``: how long a session lasts)."""
    if database is None:
        return PortalStorage(load_secret_key(data_dir), FileSessions(data_dir, lifetime_s))
    from .pg_storage import open_database_storage  # psycopg loads only when a database is used

    return open_database_storage(database, box, lifetime_s)
