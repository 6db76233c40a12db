"""Simulated hosts (``--simulate``) every node of a cluster drives: their state in the ``simhosts`` table.

The embedded fleet (arcext.hosts.simulated) keeps hosts in memory and a log file of one process. Nodes
sharing a database each run jobs on any host, so here every host operation runs in a transaction that
locks the host's row (``SELECT ... FOR UPDATE``), works on the fleet's in-memory model of it, and writes it
back when it changed (a read such as ``installed`` writes nothing).
The fleet's HMAC key for protected-settings digests is a row as well, so digests agree across nodes.
"""

from __future__ import annotations

import secrets
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import orjson
from psycopg.types.json import Jsonb

from ..hosts.simulated import SimulatedDriver, SimulatedFleet
from ..ids import MachineKey
from ..store.postgres.db import Connection, Database

DIGEST_ROW: Final = "#digest-key"  # never a machine key (those hold two slashes)


class _HostLock:
    """``with fleet._lock(key)``: the thread lock, then the host's row locked and loaded; written on exit."""

    def __init__(self, fleet: DatabaseFleet, key_lower: str, thread_lock: threading.Lock) -> None:
        self._fleet = fleet
        self._key = key_lower
        self._thread_lock = thread_lock
        self._transaction: AbstractContextManager[Connection] | None = None
        self._conn: Connection | None = None
        self._loaded = b"null"  # the host's row as read, to write it back only when it changed

    def __enter__(self) -> _HostLock:
        self._thread_lock.acquire()
        try:
            self._transaction = self._fleet.db.transaction()
            self._conn = self._transaction.__enter__()
            row = self._conn.execute("SELECT doc FROM simhosts WHERE key = %s FOR UPDATE", (self._key,)).fetchone()
            if row is not None:
                self._fleet._hosts[self._key] = row[0]
                self._loaded = orjson.dumps(row[0])
            else:
                self._fleet._hosts.pop(self._key, None)
        except BaseException:
            self._close(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        host = self._fleet._hosts.get(self._key)
        try:
            if host is not None and self._conn is not None and orjson.dumps(host) != self._loaded:
                self._conn.execute(
                    "INSERT INTO simhosts (key, doc) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET doc = excluded.doc",
                    (self._key, Jsonb(host)),
                )
        finally:
            self._close(None, None, None)  # the host's change stands even when the operation raises

    def _close(self, kind: Any, exc: Any, tb: Any) -> None:
        try:
            if self._transaction is not None:
                self._transaction.__exit__(kind, exc, tb)
        finally:
            self._transaction = None
            self._conn = None
            self._thread_lock.release()


class DatabaseFleet(SimulatedFleet):
    def __init__(
        self, db: Database, directory: Path, base_latency_ms: float = 0.0, operation_timeout_s: float = 600.0
    ) -> None:
        self.db = db
        super().__init__(directory, base_latency_ms, operation_timeout_s)
        self._digest_key = self._shared_digest_key()

    def _shared_digest_key(self) -> bytes:
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO simhosts (key, doc) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                (DIGEST_ROW, Jsonb({"key": secrets.token_hex(32)})),
            )
            row = conn.execute("SELECT doc FROM simhosts WHERE key = %s", (DIGEST_ROW,)).fetchone()
        assert row is not None
        return bytes.fromhex(str(row[0]["key"]))

    def _load(self) -> None:
        """Nothing to load: every operation reads its host's row."""

    def _lock(self, key_lower: str) -> _HostLock:  # type: ignore[override]
        return _HostLock(self, key_lower, super()._lock(key_lower))

    def _save(
        self, key_lower: str, changed: set[str] | None = None, commands: list[dict[str, Any]] | None = None
    ) -> None:
        """Written when the host's lock is left (``_HostLock.__exit__``)."""

    def driver(self, key: MachineKey) -> SimulatedDriver:
        return DatabaseDriver(self, key)

    def faults_of(self, key_lower: str) -> dict[str, Any]:
        """The host's faults as stored now (a read: no lock, no write)."""
        with self.db.connection() as conn:
            row = conn.execute("SELECT doc -> 'faults' FROM simhosts WHERE key = %s", (key_lower,)).fetchone()
        return dict(row[0] or {}) if row else {}

    def clear(self) -> None:
        with self._guard, self.db.connection() as conn:
            conn.execute("DELETE FROM simhosts WHERE key <> %s", (DIGEST_ROW,))
            self._hosts.clear()


class DatabaseDriver(SimulatedDriver):
    """The simulated driver on a DatabaseFleet: latency and reachability read with one query."""

    fleet: DatabaseFleet

    def _faults(self) -> dict[str, Any]:
        return self.fleet.faults_of(self.key.lower)
