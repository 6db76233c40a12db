"""Signed webhooks: a registry, a durable outbox and one delivery worker per webhook.

* **Registry** ``<data-dir>/webhooks/hooks.json`` (replaced atomically): name, url, events, the secret
  sealed with the data directory's SecretBox (never returned, never logged), disabled state.
* **Outbox** ``<data-dir>/webhooks/outbox.jsonl``: an append-only, fsynced log of messages (one per
  event and webhook: the CloudEvents 1.0 JSON body, written once) and of delivery attempts. It is
  replayed at start and compacted (pending messages and recent history) with an atomic rewrite.
* **Crash window.** Events reach this module after they are durable in the activity log (the store's
  journal), and are written to the outbox by a background thread, so an upgrade never waits for a
  webhook. A kill -9 between the two is repaired at start: the outbox keeps a watermark (the newest
  activity-log timestamp it holds) and the rollout states it has announced; ``reconcile`` puts back
  every later activity-log event and every rollout state change the outbox lacks (by event id).
* **Delivery** is at least once, in outbox order per webhook (so per extension, too): each message is
  signed per Standard Webhooks (``webhook-id`` = the CloudEvent id, stable across retries,
  ``webhook-timestamp``, ``webhook-signature``) and POSTed without following redirects; any 2xx
  delivers it, 410 Gone disables the webhook, anything else is retried with exponential backoff
  (``base * 2**(attempt-1)``, capped) until the message is older than the maximum age (a day).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

from .clock import iso, parse_iso
from .crypto import SecretBox
from .metrics import ROLLED_BACK, Metrics, job_outcome
from .store.atomic_storage import atomic_write_bytes, fsync_dir
from .store.base import Record
from .store.groupcommit import GroupCommitFile

log = logging.getLogger(__name__)

#: the event types a webhook can ask for (``["*"]`` = all)
EVENT_TYPES = (
    "upgrade.started",
    "upgrade.succeeded",
    "upgrade.rolledBack",
    "upgrade.failed",
    "rollout.planned",
    "rollout.frozen",
    "rollout.paused",
    "rollout.resumed",
    "rollout.completed",
    "maintenanceWindow.opened",  # declared for maintenance windows (issue 14, item 1): not emitted yet
)
CE_TYPE_PREFIX = "com.arcext."
CE_SOURCE = "/arcext"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
HISTORY = 500  # finished deliveries kept (and listed) per webhook
SECRET_PREFIX = "whsec_"


class WebhookError(ValueError):
    """A webhook definition the API refuses (400), with the field it is about."""

    def __init__(self, message: str, target: str) -> None:
        super().__init__(message)
        self.target = target


def event_type(event: Record) -> str:
    """The webhook event type of an activity-log event (upgrade attempts) or a rollout event."""
    props = event.get("properties") or {}
    if event.get("resourceType", {}).get("value") == "arcext/rollouts":
        return f"rollout.{props['action']}"
    status = event["status"]["value"]
    if status == "Started":
        return "upgrade.started"
    if status == "Succeeded":
        return "upgrade.succeeded"
    return "upgrade.rolledBack" if job_outcome(event) == ROLLED_BACK or props.get("rolledBack") else "upgrade.failed"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str) -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 24 to 64 random bytes."""
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(raw + "==", validate=False)
    except ValueError:
        key = b""
    if not 24 <= len(key) <= 64 or not re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", raw):
        raise WebhookError(
            "The secret must be a Standard Webhooks secret: 'whsec_' followed by base64 of 24 to 64 random bytes "
            "(leave it out and the server makes one and returns it once).",
            "secret",
        )
    return SECRET_PREFIX + raw


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("The url must be an absolute http:// or https:// URL.", "url")
    if parts.username or parts.password:
        raise WebhookError("The url must not carry credentials; sign with the secret instead.", "url")
    return url


