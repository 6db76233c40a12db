"""WebhookService: the registry's operations (the API), events into the outbox (a writer thread, and
``reconcile`` at start), and one delivery worker per webhook. The package docstring has the design."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from ..clock import iso, parse_iso
from ..crypto import SecretBox
from ..metrics import Metrics
from ..records import RolloutRecord
from ..store.base import Record
from ..telemetry import HELD_STATES, ROLLOUT_ACTIONS
from .delivery import GONE, PENDING, Settings, attempt_record, post_signed
from .outbox import Message, OutboxFile, read_outbox, snapshot, wall_stamp
from .payload import cloudevent, event_type
from .registry import Hook, check_events, check_name, check_secret, check_url, new_secret, read_hooks, write_hooks

log = logging.getLogger("arcext.webhooks")


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
        self._hooks: dict[str, Hook] = {}
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
        self._hooks_path = self.directory / "hooks.json"
        self._outbox = OutboxFile(self.directory / "outbox.jsonl")
        self._load()
        if self._hooks or self._outbox.path.exists():
            self._compact()  # a server that never had a webhook writes nothing here
        self._http = requests.Session()
        self._http.trust_env = False  # no proxy settings from the environment reach receivers

    # --- persistence ---------------------------------------------------------------------------
    def _load(self) -> None:
        self._hooks = {hook.name: hook for hook in read_hooks(self._hooks_path)}
        found = read_outbox(self._outbox.path)
        self._seq, self._watermark, self._rollout_states = found.seq, found.watermark, found.rollout_states
        for msg in found.messages:
            hook = self._hooks.get(msg.hook)
            if hook is None:
                continue
            self._known.add((msg.hook, msg.id))
            (hook.pending if msg.state == PENDING else hook.history).append(msg)
        self._any = any(not h.disabled for h in self._hooks.values())

    def _compact(self) -> None:
        """Rewrite the outbox with what it must keep (atomically), then append to it."""
        messages = [msg for hook in self._hooks.values() for msg in [*hook.history, *hook.pending]]
        self._outbox.rewrite(snapshot(self._watermark, self._rollout_states, messages))

    def _append(self, records: list[dict[str, Any]]) -> None:
        if not self._outbox.is_open:
            self._compact()
        self._outbox.append(records)

    def _save_hooks(self) -> None:
        write_hooks(self._hooks_path, self._hooks.values())
        self._any = any(not h.disabled for h in self._hooks.values())

    # --- the registry (the API) ------------------------------------------------------------------
    def put(
        self, name: str, url: str, events: list[str], secret: str | None
    ) -> tuple[dict[str, Any], str | None, bool]:
        """Create or replace a webhook; returns (view, the generated secret or None, created)."""
        check_name(name)
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
                hook = Hook(name, url, events, sealed, created, before=frozenset(self.events_at(created)))
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
                if etype.startswith("rollout."):
                    rollout_states[event["properties"]["rolloutId"]] = event["properties"]["state"]
                else:
                    watermark = max(watermark, event["eventTimestamp"])
                body: str | None = None
                for hook in self._hooks.values():
                    if not self._wants(hook, event, etype):
                        continue
                    if body is None:
                        body = cloudevent(event, etype)
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

    def _wants(self, hook: Hook, event: Record, etype: str) -> bool:
        """Whether ``hook`` gets ``event``: enabled, subscribed, not yet in the outbox, not from before it."""
        if hook.disabled or not hook.wants(etype) or (hook.name, event["eventDataId"]) in self._known:
            return False
        return event["eventTimestamp"] >= hook.created_at and event["eventDataId"] not in hook.before

    def reconcile(
        self,
        events: Callable[[str], Iterator[Record]],
        rollouts: list[RolloutRecord],
        rollout_event: Callable[[RolloutRecord, str], Record],
    ) -> int:
        """At start: put back what a crash kept from the outbox (see the package docstring)."""
        with self._lock:
            if not self._hooks:
                self._rollout_states = {r["id"]: r["state"] for r in rollouts}
                return 0
            since = self._watermark
        found: list[Record] = []
        if since:
            # the outbox's watermark minus a margin (events of concurrent workers are not strictly in time order)
            start = iso(parse_iso(since) - timedelta(hours=1))
            found = [e for e in events(start[:10]) if e["eventTimestamp"] >= start]
        for rollout in rollouts:
            before = self._rollout_states.get(rollout["id"])
            if before == rollout["state"]:
                continue
            if before is None:
                found.append(rollout_event(rollout, "planned"))
            if rollout["state"] != "Active" or before in HELD_STATES:
                found.append(rollout_event(rollout, ROLLOUT_ACTIONS[rollout["state"]]))
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

    def _ensure_worker(self, hook: Hook) -> None:
        if self._writer_thread is None or (hook.worker is not None and hook.worker.is_alive()):
            return
        hook.worker = threading.Thread(
            target=self._deliver_loop, args=(hook,), name=f"arcext-webhook-{hook.name}", daemon=True
        )
        hook.worker.start()

    def _deliver_loop(self, hook: Hook) -> None:
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

    def _attempt(self, hook: Hook, msg: Message, url: str, sealed: str) -> None:
        secret = self.box.open(sealed)["secret"]
        status, error = post_signed(self._http, url, msg, secret, self.settings.timeout)
        now = time.time()
        outcome, attempt = attempt_record(msg, status, error, now, self.settings)
        with self._lock:
            if self._hooks.get(hook.name) is not hook:
                return
            self._append([{"a": attempt}])
            msg.apply_attempt(attempt)
            if msg.state != PENDING:
                hook.pending.popleft()
                hook.history.append(msg)
            if msg.state == GONE:
                hook.disabled = True
                hook.disabled_reason = (
                    f"The receiver answered 410 Gone at {wall_stamp(now)}; PUT the webhook again to enable it."
                )
                self._save_hooks()
                log.warning("Webhook %s disabled: its receiver answered 410 Gone", hook.name)
            self.metrics.webhook_deliveries.labels(hook.name, outcome).inc()
            if not any(h.pending for h in self._hooks.values()) and self._outbox.size > self.settings.compact_bytes:
                self._compact()
        if outcome == "expired":
            log.warning("Webhook %s: gave up on %s (%s) after %d attempts", hook.name, msg.id, msg.type, msg.attempts)

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
            self._outbox.close()
        self._http.close()
