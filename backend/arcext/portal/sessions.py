"""Server-side portal sessions: which signed session cookies are still signed in.

The session cookie is signed, so the server cannot change a copy a browser (or a thief) keeps: without a record
here, a cookie replayed after Sign out would read and write until it expired. Each sign-in gets a random session
id; only its SHA-256 and expiry are kept, in ``<data-dir>/portal-sessions.json`` (mode 0600, replaced
atomically), so sessions survive a restart and Sign out ends one for good.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from pathlib import Path

SESSIONS_FILE = "portal-sessions.json"


def _ref(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class PortalSessions:
    def __init__(self, data_dir: Path, lifetime_s: float) -> None:
        self.path = data_dir / SESSIONS_FILE
        self.lifetime_s = lifetime_s
        self._lock = threading.Lock()
        self._live: dict[str, float] = self._load()

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))}

    def _save(self) -> None:
        now = time.time()
        self._live = {k: v for k, v in self._live.items() if v > now}
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self._live, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def start(self) -> str:
        """A new signed-in session; returns its id (for the signed cookie only)."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._live[_ref(session_id)] = time.time() + self.lifetime_s
            self._save()
        return session_id

    def alive(self, session_id: object) -> bool:
        if not isinstance(session_id, str) or not session_id:
            return False
        with self._lock:
            expires = self._live.get(_ref(session_id))
        return expires is not None and expires > time.time()

    def end(self, session_id: object) -> None:
        if not isinstance(session_id, str):
            return
        with self._lock:
            if self._live.pop(_ref(session_id), None) is not None:
                self._save()
