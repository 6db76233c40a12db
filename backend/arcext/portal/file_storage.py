"""The portal's sessions and signing key on the embedded store: files in the data directory.

Signed-in sessions: ``<data-dir>/portal-sessions.json`` (session reference -> expiry, mode 0600, replaced
atomically), held in memory by the one process that serves the directory, so they survive a restart.
Signing key: ``<data-dir>/portal-secret.key`` (mode 0600), generated at first start.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from .sessions import new_session_id, session_ref

log = logging.getLogger(__name__)

SESSIONS_FILE = "portal-sessions.json"
SECRET_FILE = "portal-secret.key"


def load_secret_key(data_dir: Path) -> str:
    """Read the portal's signing key, creating it (mode 0600) on first start."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            log.warning("%s was readable by others; restricting it to mode 0600", path)
            path.chmod(0o600)
        key = path.read_text(encoding="ascii").strip()
        if len(key) >= 32:
            return key
        log.warning("%s is too short to be a signing key; writing a new one", path)
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


class FileSessions:
    """The signed-in sessions in ``<data-dir>/portal-sessions.json`` (the embedded store's PortalSessions)."""

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
        session_id = new_session_id()
        with self._lock:
            self._live[session_ref(session_id)] = time.time() + self.lifetime_s
            self._save()
        return session_id

    def alive(self, session_id: object) -> bool:
        if not isinstance(session_id, str) or not session_id:
            return False
        with self._lock:
            expires = self._live.get(session_ref(session_id))
        return expires is not None and expires > time.time()

    def end(self, session_id: object) -> None:
        if not isinstance(session_id, str):
            return
        with self._lock:
            if self._live.pop(session_ref(session_id), None) is not None:
                self._save()