def check_events(events: Iterable[str]) -> list[str]:
    wanted = list(events)
    if not wanted:
        raise WebhookError('events must list at least one event type, or be ["*"].', "events")
    if wanted == ["*"]:
        return wanted
    unknown = [e for e in wanted if e not in EVENT_TYPES]
    if unknown:
        raise WebhookError(f"Unknown event types {unknown}; use '*' or some of {list(EVENT_TYPES)}.", "events")
    return sorted(set(wanted), key=EVENT_TYPES.index)


@dataclass
class Message:
    id: str
    hook: str
    type: str
    subject: str
    time: str
    body: str
    created: float  # wall clock (seconds since the epoch)
    seq: int
    attempts: int = 0
    next_at: float = 0.0
    state: str = "Pending"
    last_status: int | None = None
    last_error: str | None = None
    last_at: float | None = None
    delivered_at: float | None = None

    def view(self) -> dict[str, Any]:
        def stamp(t: float | None) -> str | None:
            return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") if t else None

        return {
            "id": self.id,
            "type": self.type,
            "subject": self.subject,
            "eventTime": self.time,
            "state": self.state,
            "attempts": self.attempts,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "lastAttemptAt": stamp(self.last_at),
            "nextAttemptAt": stamp(self.next_at) if self.state == "Pending" and self.attempts else None,
            "deliveredAt": stamp(self.delivered_at),
            "createdAt": stamp(self.created),
        }

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hook": self.hook,
            "type": self.type,
            "subject": self.subject,
            "time": self.time,
            "body": self.body,
            "created": self.created,
            "seq": self.seq,
        }


@dataclass
class Settings:
    retry_base: float = 5.0  # seconds before the first retry; doubles each time
    retry_max: float = 3600.0  # the longest wait between two attempts
    max_age: float = 86400.0  # a message not delivered within this many seconds expires
    timeout: float = 10.0  # seconds per attempt
    compact_bytes: int = 8 * 1024 * 1024  # outbox size that triggers a compaction once nothing is pending


@dataclass
class _Hook:
    name: str
    url: str
    events: list[str]
    sealed: str
    created_at: str
    disabled: bool = False
    disabled_reason: str | None = None
    #: activity-log events stamped with the creation time itself that were there before the webhook (a
    #: manual clock stamps many events alike): never delivered to it, also not by a reconcile after a restart
    before: frozenset[str] = frozenset()
    pending: deque[Message] = field(default_factory=deque)
    history: deque[Message] = field(default_factory=lambda: deque(maxlen=HISTORY))
    wake: threading.Event = field(default_factory=threading.Event)
    worker: threading.Thread | None = None

    def wants(self, etype: str) -> bool:
        return self.events == ["*"] or etype in self.events

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "events": self.events,
            "secret": self.sealed,
            "createdAt": self.created_at,
            "disabled": self.disabled,
            "disabledReason": self.disabled_reason,
            "before": sorted(self.before),
        }

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "events": self.events,
            "createdAt": self.created_at,
            "enabled": not self.disabled,
            "disabledReason": self.disabled_reason,
            "pending": len(self.pending),
        }


