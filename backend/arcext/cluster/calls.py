"""Engine calls a follower forwards to the leader, through the ``engine_calls`` table.

The caller inserts a row and ``NOTIFY arcext_calls``; the leader takes every waiting row (``taken_by`` = its
leadership connection's backend pid), runs each on a small bounded pool of workers, writes the answer in
the row and ``NOTIFY arcext_call_done`` with the row's id. The caller sleeps until that notification (its
node's listener hands it over, ``on_notify``) and reads the answer once. Notifications can be lost (the
listener reconnecting), so the caller also looks at its row every ``call_poll`` seconds; that look is also
when it checks that the leader which took the call still leads (``pg_locks``).

The leader sweeps rows older than ``call_retention`` (answered calls whose caller died before reading
them, calls of a leader that died, calls nobody took) every ``call_sweep`` seconds, and never takes a call
older than ``leader_wait`` plus a margin: its caller has given up on it (503) or died.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from .. import errors
from ..heartbeat import Heartbeat
from ..store.postgres.db import Database
from ..upgrades.workers import WorkerPool
from .leader import leader_backend
from .settings import ClusterSettings
from .wire import decode, encode, error_from_json, error_to_json

log = logging.getLogger(__name__)

CALLS: Final = "arcext_calls"
CALL_DONE: Final = "arcext_call_done"

#: a call still untaken this long after its caller's ``leader_wait`` is not taken any more (its caller gave up)
STALE_MARGIN: Final = 2.0


class ForwardedCalls:
    """Both ends of the forwarded calls of one node: ``call`` (a follower's side) and the serving loop that
    runs while ``leader_pid()`` names this node's leadership connection (the leader's side)."""

    def __init__(
        self,
        db: Database,
        settings: ClusterSettings,
        execute: Callable[[str, list[Any]], Any],
        leader_pid: Callable[[], int | None],
    ) -> None:
        self.db = db
        self.settings = settings
        self._execute = execute
        self._leader_pid = leader_pid  # this node's leadership connection while it leads and is ready, else None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._waiting: dict[int, threading.Event] = {}
        self._waiting_lock = threading.Lock()
        self._pool = WorkerPool(max(1, settings.call_workers), "arcext-call")
        self._busy = 0  # calls taken and not answered yet: at most call_workers (the rest stay untaken)
        self._busy_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.heartbeat = Heartbeat("forwarded engine calls", min(1.0, settings.call_sweep))  # the serving loop's
        self.served = 0  # calls this node answered as the leader
        self.looks = 0  # looks at a call's row by its caller (a figure for the tests)
        self.swept = 0  # rows the sweep deleted

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve_loop, name="arcext-cluster-calls", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(cancel_pending=True)  # taken and not started: their callers get 503 (leader gone)

    def wake(self) -> None:
        """Look for waiting calls now (a new leader; the listener reconnected)."""
        self._wake.set()
        with self._waiting_lock:
            for done in self._waiting.values():
                done.set()  # answers announced while nobody listened: their callers look once

    def on_notify(self, channel: str, payload: str) -> None:
        if channel == CALLS:
            self._wake.set()
        elif channel == CALL_DONE:
            with self._waiting_lock:
                done = self._waiting.get(int(payload or 0))
            if done is not None:
                done.set()

    # --- the leader's side -----------------------------------------------------------------------
    def _serve_loop(self) -> None:
        swept_at = 0.0
        while not self._stop.is_set():
            self.heartbeat.beat()
            self._wake.wait(min(1.0, self.settings.call_sweep))
            self._wake.clear()
            pid = self._leader_pid()
            if pid is None:
                continue
            with self._busy_lock:
                free = max(1, self.settings.call_workers) - self._busy
            try:
                if time.monotonic() - swept_at >= self.settings.call_sweep:
                    swept_at = time.monotonic()
                    self.sweep()
                # only as many as there are free workers: a call taken waits for no one's slow call, and one left
                # untaken gets its 503 after leader_wait (the caller retries) instead of queueing here unseen
                rows = self._take(pid, free) if free > 0 else []
            except psycopg.Error as exc:
                log.warning("Reading engine calls failed (%s)", type(exc).__name__)
                continue
            for call_id, method, args in sorted(rows, key=lambda r: int(r[0])):
                with self._busy_lock:
                    self._busy += 1
                try:
                    self._pool.submit(self._serve, int(call_id), str(method), args)
                except RuntimeError:  # stopping: the caller sees this leader go and answers 503
                    self.heartbeat.rest()
                    return
        self.heartbeat.rest()

    def _take(self, pid: int, limit: int) -> list[tuple[Any, ...]]:
        with self.db.connection() as conn:
            return conn.execute(
                "UPDATE engine_calls SET taken_by = %s WHERE id IN (SELECT id FROM engine_calls"
                " WHERE taken_by IS NULL AND created_at > now() - make_interval(secs => %s)"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, method, args",
                (pid, self.settings.leader_wait + STALE_MARGIN, limit),
            ).fetchall()

    def sweep(self) -> int:
        """Delete the rows older than ``call_retention``: no caller waits for them any more."""
        with self.db.connection() as conn:
            gone = conn.execute(
                "DELETE FROM engine_calls WHERE created_at < now() - make_interval(secs => %s)",
                (self.settings.call_retention,),
            ).rowcount
        if gone:
            log.info("Swept %d engine calls no caller waits for", gone)
            self.swept += gone
        return int(gone)

    def _serve(self, call_id: int, method: str, args: Any) -> None:
        try:
            self._answer(call_id, method, args)
        finally:
            with self._busy_lock:
                self._busy -= 1
            self._wake.set()  # a worker is free: take the next waiting call

    def _answer(self, call_id: int, method: str, args: Any) -> None:
        result: Any = None
        error: dict[str, Any] | None = None
        try:
            result = self._execute(method, decode(args))
        except errors.ArmError as exc:
            error = error_to_json(exc)
        except Exception as exc:
            log.exception("Engine call %s failed", method)
            error = error_to_json(exc)
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "UPDATE engine_calls SET done = true, result = %s, error = %s WHERE id = %s",
                    (Jsonb(encode(result)), Jsonb(error) if error else None, call_id),
                )
                conn.execute("SELECT pg_notify(%s, %s)", (CALL_DONE, str(call_id)))
            self.served += 1
        except psycopg.Error:
            log.exception("Could not answer engine call %s", method)

    # --- the caller's side -----------------------------------------------------------------------
    def call(self, method: str, args: list[Any]) -> Any:
        """Run an engine method on the leader and return its result (its ArmError raised here).

        503 ServiceUnavailable (Retry-After) when no leader takes the call within ``leader_wait``
        seconds, or when the leader that took it goes away (or takes longer than ``call_timeout``)."""
        unavailable = errors.ArmError(
            503,
            "ServiceUnavailable",
            "No node leads the upgrade engine at the moment; try again shortly.",
            headers={"Retry-After": str(max(1, round(self.settings.leader_wait)))},
        )
        done = threading.Event()
        call_id = -1
        try:
            with self.db.transaction() as conn:
                row = conn.execute(
                    "INSERT INTO engine_calls (method, args) VALUES (%s, %s) RETURNING id",
                    (method, Jsonb(encode(args))),
                ).fetchone()
                assert row is not None
                call_id = int(row[0])
                with self._waiting_lock:  # before the commit: the answer's notification cannot come first
                    self._waiting[call_id] = done
                conn.execute("SELECT pg_notify(%s, '')", (CALLS,))
            return self._await(call_id, done, unavailable)
        except psycopg.Error:
            raise unavailable from None
        finally:
            with self._waiting_lock:
                self._waiting.pop(call_id, None)

    def _await(self, call_id: int, done: threading.Event, unavailable: errors.ArmError) -> Any:
        started = time.monotonic()
        taken = False
        while True:
            waited = time.monotonic() - started
            # the next look: the answer's notification, else the poll, else (untaken) the end of leader_wait
            timeout = self.settings.call_poll
            if not taken:
                timeout = min(timeout, max(0.0, self.settings.leader_wait - waited) + 0.01)
            notified = done.wait(timeout)
            done.clear()
            self.looks += 1
            with self.db.connection() as conn:
                state = conn.execute(
                    "SELECT taken_by, done, result, error FROM engine_calls WHERE id = %s", (call_id,)
                ).fetchone()
                if state is None:  # swept (a leader's sweep after call_retention)
                    raise unavailable
                taken_by, finished, result, error = state
                if finished:
                    conn.execute("DELETE FROM engine_calls WHERE id = %s", (call_id,))
                    if error:
                        raise error_from_json(error)
                    return decode(result)
                waited = time.monotonic() - started
                taken = taken_by is not None
                if not taken and waited >= self.settings.leader_wait:
                    gone = conn.execute(
                        "DELETE FROM engine_calls WHERE id = %s AND taken_by IS NULL RETURNING id", (call_id,)
                    ).fetchone()
                    if gone:
                        raise unavailable
                elif (
                    taken and not notified and (waited > self.settings.call_timeout or leader_backend(conn) != taken_by)
                ):
                    conn.execute("DELETE FROM engine_calls WHERE id = %s", (call_id,))
                    raise unavailable
