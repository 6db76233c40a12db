"""Server-side portal sessions: which signed session cookies are still signed in, and the key that signs them.

The session cookie is signed, so the server cannot change a copy a browser (or a thief) keeps: without a record
on the server, a cookie replayed after Sign out would read and write until it expired. Each sign-in gets a random
session id; only its SHA-256 (:func:`session_ref`) and expiry are kept, so Sign out ends a session for good.

Where the records and the signing key live depends on the store the server opened (``storage.open_portal_storage``):

* the embedded store: ``<data-dir>/portal-sessions.json`` and ``<data-dir>/portal-secret.key``
  (``file_storage``), for the one process that serves that directory;
* PostgreSQL: tables in the database (``pg_storage``), so every node sharing the database honours a sign-in made
  on any of them, and Sign out on any node ends the session on all of them at their next request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Protocol


def session_ref(session_id: str) -> str:
    """What the server keeps of a session id: its SHA-256, hex (the id itself is only in the signed cookie)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


class PortalSessions(Protocol):
    """The signed-in sessions, as the portal uses them (one implementation per store)."""

    def start(self) -> str:
        """A new signed-in session; returns its id (for the signed cookie only)."""
        ...

    def alive(self, session_id: object) -> bool:
        """Whether ``session_id`` (whatever the cookie held) names a session signed in and not expired."""
        ...

    def end(self, session_id: object) -> None:
        """Sign the session out (nothing happens for an unknown or malformed id)."""
        ...


@dataclass(frozen=True)
class PortalStorage:
    """What the portal keeps on the server: the key that signs its cookies, and the signed-in sessions."""

    signing_key: str
    sessions: PortalSessions