class WebhookService:
    def __init__(
        self,
        data_dir: Path,
        box: SecretBox,
        now: Callable[[], datetime],
        metrics: Metrics,
        settings: Settings | None = None,
    ) -> None:
        self.directory = data_dir / "webhooks"
        self.box = box
        self.now = now
        self.metrics = metrics
        self.settings = settings or Settings()
        self._lock = threading.RLock()
        self._hooks: dict[str, _Hook] = {}
        self._seq = 0
        self._watermark = ""
        self._rollout_states: dict[str, str] = {}
        self._known: set[tuple[str, str]] = set()  # (hook, message id) in the outbox
        self._inbox: deque[list[Record]] = deque()
        self._inbox_wake = threading.Event()
        self._flush_lock = threading.Lock()  # one flusher at a time: the outbox keeps the order events came in
        self._stop = threading.Event()
        self._writer_thread: threading.Thread | None = None
        self._any = False  # any enabled webhook: the listener's fast path
        #: the rollouts' current states (Services sets it): a new webhook hears of changes from now on, and a
        #: restart does not announce rollouts that changed before any webhook existed
        self.rollout_states: Callable[[], dict[str, str]] = dict
        #: the ids of the activity-log events stamped with a given time (Services sets it)
        self.events_at: Callable[[str], list[str]] = lambda stamp: []
        self._file: GroupCommitFile | None = None
        self._size = 0
        self._outbox_path = self.directory / "outbox.jsonl"
        self._load()
        if self._hooks or self._outbox_path.exists():
            self._compact()  # a server that never had a webhook writes nothing here
        self._http = requests.Session()
        self._http.trust_env = False  # no proxy settings from the environment reach receivers

    # --- persistence ---------------------------------------------------------------------------
    def _load(self) -> None:
        path = self.directory / "hooks.json"
        if path.exists():
            for rec in orjson.loads(path.read_bytes()).get("hooks", []):
                self._hooks[rec["name"]] = _Hook(
                    rec["name"],
                    rec["url"],
                    rec["events"],
                    rec["secret"],
                    rec["createdAt"],
                    rec.get("disabled", False),
                    rec.get("disabledReason"),
                    frozenset(rec.get("before", ())),
                )
        messages: dict[tuple[str, str], Message] = {}
        outbox = self.directory / "outbox.jsonl"
        if outbox.exists():
            with open(outbox, "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # a torn final line: never acknowledged
                    rec = orjson.loads(line)
                    if "m" in rec:
                        m = rec["m"]
                        msg = Message(
                            m["id"], m["hook"], m["type"], m["subject"], m["time"], m["body"], m["created"], m["seq"]
                        )
                        for k in ("attempts", "state", "last_status", "last_error", "last_at", "delivered_at"):
                            if k in m:
                                setattr(msg, k, m[k])
                        messages[(msg.hook, msg.id)] = msg
                        self._seq = max(self._seq, msg.seq)
                    elif "a" in rec:
                        a = rec["a"]
                        found = messages.get((a["hook"], a["id"]))
                        if found is not None:
                            found.attempts = a["attempts"]
                            found.state = a["state"]
                            found.last_status = a.get("status")
                            found.last_error = a.get("error")
                            found.last_at = a["at"]
                            found.next_at = a.get("next", 0.0)
                            found.delivered_at = a.get("delivered")
                    elif "w" in rec:
                        self._watermark = max(self._watermark, rec["w"])
                    elif "r" in rec:
                        self._rollout_states.update(rec["r"])
                    elif "d" in rec:
                        for key in [k for k in messages if k[0] == rec["d"]]:
                            del messages[key]
        for msg in sorted(messages.values(), key=lambda m: m.seq):
            hook = self._hooks.get(msg.hook)
            if hook is None:
                continue
            self._known.add((msg.hook, msg.id))
            (hook.pending if msg.state == "Pending" else hook.history).append(msg)
        self._any = any(not h.disabled for h in self._hooks.values())

    def _compact(self) -> None:
        """Rewrite the outbox with what it must keep (atomically), then append to it."""
        lines = [orjson.dumps({"w": self._watermark}), orjson.dumps({"r": self._rollout_states})]
        for hook in self._hooks.values():
            for msg in [*hook.history, *hook.pending]:
                rec = msg.record()
                rec.update(
                    attempts=msg.attempts,
                    state=msg.state,
                    last_status=msg.last_status,
                    last_error=msg.last_error,
                    last_at=msg.last_at,
                    delivered_at=msg.delivered_at,
                )
                lines.append(orjson.dumps({"m": rec}))
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self._outbox_path, b"\n".join(lines) + b"\n")
        fd = os.open(self._outbox_path, os.O_WRONLY | os.O_APPEND, 0o600)
        fsync_dir(self.directory)
        if self._file is None:
            self._file = GroupCommitFile(fd)
        else:
            os.close(self._file.swap(fd))
        self._size = self._outbox_path.stat().st_size

    def _append(self, records: list[dict[str, Any]]) -> None:
        payload = b"".join(orjson.dumps(r) + b"\n" for r in records)
        if self._file is None:
            self._compact()
        assert self._file is not None
        self._file.append(payload)
        self._size += len(payload)

    def _save_hooks(self) -> None:
        body = {"hooks": [h.record() for h in self._hooks.values()]}
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.directory / "hooks.json", orjson.dumps(body))
        self._any = any(not h.disabled for h in self._hooks.values())

    # --- the registry (the API) ------------------------------------------------------------------
    def put(
        self, name: str, url: str, events: list[str], secret: str | None
    ) -> tuple[dict[str, Any], str | None, bool]:
        """Create or replace a webhook; returns (view, the generated secret or None, created)."""
        if not NAME_RE.match(name):
            raise WebhookError("A webhook name is 1-63 letters, digits, '.', '_' or '-'.", "name")
        url = check_url(url)
        events = check_events(events)
        generated = None
        if secret is None:
            generated = secret = new_secret()
        secret = check_secret(secret)
        with self._lock:
            existing = self._hooks.get(name)
            sealed = self.box.seal({"secret": secret})
            if existing is None:
                created = iso(self.now())
                hook = _Hook(name, url, events, sealed, created, before=frozenset(self.events_at(created)))
                self._hooks[name] = hook
                # events from now on: the watermark moves here so a restart does not look further back
                self._watermark = max(self._watermark, hook.created_at)
                for rollout_id, state in self.rollout_states().items():
                    self._rollout_states.setdefault(rollout_id, state)
                self._append([{"w": self._watermark}, {"r": self._rollout_states}])
            else:
                hook = existing
                hook.url, hook.events, hook.sealed = url, events, sealed
                hook.disabled, hook.disabled_reason = False, None
            self._save_hooks()
            self._ensure_worker(hook)
            hook.wake.set()
            return hook.view(), generated, existing is None

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            hook = self._hooks.get(name)
            return hook.view() if hook else None

    def list_hooks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [h.view() for h in sorted(self._hooks.values(), key=lambda h: h.name)]

    def delete(self, name: str) -> bool:
        with self._lock:
            hook = self._hooks.pop(name, None)
            if hook is None:
                return False
            self._known = {k for k in self._known if k[0] != name}
            self._append([{"d": name}])
            self._save_hooks()
            hook.disabled = True
            hook.wake.set()
            return True

    def deliveries(self, name: str) -> list[dict[str, Any]] | None:
        """Newest first: pending messages, then finished ones."""
        with self._lock:
            hook = self._hooks.get(name)
            if hook is None:
                return None
            return [m.view() for m in reversed([*hook.history, *hook.pending])]

    def pending_counts(self) -> dict[str, int]:
        with self._lock:
            return {h.name: len(h.pending) for h in self._hooks.values()}

    # --- events in -----------------------------------------------------------------------------------
    def on_events(self, events: list[Record]) -> None:
        """The telemetry listener: quick (a queue append); the writer thread does the rest."""
        if self._any:
            self._inbox.append(events)
            self._inbox_wake.set()

    def _writer_loop(self) -> None:
        while not self._stop.is_set():
            self._inbox_wake.wait(1.0)
            self._inbox_wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write every queued event to the outbox now (the writer thread's work)."""
        with self._flush_lock:
            batches: list[list[Record]] = []
            while self._inbox:
                batches.append(self._inbox.popleft())
            if batches:
                try:
                    self.enqueue([e for b in batches for e in b])
                except Exception:  # reconcile() at the next start puts back whatever this lost
                    log.exception("Could not write %d events to the webhook outbox", sum(len(b) for b in batches))

    def enqueue(self, events: list[Record]) -> int:
        """Put a message per event and interested webhook in the outbox (durably); returns how many."""
        with self._lock:
            records: list[dict[str, Any]] = []
            added: list[Message] = []
            wall = time.time()
            rollout_states: dict[str, str] = {}
            watermark = self._watermark
            for event in events:
                etype = event_type(event)
                is_rollout = etype.startswith("rollout.")
                if is_rollout:
                    rollout_states[event["properties"]["rolloutId"]] = event["properties"]["state"]
                else:
                    watermark = max(watermark, event["eventTimestamp"])
                body: str | None = None
                for hook in self._hooks.values():
                    if hook.disabled or not hook.wants(etype) or (hook.name, event["eventDataId"]) in self._known:
                        continue
                    if event["eventTimestamp"] < hook.created_at or event["eventDataId"] in hook.before:
                        continue
                    if body is None:
                        body = self._cloudevent(event, etype)
                    self._seq += 1
                    msg = Message(
                        event["eventDataId"],
                        hook.name,
                        etype,
                        event["resourceId"],
                        event["eventTimestamp"],
                        body,
                        wall,
                        self._seq,
                    )
                    records.append({"m": msg.record()})
                    added.append(msg)
            if watermark != self._watermark:
                records.append({"w": watermark})
            if rollout_states:
                records.append({"r": rollout_states})
            if not records:
                return 0
            self._append(records)
            self._watermark = watermark
            self._rollout_states.update(rollout_states)
            for msg in added:
                self._known.add((msg.hook, msg.id))
                hook = self._hooks[msg.hook]
                hook.pending.append(msg)
                self.metrics.webhook_events.labels(msg.type).inc()
                hook.wake.set()
            return len(added)

    @staticmethod
    def _cloudevent(event: Record, etype: str) -> str:
        # imported on first use: a server without webhooks never pays for them (start-up time matters to
        # the test harness, which starts a server per test module)
        from cloudevents.conversion import to_structured
        from cloudevents.http import CloudEvent

        attributes = {
            "type": CE_TYPE_PREFIX + etype,
            "source": CE_SOURCE + ("/rollouts" if etype.startswith("rollout.") else "/activitylog"),
            "id": event["eventDataId"],
            "time": event["eventTimestamp"],
            "subject": event["resourceId"],
            "datacontenttype": "application/json",
        }
        _headers, body = to_structured(CloudEvent(attributes, event))
        return body.decode() if isinstance(body, bytes) else str(body)

    def reconcile(
        self,
        events: Callable[[str], Iterator[Record]],
        rollouts: list[Record],
        rollout_event: Callable[[Record, str], Record],
    ) -> int:
        """At start: put back what a crash kept from the outbox (see the module's docstring)."""
        with self._lock:
            if not self._hooks:
                self._rollout_states = {r["id"]: r["state"] for r in rollouts}
                return 0
            since = self._watermark
        found: list[Record] = []
        if since:
            # the outbox's watermark minus a margin (events of concurrent workers are not strictly in time order)
            start = (parse_iso(since) - timedelta(hours=1)).isoformat()
            found = [e for e in events(start[:10]) if e["eventTimestamp"] >= start.replace("+00:00", "Z")]
        for rollout in rollouts:
            before = self._rollout_states.get(rollout["id"])
            if before == rollout["state"]:
                continue
            if before is None:
                found.append(rollout_event(rollout, "planned"))
            if rollout["state"] != "Active" or before in ("Paused", "Frozen"):
                action = {"Active": "resumed", "Paused": "paused", "Frozen": "frozen", "Completed": "completed"}
                found.append(rollout_event(rollout, action[rollout["state"]]))
        added = self.enqueue(found) if found else 0
        if added:
            log.info("Put back %d webhook deliveries the outbox was missing", added)
        return added

    # --- delivery -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._writer_thread = threading.Thread(target=self._writer_loop, name="arcext-webhook-outbox", daemon=True)
        self._writer_thread.start()
        with self._lock:
            for hook in self._hooks.values():
                self._ensure_worker(hook)

    def _ensure_worker(self, hook: _Hook) -> None:
        if self._writer_thread is None or (hook.worker is not None and hook.worker.is_alive()):
            return
        hook.worker = threading.Thread(
            target=self._deliver_loop, args=(hook,), name=f"arcext-webhook-{hook.name}", daemon=True
        )
        hook.worker.start()

    def _deliver_loop(self, hook: _Hook) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._hooks.get(hook.name) is not hook:
                    return  # deleted
                msg = hook.pending[0] if hook.pending and not hook.disabled else None
                url, sealed = hook.url, hook.sealed
            if msg is None:
                hook.wake.wait(1.0)
                hook.wake.clear()
                continue
            wait = msg.next_at - time.time()
            if wait > 0:
                hook.wake.wait(min(wait, 1.0))
                hook.wake.clear()
                continue
            try:
                self._attempt(hook, msg, url, sealed)
            except Exception:  # never let the worker die
                log.exception("Webhook %s: delivery of %s failed unexpectedly", hook.name, msg.id)
                time.sleep(1.0)

    def _attempt(self, hook: _Hook, msg: Message, url: str, sealed: str) -> None:
        from standardwebhooks import Webhook

        secret = self.box.open(sealed)["secret"]
        stamp = datetime.now(UTC)
        signature = Webhook(secret).sign(msg.id, stamp, msg.body)
        headers = {
            "content-type": "application/cloudevents+json",
            "webhook-id": msg.id,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": signature,
            "user-agent": "arcext-webhooks",
        }
        status: int | None = None
        error: str | None = None
        try:
            response = self._http.post(
                url, data=msg.body.encode(), headers=headers, timeout=self.settings.timeout, allow_redirects=False
            )
            status = response.status_code
            response.close()
        except requests.RequestException as exc:
            error = type(exc).__name__  # never the receiver's text: deliveries are listed through the API
        now = time.time()
        attempts = msg.attempts + 1
        if status is not None and 200 <= status < 300:
            outcome, state = "delivered", "Delivered"
        elif status == 410:
            outcome, state = "gone", "Gone"
        elif now - msg.created >= self.settings.max_age:
            outcome, state = "expired", "Expired"
        else:
            outcome, state = "retrying", "Pending"
        if status is not None and not 200 <= status < 300:
            error = f"HTTP {status}"
        next_at = now + min(self.settings.retry_max, self.settings.retry_base * 2 ** (attempts - 1))
        if state != "Pending":
            next_at = 0.0
        delivered = now if state == "Delivered" else None
        attempt = {
            "id": msg.id,
            "hook": hook.name,
            "attempts": attempts,
            "state": state,
            "status": status,
            "error": error,
            "at": now,
            "next": next_at,
            "delivered": delivered,
        }
        with self._lock:
            if self._hooks.get(hook.name) is not hook:
                return
            self._append([{"a": attempt}])
            msg.attempts, msg.state, msg.last_status, msg.last_error, msg.last_at = attempts, state, status, error, now
            msg.next_at = next_at
            msg.delivered_at = delivered
            if state != "Pending":
                hook.pending.popleft()
                hook.history.append(msg)
            if state == "Gone":
                hook.disabled = True
                hook.disabled_reason = (
                    f"The receiver answered 410 Gone at {attempt_time(now)}; PUT the webhook again to enable it."
                )
                self._save_hooks()
                log.warning("Webhook %s disabled: its receiver answered 410 Gone", hook.name)
            self.metrics.webhook_deliveries.labels(hook.name, outcome).inc()
            if not any(h.pending for h in self._hooks.values()) and self._size > self.settings.compact_bytes:
                self._compact()
        if outcome == "expired":
            log.warning("Webhook %s: gave up on %s (%s) after %d attempts", hook.name, msg.id, msg.type, attempts)

    def wait_delivered(self, timeout: float = 10.0) -> bool:
        """Block until no enabled webhook has a message pending (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.flush()
            with self._lock:
                if not any(h.pending for h in self._hooks.values() if not h.disabled):
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._stop.set()
        self._inbox_wake.set()
        with self._lock:
            hooks = list(self._hooks.values())
        for hook in hooks:
            hook.wake.set()
        if self._writer_thread is not None:
            self._writer_thread.join(timeout=5)
        self.flush()
        for hook in hooks:
            if hook.worker is not None:
                hook.worker.join(timeout=self.settings.timeout + 1)
        with self._lock:
            if self._file is not None:
                self._file.close()
                os.close(self._file.swap(-1))
                self._file = None
        self._http.close()


def attempt_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
