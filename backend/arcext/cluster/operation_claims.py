"""Long-running operations across nodes: a node's claim on an operation is a session-level advisory lock.

Each node holds the claims of the operations it runs as ``pg_try_advisory_lock(key)`` locks (the key a hash of the
operation's id) on one connection of its own (TCP keepalives on). A write takes its claim before it persists the
resource's transitional state and gives it back once the operation's record is terminal, so neither another
node's start-up nor its sweep can take a live operation. When a node's process dies, PostgreSQL ends its session
and every claim it held is free at once; every node looks every ``sweep`` seconds for InProgress operations
(and orphaned writes) whose claim is free, and takes one it has seen free for a whole ``sweep``: the bound
from a node's death to another node running its operations is about two sweeps.

A holder whose lock connection breaks (PostgreSQL restarted, a network blip) has lost its claims while it still
works: it reconnects and takes them again at its next check (every third of ``sweep``), before another node may
take them (a claim must be seen free for a whole ``sweep``). A holder cut off for longer (a partition) may have
its operation run by another node meanwhile, as a job whose lease ran out (docs/multinode.md).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

import psycopg

from .connect import Connection, dedicated

log = logging.getLogger(__name__)


def claim_key(op_id: str) -> int:
    """The advisory lock key of an operation: 63 bits of a hash of its id (never negative, so pg_locks' classid and
    objid give it back), apart from the leadership lock's and the migrations' small constants."""
    digest = hashlib.sha256(f"arcext-operation:{op_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


class PostgresOperationClaims:
    """OperationClaims (arcext.operations) on a dedicated connection's advisory locks."""

    def __init__(self, url: str, sweep: float, orphan_sweep: float) -> None:
        self.url = url
        self.sweep_interval: float | None = sweep
        self.orphan_interval: float | None = orphan_sweep
        self._lock = threading.RLock()
        self._conn: Connection | None = None
        self._held: set[str] = set()
        self._free_since: dict[str, tuple[float, float]] = {}  # op id: (first seen free, last seen) monotonic
        self._stop = threading.Event()
        self._checker = threading.Thread(target=self._check_loop, name="arcext-operation-claims", daemon=True)
        self._checker.start()
        #: claims lost with a broken connection that another node took before they could be taken again
        self.lost = 0

    # --- OperationClaims --------------------------------------------------------------------------------
    def claim(self, op_id: str) -> bool:
        with self._lock:
            if op_id in self._held:
                return False
            if not self._try(self._connection(), op_id):
                return False
            self._held.add(op_id)
            self._free_since.pop(op_id, None)
            return True

    def release(self, op_id: str) -> None:
        with self._lock:
            if op_id not in self._held:
                return
            self._held.discard(op_id)
            conn = self._conn
            if conn is None or conn.closed:
                return  # the session is gone, and the lock with it
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (claim_key(op_id),))
            except psycopg.Error as exc:
                log.warning("Operation claims' connection failed on release (%s)", type(exc).__name__)
                self._drop()  # the others are taken again at the next check

    def takeable(self, op_ids: list[str]) -> list[str]:
        """Those of ``op_ids`` this node does not hold and no session has held at two looks a sweep apart."""
        with self._lock:
            held_keys = self._held_keys(self._connection())
            now = time.monotonic()
            assert self.sweep_interval is not None
            out: list[str] = []
            for op_id in op_ids:
                if op_id in self._held or claim_key(op_id) in held_keys:
                    self._free_since.pop(op_id, None)
                    continue
                first, _ = self._free_since.get(op_id, (now, now))
                self._free_since[op_id] = (first, now)
                if now - first >= self.sweep_interval:
                    out.append(op_id)
            forget = now - 4 * self.sweep_interval  # operations no longer asked about (finished)
            for op_id in [o for o, (_, last) in self._free_since.items() if last < forget]:
                del self._free_since[op_id]
            return out

    def close(self) -> None:
        self._stop.set()
        if self._checker.is_alive() and self._checker is not threading.current_thread():
            self._checker.join(timeout=5)
        with self._lock:
            self._held.clear()
            self._drop()

    # --- the connection ----------------------------------------------------------------------------------
    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def backend_pid(self) -> int | None:
        """The lock connection's backend (tests end it to see the claims taken again)."""
        with self._lock:
            return self._conn.info.backend_pid if self._conn is not None and not self._conn.closed else None

    def _connection(self) -> Connection:
        """The lock connection; a new one takes again the claims the old one held."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = dedicated(self.url)  # keepalives at both ends: a vanished node's claims are free in about 11 s
        self._conn = conn
        for op_id in sorted(self._held):
            if not self._try(conn, op_id):
                self.lost += 1
                self._held.discard(op_id)
                log.error(
                    "Operation %s was taken by another node while this node's claims were lost with its connection;"
                    " both may be running it",
                    op_id,
                )
        return conn

    @staticmethod
    def _try(conn: Connection, op_id: str) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (claim_key(op_id),)).fetchone()
        return bool(row and row[0])

    @staticmethod
    def _held_keys(conn: Connection) -> set[int]:
        rows = conn.execute(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks WHERE locktype = 'advisory'"
            " AND objsubid = 1 AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
        return {int(r[0]) for r in rows}

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _check_loop(self) -> None:
        """While this node holds claims, check the lock connection every third of a sweep; a broken one is
        replaced at once and the claims it held are taken again."""
        assert self.sweep_interval is not None
        while not self._stop.wait(self.sweep_interval / 3):
            with self._lock:
                if not self._held:
                    continue
                try:
                    if self._conn is not None and not self._conn.closed:
                        self._conn.execute("SELECT 1")
                except psycopg.Error as exc:
                    log.warning("Operation claims' connection failed (%s); taking the claims again", type(exc).__name__)
                    self._drop()
                try:
                    self._connection()
                except psycopg.Error as exc:
                    log.warning("Operation claims' connection cannot be opened (%s)", type(exc).__name__)
