"""Leader election: a session-level advisory lock held on a connection of its own.

One node at a time holds ``pg_try_advisory_lock(ENGINE_LOCK)``; the others try again every ``poll``
seconds. When the leader's process dies, the kernel closes its socket, PostgreSQL ends the session and
the lock is free at once: a follower takes it at its next try. The bound on the time without a leader
is therefore ``poll`` (plus the new leader's ``recover()``, a read of the store); without the process
dying (a network partition) TCP keepalives (idle 5 s, 3 probes 2 s apart) end the session within about
11 s. A leader checks its connection every ``poll`` seconds and stops leading as soon as it fails.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Final

import psycopg

from ..heartbeat import Heartbeat
from .connect import Connection, dedicated

log = logging.getLogger(__name__)

#: seconds a graceful stop waits for the engine to step down (its scheduler's pass to end) before it lets go of the
#: lock anyway: a pass that does not end is stuck (arcext.heartbeat), and the others should lead meanwhile
STEP_DOWN_WAIT: Final = 10.0

#: the engine's leadership lock ("arclea" in ASCII); pg_locks shows it as classid/objid (high/low 32 bits)
ENGINE_LOCK: Final = 0x6172636C6561


def leader_backend(conn: Connection) -> int | None:
    """The backend pid of the session holding the leadership lock now (None: no leader)."""
    row = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s AND objsubid = 1"
        " AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (ENGINE_LOCK >> 32, ENGINE_LOCK & 0xFFFFFFFF),
    ).fetchone()
    return int(row[0]) if row else None


class LeaderLease:
    """Takes and keeps the leadership lock; ``on_elected`` runs (in this thread) once it is taken, and
    ``on_deposed`` once it is lost. ``on_elected`` raising gives the lock back."""

    def __init__(
        self,
        url: str,
        poll: float,
        on_elected: Callable[[int], None],
        on_deposed: Callable[[], None],
    ) -> None:
        self.url = url
        self.poll = poll
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._conn: Connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.leading = False
        self.backend_pid: int | None = None  # the lock connection's backend, while leading
        self.heartbeat = Heartbeat("leadership", poll)  # the loop's (arcext.heartbeat)
        #: held by an attempt (an election's take-over included) and by losing the lead: a stop never lets the lock
        #: go under a take-over still running, which would then lead without it
        self._turn = threading.Lock()
        self._closing = threading.Lock()  # a connection's close, and a stop's cut of its socket, one at a time
        #: a duplicate of the lock connection's socket, this object's own: a stop that gives up on the current try
        #: shuts the session down through it, whatever libpq does with its own descriptor meanwhile
        self._cut_sock: socket.socket | None = None

    def start(self) -> None:
        """Try the lock once in the caller's thread (a node that can lead at once is elected before this returns),
        then keep trying every ``poll`` seconds in a thread of its own."""
        self._attempt()
        self._thread = threading.Thread(target=self._run, name="arcext-leader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop leading (a graceful stop): ``on_deposed`` runs while the lock is still held, and the lock goes only
        after it returned, so the next leader never schedules while this one's last pass is still writing."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self._turn.acquire(timeout=STEP_DOWN_WAIT):
            # the current try does not end (a take-over or a step down stuck, say on the engine's lock): the session
            # is cut under it, so the others may lead; should the take-over end after all, it steps down (_try_take)
            log.warning("The leadership's current try does not end; letting go of the lock anyway")
            self._cut_session()
            return
        try:
            self._lose_now(step_down_first=True)
        finally:
            self._turn.release()

    def _run(self) -> None:
        self.heartbeat.beat()
        while not self._stop.wait(self.poll):
            self.heartbeat.beat()
            self._attempt()
        self.heartbeat.rest()

    def _attempt(self) -> None:
        lost = False
        with self._turn:
            if not self._stop.is_set():
                lost = self._attempt_now()
        if lost:
            self._deposed()  # outside the turn: stepping down waits for the engine's pass, a stop need not

    def _attempt_now(self) -> bool:
        """One try; True when it found the leadership lost (the caller steps down)."""
        try:
            conn = self._conn
            if conn is None or conn.closed:
                self._close_session()  # (a connection libpq closed by itself: its socket's duplicate too)
                conn = self._conn = dedicated(self.url)
                self._keep_socket(conn)
                if self._stop.is_set():  # a stop gave up waiting for this try meanwhile
                    self._close_session()
                    return False
            if self.leading:
                conn.execute("SELECT 1")  # still connected: still the holder of the lock
            else:
                self._try_take(conn)
        except psycopg.Error as exc:
            log.warning("Leadership connection failed (%s)", type(exc).__name__)
            return self._lose_now(False)
        return False

    def _try_take(self, conn: Connection) -> None:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (ENGINE_LOCK,)).fetchone()
        if not row or not row[0]:
            return
        self.backend_pid = conn.info.backend_pid
        log.info("This node leads the upgrade engine now")
        try:
            self._on_elected(self.backend_pid)
        except Exception:
            log.exception("Taking over as leader failed; giving the lock back")
            conn.execute("SELECT pg_advisory_unlock(%s)", (ENGINE_LOCK,))
            self.backend_pid = None
            return
        if self._stop.is_set():  # a stop gave up waiting for this take-over and cut the session: not the leader
            self.backend_pid = None
            self._close_session()  # (if the cut came before this session had the lock, it has it now)
            self._deposed()
            return
        self.leading = True  # (a stop asked for meanwhile, still waiting, steps down at once)

    def _lose_now(self, step_down_first: bool) -> bool:
        """Not the leader any more; True when the caller is to step down (``on_deposed``) once out of the turn."""
        was_leading = self.leading
        self.leading = False
        if was_leading and step_down_first:
            stepping = threading.Thread(target=self._deposed, name="arcext-step-down", daemon=True)
            stepping.start()
            stepping.join(STEP_DOWN_WAIT)
            if stepping.is_alive():  # the scheduler's pass does not end (stuck): the others may lead meanwhile
                log.warning("Stepping down takes over %g s; letting go of the leadership anyway", STEP_DOWN_WAIT)
            was_leading = False
        self.backend_pid = None
        self._close_session()
        return was_leading

    def _cut_session(self) -> None:
        """End the lock's session from a thread that does not own its connection (a stop that gave up waiting for
        the current try): its socket is shut down, so the server ends the session and frees the lock, and the
        owning thread, whose statement fails, closes the connection itself (closing it from here could pull the
        connection from under a statement in progress)."""
        with self._closing:
            if self._cut_sock is None:
                return
            try:
                self._cut_sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("Could not cut the leadership session", exc_info=True)

    def _keep_socket(self, conn: Connection) -> None:
        with self._closing:
            try:
                self._cut_sock = socket.socket(fileno=os.dup(conn.fileno()))
            except (OSError, psycopg.Error):
                log.debug("No duplicate of the leadership socket: a stop cannot cut its session", exc_info=True)

    def _close_session(self) -> None:
        with self._closing:
            conn, self._conn = self._conn, None
            sock, self._cut_sock = self._cut_sock, None
            if conn is not None:
                try:
                    conn.close()
                except psycopg.Error:
                    pass
            if sock is not None:
                sock.close()  # the last descriptor of the socket: the session ends, the lock is free for the others

    def _deposed(self) -> None:
        log.warning("This node no longer leads the upgrade engine")
        try:
            self._on_deposed()
        except Exception:
            log.exception("Stepping down failed")
