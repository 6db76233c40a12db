"""This node's two connections of its own for webhooks on PostgreSQL (TCP keepalives on, outside the pool).

* :class:`Claims`: one session-level advisory lock per webhook this node delivers,
  ``pg_try_advisory_lock(CLAIM_CLASS, hashtext(name))``. Whoever holds it delivers that webhook's messages,
  in order; the others try again every ``claim_poll`` seconds. When the holder's process dies the kernel
  closes its socket, PostgreSQL ends the session and frees the lock at once; a broken connection also ends
  every claim here at once (the next check fails), so a node never delivers without holding the claim.
  Two names hashing alike share a lock: one node then delivers both, which changes nothing else.
* :class:`Listener`: ``LISTEN`` for registry changes and new messages from any node, with a re-read of
  the registry every ``refresh`` seconds in case a notification was missed (a reconnect). Its session also
  holds this node's presence lock (``PRESENCE_CLASS``, its backend pid); when another node's presence
  disappears (its process died, or it stopped), ``on_peer_gone`` runs, so the events that node had recorded
  but not yet put in the outbox (a kill -9 between the two) are put back without waiting for a restart.
  The others look at the presence locks every ``refresh`` seconds, so a node that came and went between two
  looks would go unseen: each node announces its presence as it takes the lock (``NODES_CHANNEL``, its backend
  pid), and a node hearing it counts it present from then on, whether or not its lock is still held by the time
  it looks (a node crashing within seconds of its start, over and over, is seen leaving each time).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

import psycopg

from ..store.postgres import db
from ..store.postgres.db import Connection

log = logging.getLogger("arcext.webhooks")


#: the delivery claims' lock class ("arcw" in ASCII; the two-key form, apart from the one-key locks)
CLAIM_CLASS: Final = 0x61726377
#: the nodes' presence locks' class ("arcp"), one lock per node keyed by its listener's backend pid
PRESENCE_CLASS: Final = 0x61726370
HOOKS_CHANNEL: Final = "arcext_webhook_hooks"
MESSAGES_CHANNEL: Final = "arcext_webhook_messages"
NODES_CHANNEL: Final = "arcext_webhook_nodes"  # a node's presence taken (payload: its listener's backend pid)


def dedicated(url: str) -> Connection:
    """A connection of its own, in autocommit mode, that notices a dead peer (keepalives: about 11 s); the
    delivery claims and the presence lock go with its session."""
    return db.dedicated(url, "arcext-webhooks")


class Claims:
    """The webhooks this node delivers: advisory locks held on one connection (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Connection | None = None
        self._held: set[str] = set()  # the incarnations (uid) whose lock this session holds
        self._lock = threading.Lock()

    def claim(self, uid: str, name: str) -> bool:
        """Whether this node holds the claim of webhook ``name`` (incarnation ``uid``) now, taking it if it is
        free; checks the connection. A webhook made again under its name while this node still holds the old
        one's claim takes the lock a second time (advisory locks count), so releasing the old one leaves it
        held."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._held.clear()
                    self._conn = dedicated(self.url)
                if uid in self._held:
                    self._conn.execute("SELECT 1")  # the session is alive: the lock is still this node's
                    return True
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (CLAIM_CLASS, name))
                taken = row.fetchone()
                if taken and taken[0]:
                    self._held.add(uid)
                    log.info("This node delivers webhook %s now", name)
                    return True
                return False
            except psycopg.Error as exc:
                if self._held:
                    log.warning("Webhook claims connection failed (%s): delivering none", type(exc).__name__)
                self._drop()
                return False

    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def release(self, uid: str, name: str) -> None:
        with self._lock:
            if uid not in self._held or self._conn is None:
                return
            self._held.discard(uid)
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (CLAIM_CLASS, name))
            except psycopg.Error:
                self._drop()

    def _drop(self) -> None:
        self._held.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # ends the session: every claim is free for the other nodes
            except psycopg.Error:
                pass

    def close(self) -> None:
        with self._lock:
            self._drop()


class Listener:
    """Calls ``on_hooks`` on a registry change (and every ``refresh`` seconds), ``on_messages`` when a node
    put messages in the outbox, and ``on_peer_gone`` when another node went away (or this node's connection
    was lost a while), from a thread of its own."""

    def __init__(
        self,
        url: str,
        refresh: float,
        on_hooks: Callable[[], None],
        on_messages: Callable[[], None],
        on_peer_gone: Callable[[], None],
    ) -> None:
        self.url = url
        self.refresh = refresh
        self._on_hooks = on_hooks
        self._on_messages = on_messages
        self._on_peer_gone = on_peer_gone
        self._peers: set[int] | None = None  # the presence locks seen at the last look
        self._arrivals: set[int] = set()  # nodes heard taking their presence lock since the last look
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arcext-webhook-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        conn: Connection | None = None
        last_read = 0.0
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = dedicated(self.url)
                    conn.execute("SELECT pg_advisory_lock(%s, pg_backend_pid())", (PRESENCE_CLASS,))
                    conn.execute(f"LISTEN {HOOKS_CHANNEL}")
                    conn.execute(f"LISTEN {MESSAGES_CHANNEL}")
                    conn.execute(f"LISTEN {NODES_CHANNEL}")
                    conn.execute("SELECT pg_notify(%s, pg_backend_pid()::text)", (NODES_CHANNEL,))
                    self._call(self._on_messages)  # whatever was put in while this node was not listening
                    if self._peers is not None:
                        self._call(self._on_peer_gone)  # a node may have died while this one was away
                    self._peers = None
                    last_read = 0.0
                hooks = time.monotonic() - last_read >= self.refresh
                if not hooks:
                    for note in conn.notifies(timeout=min(1.0, self.refresh), stop_after=1):
                        hooks = note.channel == HOOKS_CHANNEL
                        if note.channel == MESSAGES_CHANNEL:
                            self._call(self._on_messages)
                        elif note.channel == NODES_CHANNEL and note.pid != conn.info.backend_pid:
                            self._arrived(note.payload)
                if hooks:
                    last_read = time.monotonic()
                    self._call(self._on_hooks)  # a change, the periodic re-read, or a new connection
                    self._look_at_peers(conn)
            except psycopg.Error as exc:
                log.warning("Webhook listener connection failed (%s); reconnecting", type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.5)
        if conn is not None:
            conn.close()

    def _arrived(self, payload: str) -> None:
        """Another node took its presence lock: present from now on, so its leaving is seen at the next look even
        when it leaves before that look (then its lock is gone and ``on_peer_gone`` runs)."""
        if payload.isdigit():
            self._arrivals.add(int(payload))

    def _look_at_peers(self, conn: Connection) -> None:
        rows = conn.execute(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (PRESENCE_CLASS,),
        ).fetchall()
        peers = {int(r[0]) for r in rows}
        present = (self._peers or set()) | self._arrivals
        self._arrivals = set()
        if present - peers:
            log.info("A node left (its webhook listener's session ended): looking for events it left behind")
            self._call(self._on_peer_gone)
        self._peers = peers

    def _call(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:  # a failed re-read is retried at the next change or period
            log.exception("Webhook listener callback failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
