"""WebhookService: the registry's operations (the API), events into the outbox (a writer thread, and
``reconcile`` at start), and one delivery worker per webhook, over a storage (storage.py): the data
directory's files, or PostgreSQL tables several nodes share. The package docstring has the design."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import requests

from ..clock import iso, parse_iso
from ..crypto import SecretBox
from ..metrics import Metrics
from ..records import RolloutRecord
from ..store.base import Record
from ..telemetry import HELD_STATES, ROLLOUT_ACTIONS
from .delivery import GONE, Settings, attempt_record, post_signed
from .file_storage import FileStorage
from .outbox import Message, wall_stamp
from .payload import cloudevent, event_type
from .registry import Hook, check_events, check_name, check_secret, check_url, new_secret
from .storage import Outgoing, RolloutChange, WebhookStorage

if TYPE_CHECKING:
    from ..store.postgres.db import Database

log = logging.getLogger("arcext.webhooks")

#: events put in the outbox per statement (a reconcile or catch-up may find many)
CHUNK: Final = 500


class WebhookService:
    def __init__(
        self,
        storage: WebhookStorage,
        box: SecretBox,
        now: Callable[[], datetime],
        metrics: Metrics,
        settings: Settings | None = None,
    ) -> None:
        self.storage = storage
        self.box = box
        self.now = now
        self.metrics = metrics
        self.settings = settings or Settings()
        self._lock = threading.RLock()
        self._hooks: dict[str, Hook] = {hook.name: hook for hook in storage.hooks()}  # the workers' registry
        self._inbox: deque[list[Record]] = deque()
        self._inbox_wake = threading.Event()
        self._catch_ups: deque[Hook] = deque()  # webhooks new to this node (several nodes): events since made
        self._sweep = False  # another node went away: look for the events it recorded but never put in
        self._flush_lock = threading.Lock()  # one flusher at a time: the outbox keeps the order events came in
        self._stop = threading.Event()
        self._writer_thread: threading.Thread | None = None
        self._any = self._listening()  # the fast path: events are dropped at once while this is False
        #: the rollouts' current states (Services sets it): a new webhook hears of changes from now on, and a
        #: restart does not announce rollouts that changed before any webhook existed
        self.rollout_states: Callable[[], dict[str, str]] = dict
        #: the ids of the activity-log events stamped with a given time (Services sets it)
        self.events_at: Callable[[str], list[str]] = lambda stamp: []
        #: the activity log from a day on (reconcile keeps it, for the catch-up of a webhook made on another node)
        self._events: Callable[[str], Iterator[Record]] | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # no proxy settings from the environment reach receivers

    @classmethod
    def open(
        cls,
        data_dir: Path,
        box: SecretBox,
        now: Callable[[], datetime],
        metrics: Metrics,
        settings: Settings | None = None,
        database: Database | None = None,
    ) -> WebhookService:
        """Webhooks in ``data_dir`` (the embedded store), or in ``database``'s tables, which every node on that
        database shares."""
        settings = settings or Settings()
        storage: WebhookStorage
        if database is None:
            storage = FileStorage(data_dir / "webhooks", settings)
        else:
            from .pg_outbox import PgStorage  # psycopg loads only when a database is used

            storage = PgStorage(database, settings)
        return cls(storage, box, now, metrics, settings)

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
            sealed = self.box.seal({"secret": secret})
            created_at = iso(self.now())
            new = self.storage.hook(name) is None
            before = frozenset(self.events_at(created_at)) if new else frozenset()
            draft = Hook(name, url, events, sealed, created_at, before=before)
            stored, created = self.storage.put_hook(draft, self.rollout_states() if new else {})
            hook = self._adopt(stored)
            hook.wake.set()
            return hook.view(self._pending_of(hook)), generated, created

    def get(self, name: str) -> dict[str, Any] | None:
        hook = self.storage.hook(name)
        return hook.view(self._pending_of(hook)) if hook else None

    def list_hooks(self) -> list[dict[str, Any]]:
        counts = self.storage.pending_counts()
        return [h.view(counts.get(h.name, 0)) for h in sorted(self.storage.hooks(), key=lambda h: h.name)]

    def delete(self, name: str) -> bool:
        with self._lock:
            deleted = self.storage.delete_hook(name)
            hook = self._hooks.get(name)
            if hook is not None:
                self._forget(hook)
            return deleted

    def deliveries(self, name: str) -> list[dict[str, Any]] | None:
        """Newest first: pending messages, then finished ones."""
        hook = self.storage.hook(name)
        if hook is None:
            return None
        return [m.view() for m in self.storage.deliveries(hook)]

    def pending_counts(self) -> dict[str, int]:
        return self.storage.pending_counts()

    def _pending_of(self, hook: Hook) -> int:
        return self.storage.pending_counts().get(hook.name, 0)

    # --- this node's copy of the registry (several nodes: re-read when another node changes it) --------
    def _adopt(self, stored: Hook) -> Hook:
        """Take the registry's record of a webhook into this node's copy; returns the copy's webhook."""
        with self._lock:
            hook = self._hooks.get(stored.name)
            if hook is not None and hook.uid == stored.uid:
                if hook is not stored:
                    enabled = hook.disabled and not stored.disabled
                    hook.url, hook.events, hook.sealed = stored.url, stored.events, stored.sealed
                    hook.disabled, hook.disabled_reason = stored.disabled, stored.disabled_reason
                    if enabled:
                        hook.wake.set()
            else:
                if hook is not None:
                    self._forget(hook)  # deleted and made again: another webhook
                hook = self._hooks[stored.name] = stored
                self._ensure_worker(hook)
                if self.storage.shared:
                    # events this node recorded before it knew of the webhook (the writer thread puts them in)
                    self._catch_ups.append(hook)
                    self._inbox_wake.set()
            self._any = self._listening()
            return hook

    def _listening(self) -> bool:
        """Whether events go to the outbox: any enabled webhook; with several nodes any webhook at all (the
        registry's rows decide, and this node's copy of a webhook enabled elsewhere may lag)."""
        if self.storage.shared:
            return bool(self._hooks)
        return any(not h.disabled for h in self._hooks.values())

    def _forget(self, hook: Hook) -> None:
        with self._lock:
            hook.gone = True
            hook.wake.set()
            if self._hooks.get(hook.name) is hook:
                del self._hooks[hook.name]
            self._any = self._listening()

    def refresh(self) -> None:
        """Re-read the registry (another node may have changed it): new webhooks get a worker, deleted ones
        lose theirs, changed ones take the change."""
        with self._lock:  # read under the lock: a put() or delete() of this node's is either before or after
            stored = self.storage.hooks()
            names = {h.name for h in stored}
            for hook in [h for name, h in self._hooks.items() if name not in names]:
                self._forget(hook)
            for hook in stored:
                self._adopt(hook)

    def _wake_all(self) -> None:
        with self._lock:
            for hook in self._hooks.values():
                hook.wake.set()

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
        """Write every queued event to the outbox now (the writer thread's work), then catch new webhooks up."""
        with self._flush_lock:
            batches: list[list[Record]] = []
            while self._inbox:
                batches.append(self._inbox.popleft())
            if batches:
                try:
                    self.enqueue([e for b in batches for e in b])
                except Exception:  # reconcile() at the next start puts back whatever this lost
                    log.exception("Could not write %d events to the webhook outbox", sum(len(b) for b in batches))
            while self._catch_ups:
                hook = self._catch_ups.popleft()
                try:
                    self._catch_up(hook)
                except Exception:  # the next start's reconcile() looks back an hour
                    log.exception("Could not catch webhook %s up", hook.name)
            if self._sweep:
                self._sweep = False
                try:
                    self._put_back_events()
                except Exception:  # the next start's reconcile() looks back an hour
                    log.exception("Could not look for the events a node that left did not put in the outbox")

    def enqueue(self, events: list[Record], only: Hook | None = None) -> int:
        """Put a message per event and interested webhook (``only`` that one, if given) in the outbox
        (durably); returns how many."""
        added = 0
        for first in range(0, len(events), CHUNK):
            added += self._enqueue(events[first : first + CHUNK], only)
        return added

    def _enqueue(self, events: list[Record], only: Hook | None) -> int:
        with self._lock:
            hooks = [only] if only is not None else list(self._hooks.values())
            outgoing: list[Outgoing] = []
            rollouts: list[RolloutChange] = []
            watermark = ""
            for event in events:
                etype = event_type(event)
                if etype.startswith("rollout."):
                    props = event["properties"]
                    rollouts.append(
                        RolloutChange(event["eventDataId"], props["rolloutId"], props["action"], props["state"])
                    )
                else:
                    watermark = max(watermark, event["eventTimestamp"])
                wanting = tuple(h.name for h in hooks if self._wants(h, event, etype))
                if not wanting and not self.storage.shared:  # several nodes: the registry's rows decide
                    continue
                body = cloudevent(event, etype)
                outgoing.append(
                    Outgoing(event["eventDataId"], etype, event["resourceId"], event["eventTimestamp"], body, wanting)
                )
            added = self.storage.add(outgoing, watermark, rollouts, time.time(), only)
            for etype in added:
                self.metrics.webhook_events.labels(etype).inc()
            if added:
                for hook in hooks:
                    hook.wake.set()
            return len(added)

    @staticmethod
    def _wants(hook: Hook, event: Record, etype: str) -> bool:
        """Whether ``hook`` gets ``event``: enabled, subscribed, not from before it."""
        if hook.disabled or not hook.wants(etype):
            return False
        return event["eventTimestamp"] >= hook.created_at and event["eventDataId"] not in hook.before

    def _catch_up(self, hook: Hook) -> None:
        """Put in the activity-log events since ``hook`` was made (on another node, or while this node's copy
        of the registry lagged): whatever this node recorded before it knew of the webhook. Before the start's
        reconcile there is nothing to do: it looks back from the watermark, which is at most the webhook's
        creation."""
        if self._events is None or hook.gone:
            return
        start = hook.created_at
        added = self.enqueue([e for e in self._events(start[:10]) if e["eventTimestamp"] >= start], only=hook)
        if added:
            log.info(
                "Webhook %s: put in %d deliveries of events recorded before this node knew of it", hook.name, added
            )

    def _peer_gone(self) -> None:
        """Another node went away (several nodes): the events it had recorded but not yet put in the outbox
        (a kill -9 between the activity log and the outbox) are put back by the writer thread."""
        self._sweep = True
        self._inbox_wake.set()

    def _put_back_events(self) -> int:
        """Put in the activity-log events from the watermark minus a margin on (events of concurrent workers
        are not strictly in time order); those already in the outbox are left out."""
        if self._events is None:
            return 0
        with self._lock:
            if not self._hooks:
                return 0
        since = self.storage.watermark()
        if not since:
            return 0
        start = iso(parse_iso(since) - timedelta(hours=1))
        added = self.enqueue([e for e in self._events(start[:10]) if e["eventTimestamp"] >= start])
        if added:
            log.info("Put back %d webhook deliveries the outbox was missing", added)
        return added

    def reconcile(
        self,
        events: Callable[[str], Iterator[Record]],
        rollouts: list[RolloutRecord],
        rollout_event: Callable[[RolloutRecord, str], Record],
    ) -> int:
        """At start: put back what a crash kept from the outbox (see the package docstring)."""
        self._events = events
        with self._lock:
            if not self._hooks:
                self.storage.reset_rollout_states({r["id"]: r["state"] for r in rollouts})
                return 0
        added = self._put_back_events()
        announced = self.storage.rollout_states()
        found: list[Record] = []
        for rollout in rollouts:
            before = announced.get(rollout["id"])
            if before == rollout["state"]:
                continue
            if before is None:
                found.append(rollout_event(rollout, "planned"))
            if rollout["state"] != "Active" or before in HELD_STATES:
                found.append(rollout_event(rollout, ROLLOUT_ACTIONS[rollout["state"]]))
        put_back = self.enqueue(found) if found else 0
        if put_back:
            log.info("Announced %d rollout changes the outbox was missing", put_back)
        return added + put_back

    # --- delivery -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._writer_thread = threading.Thread(target=self._writer_loop, name="arcext-webhook-outbox", daemon=True)
        self._writer_thread.start()
        with self._lock:
            for hook in self._hooks.values():
                self._ensure_worker(hook)
        self.storage.watch(self.refresh, self._wake_all, self._peer_gone)

    def _ensure_worker(self, hook: Hook) -> None:
        if self._writer_thread is None or self._stop.is_set() or (hook.worker is not None and hook.worker.is_alive()):
            return
        hook.worker = threading.Thread(
            target=self._deliver_loop, args=(hook,), name=f"arcext-webhook-{hook.name}", daemon=True
        )
        hook.worker.start()

    def _deliver_loop(self, hook: Hook) -> None:
        try:
            while not self._stop.is_set() and not hook.gone:
                try:
                    self._deliver_next(hook)
                except Exception:  # never let the worker die
                    log.exception("Webhook %s: delivery failed unexpectedly", hook.name)
                    self._stop.wait(1.0)
        finally:
            if hook.gone:
                self.storage.release(hook)

    def _deliver_next(self, hook: Hook) -> None:
        """One step of a webhook's worker: wait for work, or deliver its oldest pending message once."""
        if hook.disabled:
            hook.wake.wait(1.0)
            hook.wake.clear()
            return
        if not self.storage.claim(hook):  # another node delivers it: try again later
            self._stop.wait(self.settings.claim_poll)
            return
        msg = self.storage.next_pending(hook)
        if msg is None:
            hook.wake.wait(1.0)
            hook.wake.clear()
            return
        wait = msg.next_at - time.time()
        if wait > 0:
            hook.wake.wait(min(wait, 1.0))
            hook.wake.clear()
            return
        self._attempt(hook, msg)

    def _attempt(self, hook: Hook, msg: Message) -> None:
        with self._lock:
            url, sealed = hook.url, hook.sealed
        secret = self.box.open(sealed)["secret"]
        status, error = post_signed(self._http, url, msg, secret, self.settings.timeout)
        now = time.time()
        outcome, attempt = attempt_record(msg, status, error, now, self.settings)
        if hook.gone:
            return  # deleted meanwhile: its messages are gone
        self.storage.record_attempt(hook, msg, attempt)
        if msg.state == GONE:
            self.storage.disable_hook(
                hook, f"The receiver answered 410 Gone at {wall_stamp(now)}; PUT the webhook again to enable it."
            )
            with self._lock:
                self._any = self._listening()
            log.warning("Webhook %s disabled: its receiver answered 410 Gone", hook.name)
        self.metrics.webhook_deliveries.labels(hook.name, outcome).inc()
        if outcome == "expired":
            log.warning("Webhook %s: gave up on %s (%s) after %d attempts", hook.name, msg.id, msg.type, msg.attempts)

    def wait_delivered(self, timeout: float = 10.0) -> bool:
        """Block until no enabled webhook has a message pending (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.flush()
            counts = self.storage.pending_counts()
            if not any(counts.get(h.name) for h in self.storage.hooks() if not h.disabled):
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
        self.storage.close()
        self._http.close()
