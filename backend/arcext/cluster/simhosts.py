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
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import orjson
from psycopg.types.json import Jsonb

from ..hosts.base import ExtensionSpec, InstalledExtension
from ..hosts.simulated import SimulatedDriver, SimulatedFleet
from ..ids import MachineKey
from ..store.postgres.db import Connection, Database

T = TypeVar("T")

DIGEST_ROW: Final = "#digest-key"  # never a machine key (those hold two slashes)


def offered_key(key_lower: str) -> str:
    """The name under which a host's row is offered to this thread's next operation on it (``Database.offer_row``)."""
    return f"simhost:{key_lower}"


class HostChanged(Exception):
    """The host's row changed between an operation's read and its write (another node's operation on the
    same host): nothing was written; the operation runs again (``DatabaseDriver``)."""


class _HostLock:
    """``with fleet._lock(key)``: the thread lock and the host's row loaded; written on exit if it changed.

    An operation that read the row a moment ago (``_enter`` reads the host's faults with the whole row and its
    ``xmin``) works on that copy and writes it back only if nobody wrote the row meanwhile (``WHERE xmin =``):
    one statement and no transaction, instead of a locked read-and-write. When somebody did, the write raises
    HostChanged and the operation runs again on a locked row. Any other use locks the row (``FOR UPDATE``) in
    a transaction."""

    def __init__(self, fleet: DatabaseFleet, key_lower: str, thread_lock: threading.Lock) -> None:
        self._fleet = fleet
        self._key = key_lower
        self._thread_lock = thread_lock
        self._transaction: AbstractContextManager[Connection] | None = None
        self._conn: Connection | None = None
        self._loaded = b"null"  # the host's row as read, to write it back only when it changed
        self._xmin: str | None = None  # the row's version as read, when written optimistically
        self._optimistic = False

    def __enter__(self) -> _HostLock:
        self._thread_lock.acquire()
        try:
            seen = self._fleet._take_seen(self._key)
            if seen is not None:
                doc, self._xmin = seen
                self._optimistic = True
            else:
                self._transaction = self._fleet.db.transaction()
                self._conn = self._transaction.__enter__()
                row = self._conn.execute("SELECT doc FROM simhosts WHERE key = %s FOR UPDATE", (self._key,)).fetchone()
                doc = row[0] if row is not None else None
            if doc is not None:
                self._fleet._hosts[self._key] = doc
                self._loaded = orjson.dumps(doc)
            else:
                self._fleet._hosts.pop(self._key, None)
        except BaseException:
            self._close(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        host = self._fleet._hosts.get(self._key)
        try:
            if host is None or orjson.dumps(host) == self._loaded:
                return
            if self._conn is not None:
                self._conn.execute(
                    "INSERT INTO simhosts (key, doc) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET doc = excluded.doc",
                    (self._key, Jsonb(host)),
                )
                return
            # sent with other threads' writes (Database.grouped): one commit for them all
            if self._xmin is None:  # no row when read: made here unless another node made it first
                written = self._fleet.db.grouped(
                    "INSERT INTO simhosts (key, doc) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING RETURNING 1",
                    (self._key, Jsonb(host)),
                    order=("simhosts", self._key),
                )
            else:
                written = self._fleet.db.grouped(
                    "UPDATE simhosts SET doc = %s WHERE key = %s AND xmin = %s::xid RETURNING 1",
                    (Jsonb(host), self._key, self._xmin),
                    order=("simhosts", self._key),
                )
            if len(written) != 1:
                self._fleet._hosts.pop(self._key, None)  # what this operation made of a stale copy
                raise HostChanged(self._key)
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
        self._seen = threading.local()  # (key, doc, xmin) an operation read before its latency, for its write
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

    def faults_of(self, key_lower: str, for_write: bool = False) -> dict[str, Any]:
        """The host's faults as stored now (a read: no lock, no write). ``for_write``: the row is kept for
        this thread's next lock of the host, which then writes only if the row is still as read; a row offered
        for the host (``offered_key``: the job's claim read it) stands for the read."""
        offered = self.db.take_row(offered_key(key_lower)) if for_write else None
        row: tuple[Any, ...] | None
        if offered is not None:  # the row as the job's claim read it a moment ago (ClusterNode._claim)
            doc = orjson.loads(offered.doc)
            row = (doc, offered.xmin) if doc is not None else None
        else:
            with self.db.connection() as conn:
                row = conn.execute("SELECT doc, xmin::text FROM simhosts WHERE key = %s", (key_lower,)).fetchone()
        if for_write:
            self._seen.row = (key_lower, row[0] if row else None, row[1] if row else None)
        return dict(row[0].get("faults") or {}) if row else {}

    def _take_seen(self, key_lower: str) -> tuple[dict[str, Any] | None, str | None] | None:
        row: tuple[str, dict[str, Any] | None, str | None] | None = getattr(self._seen, "row", None)
        self._seen.row = None
        if row is None or row[0] != key_lower:
            return None
        return row[1], row[2]

    def clear(self) -> None:
        with self._guard, self.db.connection() as conn:
            conn.execute("DELETE FROM simhosts WHERE key <> %s", (DIGEST_ROW,))
            self._hosts.clear()


class DatabaseDriver(SimulatedDriver):
    """The simulated driver on a DatabaseFleet: latency and reachability read with the host's row, which the
    operation then writes back if nobody changed it meanwhile; if somebody did, the operation runs again with
    the row locked (HostChanged)."""

    fleet: DatabaseFleet

    def __init__(self, fleet: DatabaseFleet, key: MachineKey) -> None:
        super().__init__(fleet, key)
        self._optimistic = True

    def _faults(self) -> dict[str, Any]:
        return self.fleet.faults_of(self.key.lower, for_write=self._optimistic)

    def _again(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except HostChanged:
            self._commands, self._changed = [], set()
            self._optimistic = False  # the second time on a locked row: it cannot be overtaken again
            try:
                return operation()
            finally:
                self._optimistic = True
        finally:
            self.fleet._take_seen(self.key.lower)  # a row read by an operation that failed before its lock

    def installed(self, name: str) -> InstalledExtension | None:
        return self._again(lambda: SimulatedDriver.installed(self, name))

    def install(self, spec: ExtensionSpec, version: str) -> None:
        self._again(lambda: SimulatedDriver.install(self, spec, version))

    def upgrade(self, spec: ExtensionSpec, from_version: str, to_version: str) -> None:
        self._again(lambda: SimulatedDriver.upgrade(self, spec, from_version, to_version))

    def rollback(self, spec: ExtensionSpec, failed_version: str, good_version: str) -> None:
        self._again(lambda: SimulatedDriver.rollback(self, spec, failed_version, good_version))

    def remove(self, name: str) -> None:
        self._again(lambda: SimulatedDriver.remove(self, name))
