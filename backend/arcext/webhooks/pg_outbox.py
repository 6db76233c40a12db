"""The webhooks of several nodes on one PostgreSQL database: the registry and the outbox in tables every node
shares (pg_schema.py), the delivery claims and the listener on connections of this node's own (pg_node.py).

* **Intake.** Every node puts in the events it records: one statement matches them with the registry's rows
  (enabled, subscribed, not from before the webhook) and inserts a message per event and webhook with
  ``ON CONFLICT (hook_uid, id) DO NOTHING``, so the same event put in by two nodes (a reconcile at start,
  a catch-up) is one message. ``NOTIFY arcext_webhook_messages`` wakes the node delivering.
* **Rollout events** carry random ids, and a node that became leader announces from its own memory: the state
  each rollout last announced is kept in ``webhook_rollouts`` and a rollout event that announces nothing new
  (its rollout already planned, or already in that state) is left out, under an advisory lock.
* **Delivery.** The node holding a webhook's claim reads its oldest pending message, POSTs it, and records
  the attempt (``WHERE state = 'Pending'``); another node takes over once the claim is free.
* **Registry changes** (PUT, DELETE, disabled by a 410) ``NOTIFY arcext_webhook_hooks``; every node re-reads
  the registry then, and every ``refresh`` seconds.
* Finished messages are kept for the deliveries list (the last ``HISTORY``) and at least ``KEEP_FINISHED``
  seconds (a reconcile at start looks back an hour and must find what was delivered), then deleted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from ..store.postgres.db import Database
from .delivery import PENDING, Settings
from .outbox import Message
from .pg_node import HOOKS_CHANNEL, MESSAGES_CHANNEL, Claims, Listener
from .pg_schema import migrate_webhooks
from .registry import HISTORY, Hook
from .storage import Outgoing, RolloutChange

#: the lock the rollout states are compared and changed under ("arcwhr" in ASCII)
ROLLOUT_LOCK: Final = 0x617263776872
KEEP_FINISHED: Final = 3 * 3600.0  # seconds a finished message is kept at least
TRIM_EVERY: Final = 60.0  # seconds between two trims of one webhook's finished messages
ADD_TRIES: Final = 3  # an insert chosen as a deadlock's victim goes again this often

_HOOK = "name, uid, url, events, secret, created_at, disabled, disabled_reason, before"
_MESSAGE = (
    "id, type, subject, time, {body}, created, seq, attempts, next_at, state, last_status, last_error, last_at,"
    " delivered_at"
)


def _hook(row: tuple[Any, ...]) -> Hook:
    name, uid, url, events, secret, created_at, disabled, reason, before = row
    return Hook(name, url, list(events), secret, created_at, bool(disabled), reason, frozenset(before), uid)


def _message(hook: str, row: tuple[Any, ...]) -> Message:
    return Message(row[0], hook, *row[1:])


class PgStorage:
    shared = True

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        with db.connection() as conn:
            migrate_webhooks(conn)
        self._claims = Claims(db.url)
        self._listener: Listener | None = None
        self._trimmed: dict[str, float] = {}  # hook uid -> when its finished messages were last trimmed
        self._trim_lock = threading.Lock()

    # --- the registry ----------------------------------------------------------------------------
    def hooks(self) -> list[Hook]:
        with self.db.connection() as conn:
            return [_hook(r) for r in conn.execute(f"SELECT {_HOOK} FROM webhook_hooks ORDER BY name").fetchall()]

    def hook(self, name: str) -> Hook | None:
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT {_HOOK} FROM webhook_hooks WHERE name = %s", (name,)).fetchone()
        return _hook(row) if row else None

    def put_hook(self, hook: Hook, rollout_states: dict[str, str]) -> tuple[Hook, bool]:
        with self.db.transaction() as conn:
            # the lock first, as add() takes it: the rollout states, then the watermark, in the same order
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLOUT_LOCK,))
            row = conn.execute(
                f"INSERT INTO webhook_hooks ({_HOOK}) VALUES (%s, %s, %s, %s, %s, %s, false, NULL, %s)"
                " ON CONFLICT (name) DO UPDATE SET url = excluded.url, events = excluded.events,"
                " secret = excluded.secret, disabled = false, disabled_reason = NULL"
                f" RETURNING {_HOOK}, (xmax = 0)",
                (
                    hook.name,
                    uuid.uuid4().hex,
                    hook.url,
                    Jsonb(hook.events),
                    hook.sealed,
                    hook.created_at,
                    Jsonb(sorted(hook.before)),
                ),
            ).fetchone()
            assert row is not None
            stored, created = _hook(row[:-1]), bool(row[-1])
            if created:
                # events from now on: the watermark moves here so a reconcile does not look further back
                self._raise_watermark(conn, stored.created_at)
                if rollout_states:
                    conn.execute(
                        "INSERT INTO webhook_rollouts (id, state) SELECT * FROM unnest(%s::text[], %s::text[])"
                        " ON CONFLICT (id) DO NOTHING",
                        (list(rollout_states), list(rollout_states.values())),
                    )
            conn.execute(f"NOTIFY {HOOKS_CHANNEL}")
        return stored, created

    def delete_hook(self, name: str) -> bool:
        with self.db.transaction() as conn:
            row = conn.execute("DELETE FROM webhook_hooks WHERE name = %s RETURNING uid", (name,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM webhook_messages WHERE hook_uid = %s", (row[0],))
            conn.execute(f"NOTIFY {HOOKS_CHANNEL}")
        return True

    def disable_hook(self, hook: Hook, reason: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE webhook_hooks SET disabled = true, disabled_reason = %s WHERE uid = %s", (reason, hook.uid)
            )
            conn.execute(f"NOTIFY {HOOKS_CHANNEL}")
        hook.disabled, hook.disabled_reason = True, reason

    # --- the outbox ------------------------------------------------------------------------------
    def watermark(self) -> str:
        with self.db.connection() as conn:
            row = conn.execute("SELECT watermark FROM webhook_state").fetchone()
        return str(row[0]) if row else ""

    @staticmethod
    def _raise_watermark(conn: Any, watermark: str) -> None:
        conn.execute(
            "INSERT INTO webhook_state (one, watermark) VALUES (true, %s) ON CONFLICT (one)"
            " DO UPDATE SET watermark = greatest(webhook_state.watermark, excluded.watermark)",
            (watermark,),
        )

    def rollout_states(self) -> dict[str, str]:
        with self.db.connection() as conn:
            return {str(i): str(s) for i, s in conn.execute("SELECT id, state FROM webhook_rollouts").fetchall()}

    def reset_rollout_states(self, states: dict[str, str]) -> None:
        with self.db.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLOUT_LOCK,))
            conn.execute("DELETE FROM webhook_rollouts")
            conn.execute(
                "INSERT INTO webhook_rollouts (id, state) SELECT * FROM unnest(%s::text[], %s::text[])",
                (list(states), list(states.values())),
            )

    def add(
        self,
        events: list[Outgoing],
        watermark: str,
        rollouts: list[RolloutChange],
        wall: float,
        only: Hook | None = None,
    ) -> list[str]:
        for attempt in range(1, ADD_TRIES + 1):
            try:
                return self._add(events, watermark, rollouts, wall, only)
            except psycopg.errors.DeadlockDetected:
                # two nodes putting in the same events in another order (a reconcile, a catch-up) wait for each
                # other's rows; PostgreSQL ends one transaction, which goes again
                if attempt == ADD_TRIES:
                    raise
                time.sleep(0.01 * attempt)
        return []

    def _add(
        self, events: list[Outgoing], watermark: str, rollouts: list[RolloutChange], wall: float, only: Hook | None
    ) -> list[str]:
        with self.db.transaction() as conn:
            left_out = self._announce(conn, rollouts) if rollouts else set()
            events = [e for e in events if e.id not in left_out]
            rows: list[tuple[Any, ...]] = []
            if events:
                rows = conn.execute(
                    "INSERT INTO webhook_messages (hook_uid, id, type, subject, time, body, created)"
                    " SELECT h.uid, e.id, e.type, e.subject, e.time, e.body, %s"
                    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
                    "  WITH ORDINALITY AS e (id, type, subject, time, body, n)"
                    " JOIN webhook_hooks h ON NOT h.disabled AND (h.events ? '*' OR h.events ? e.type)"
                    "  AND e.time >= h.created_at AND NOT h.before ? e.id AND (%s::text IS NULL OR h.uid = %s)"
                    " ORDER BY e.n, h.name"
                    " ON CONFLICT (hook_uid, id) DO NOTHING RETURNING type",
                    (
                        wall,
                        [e.id for e in events],
                        [e.type for e in events],
                        [e.subject for e in events],
                        [e.time for e in events],
                        [e.body for e in events],
                        only.uid if only else None,
                        only.uid if only else None,
                    ),
                ).fetchall()
            if watermark:
                self._raise_watermark(conn, watermark)
            if rows:
                conn.execute(f"NOTIFY {MESSAGES_CHANNEL}")
        return [str(r[0]) for r in rows]

    @staticmethod
    def _announce(conn: Any, rollouts: list[RolloutChange]) -> set[str]:
        """Record the rollout changes; returns the ids of the events that announce nothing new."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLOUT_LOCK,))
        ids = sorted({c.rollout_id for c in rollouts})
        rows = conn.execute("SELECT id, state FROM webhook_rollouts WHERE id = ANY(%s)", (ids,)).fetchall()
        known: dict[str, str] = {str(i): str(s) for i, s in rows}
        changed: dict[str, str] = {}
        left_out: set[str] = set()
        for change in rollouts:
            if change.action == "planned":
                if change.rollout_id in known:
                    left_out.add(change.event_id)
                    continue
                known[change.rollout_id] = ""  # planned here: what follows in this batch is news
            elif known.get(change.rollout_id) == change.state:
                left_out.add(change.event_id)
                continue
            changed[change.rollout_id] = change.state
            if change.action != "planned":
                known[change.rollout_id] = change.state
        if changed:
            conn.execute(
                "INSERT INTO webhook_rollouts (id, state) SELECT * FROM unnest(%s::text[], %s::text[])"
                " ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                (list(changed), list(changed.values())),
            )
        return left_out

    def next_pending(self, hook: Hook) -> Message | None:
        with self.db.connection() as conn:
            row = conn.execute(
                f"SELECT {_MESSAGE.format(body='body')} FROM webhook_messages"
                " WHERE hook_uid = %s AND state = 'Pending' ORDER BY seq LIMIT 1",
                (hook.uid,),
            ).fetchone()
        return _message(hook.name, row) if row else None

    def record_attempt(self, hook: Hook, msg: Message, attempt: dict[str, Any]) -> None:
        with self.db.connection() as conn:
            conn.execute(
                "UPDATE webhook_messages SET attempts = %s, state = %s, last_status = %s, last_error = %s,"
                " last_at = %s, next_at = %s, delivered_at = %s"
                " WHERE hook_uid = %s AND id = %s AND state = 'Pending'",
                (
                    attempt["attempts"],
                    attempt["state"],
                    attempt["status"],
                    attempt["error"],
                    attempt["at"],
                    attempt["next"],
                    attempt["delivered"],
                    hook.uid,
                    msg.id,
                ),
            )
        msg.apply_attempt(attempt)
        if msg.state != PENDING:
            self._trim(hook)

    def _trim(self, hook: Hook) -> None:
        """Delete the webhook's finished messages beyond the last HISTORY that are older than KEEP_FINISHED,
        and messages of webhooks deleted while a node was putting them in (at most every TRIM_EVERY s)."""
        now = time.time()
        with self._trim_lock:
            if now - self._trimmed.get(hook.uid, 0.0) < TRIM_EVERY:
                return
            self._trimmed[hook.uid] = now
        with self.db.connection() as conn:
            conn.execute(
                "DELETE FROM webhook_messages WHERE hook_uid = %s AND state <> 'Pending' AND created < %s"
                " AND seq < (SELECT seq FROM webhook_messages WHERE hook_uid = %s AND state <> 'Pending'"
                "  ORDER BY seq DESC OFFSET %s LIMIT 1)",
                (hook.uid, now - KEEP_FINISHED, hook.uid, HISTORY - 1),
            )
            conn.execute(
                "DELETE FROM webhook_messages m WHERE created < %s"
                " AND NOT EXISTS (SELECT 1 FROM webhook_hooks h WHERE h.uid = m.hook_uid)",
                (now - TRIM_EVERY,),
            )

    def deliveries(self, hook: Hook) -> list[Message]:
        columns = _MESSAGE.format(body="'' AS body")
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT {columns} FROM ("
                f" (SELECT {columns} FROM webhook_messages WHERE hook_uid = %s AND state = 'Pending')"
                f" UNION ALL (SELECT {columns} FROM webhook_messages WHERE hook_uid = %s AND state <> 'Pending'"
                "  ORDER BY seq DESC LIMIT %s)) AS listed"
                " ORDER BY state = 'Pending' DESC, seq DESC",
                (hook.uid, hook.uid, HISTORY),
            ).fetchall()
        return [_message(hook.name, r) for r in rows]

    def pending_counts(self) -> dict[str, int]:
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT h.name, count(m.seq) FROM webhook_hooks h"
                " LEFT JOIN webhook_messages m ON m.hook_uid = h.uid AND m.state = 'Pending' GROUP BY h.name"
            ).fetchall()
        return {str(name): int(count) for name, count in rows}

    # --- who delivers: the node holding the webhook's claim -------------------------------------------------
    def claim(self, hook: Hook) -> bool:
        return self._claims.claim(hook.uid, hook.name)

    def release(self, hook: Hook) -> None:
        self._claims.release(hook.uid, hook.name)

    def watch(
        self, on_hooks: Callable[[], None], on_messages: Callable[[], None], on_peer_gone: Callable[[], None]
    ) -> None:
        self._listener = Listener(self.db.url, self.settings.refresh, on_hooks, on_messages, on_peer_gone)
        self._listener.start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        self._claims.close()
