"""Long-running operations: their records and the worker that carries them to a terminal state.

A write that answers 202 first persists the resource in a transitional state (Creating, Updating,
Deleting) that names its operation, then the operation record, then answers. The runner finishes
the work in the background; at start, every operation still InProgress that no other node holds is queued
again, so a crash leaves nothing transitional behind. Nodes sharing a database claim the operations they run
(``OperationClaims``) and take over those of a node gone within a bounded time (docs/multinode.md).
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from .clock import iso
from .ids import MachineKey
from .records import OperationRecord
from .store.base import Store

log = logging.getLogger(__name__)

IN_PROGRESS = "InProgress"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
CANCELED = "Canceled"
TERMINAL = {SUCCEEDED, FAILED, CANCELED}
#: operations the upgrade engine runs (its jobs hold them), never this module's runner
ENGINE_KINDS = frozenset({"extension.upgrade"})


def new_operation(
    kind: str,
    key: MachineKey,
    resource_id: str,
    location: str,
    initiated_by: str,
    now: datetime,
    op_id: str | None = None,
    **extra: Any,
) -> OperationRecord:
    """An InProgress operation on machine ``key`` (or one of its extensions: ``extension=<key>``); ``op_id``: an
    id claimed before (else a new one)."""
    op: OperationRecord = {
        "id": op_id or new_operation_id(),
        "kind": kind,
        "status": IN_PROGRESS,
        "startTime": iso(now),
        "resourceId": resource_id,
        "subscription": key.subscription,
        "machine": [key.subscription, key.resource_group, key.name],
        "location": location,
        "initiatedBy": initiated_by,
    }
    for field, value in extra.items():  # more of OperationRecord's fields (extension=, targets=, ...)
        op[field] = value  # type: ignore[literal-required]
    return op


def new_operation_id() -> str:
    return str(uuid.uuid4())


def load_operation(store: Store, op_id: str) -> OperationRecord | None:
    """The stored operation ``op_id``, typed (the store speaks plain records)."""
    return store.get_operation(op_id)


def save_operation(store: Store, op: OperationRecord) -> None:
    """Store a typed operation record; durable on return."""
    store.put_operation(op)


def status_body(op: Mapping[str, Any]) -> dict[str, Any]:
    """The operationstatus wire shape: {name, status, startTime, endTime?, properties?, error?}."""
    body: dict[str, Any] = {"name": op["id"], "status": op["status"], "startTime": op["startTime"]}
    if op.get("endTime"):
        body["endTime"] = op["endTime"]
    if op["status"] == SUCCEEDED and "result" in op:
        body["properties"] = op["result"]
    if op.get("error"):
        body["error"] = op["error"]
    return body


class OperationClaims(Protocol):
    """Which node carries an operation to its end (docs/multinode.md, "Long-running operations").

    A node claims an operation before it persists the resource's transitional state (a new write) or before it
    resumes one (at start, or taken over from a node gone), runs it only while it holds the claim, and releases
    it once the operation's record is terminal. With one process (the embedded store) every claim is this
    process's own; on PostgreSQL a claim is a lock that dies with its holder's session (cluster/operation_claims.py).
    """

    #: seconds between looks for operations whose holder is gone (None: one process, nothing to take over)
    sweep_interval: float | None
    #: seconds between scans of the machines for writes in flight without a record (None: at start only)
    orphan_interval: float | None

    def claim(self, op_id: str) -> bool:
        """Take ``op_id`` for this node now; False when another node holds it, or this node already does."""
        ...

    def release(self, op_id: str) -> None:
        """Give ``op_id`` back (its record is terminal, or this node does not run it)."""
        ...

    def takeable(self, op_ids: list[str]) -> list[str]:
        """Those of ``op_ids`` no node has held for a whole ``sweep_interval`` (their holder is gone)."""
        ...

    def close(self) -> None:
        """Give every claim back (the node stops)."""
        ...


class LocalClaims:
    """One process: every operation is this process's (a crash's are resumed at the next start)."""

    sweep_interval: float | None = None
    orphan_interval: float | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[str] = set()

    def claim(self, op_id: str) -> bool:
        with self._lock:
            if op_id in self._held:
                return False
            self._held.add(op_id)
            return True

    def release(self, op_id: str) -> None:
        with self._lock:
            self._held.discard(op_id)

    def takeable(self, op_ids: list[str]) -> list[str]:
        return []

    def close(self) -> None:
        with self._lock:
            self._held.clear()


class OperationRunner:
    """One background thread completing operations in submission order.

    ``complete`` is the domain's completion function (the resource service's); it must be
    idempotent, because an operation interrupted by a crash runs again (at the next start, or on another node
    that took it over). Every operation submitted is claimed (``claims``) and released once it ran. With a
    ``claims.sweep_interval`` a second thread looks for InProgress operations whose holder is gone, takes them
    and runs them; ``sweep_hooks`` run after each look (the resources' search for orphaned writes).
    """

    def __init__(self, store: Store, complete: Callable[[str], None], claims: OperationClaims | None = None) -> None:
        self._store = store
        self._complete = complete
        self.claims: OperationClaims = claims if claims is not None else LocalClaims()
        self.sweep_hooks: list[Callable[[], object]] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._running = threading.Event()
        self._running.set()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None

    def start(self, held: Iterable[str] = ()) -> None:
        """Queue the InProgress operations this node can claim (``held``: claimed already, by the start-up's
        search for orphaned writes); the others run on the nodes holding them."""
        mine = set(held)
        for op in sorted(self._store.list_operations(IN_PROGRESS), key=lambda o: o["startTime"]):
            if op["kind"] in ENGINE_KINDS:
                continue
            if op["id"] in mine or self.claims.claim(op["id"]):
                mine.discard(op["id"])
                log.info("Resuming operation %s (%s) interrupted by a restart", op["id"], op["kind"])
                self.submit(op["id"])
            else:
                log.info("Operation %s (%s) runs on another node", op["id"], op["kind"])
        for op_id in mine:  # not InProgress (any more): nothing to run
            self.claims.release(op_id)
        self._thread = threading.Thread(target=self._loop, name="arcext-operations", daemon=True)
        self._thread.start()
        if self.claims.sweep_interval is not None:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="arcext-operations-sweep", daemon=True)
            self._sweeper.start()

    def submit(self, op_id: str) -> None:
        """Run ``op_id``, which this node has claimed; its claim is released once it ran."""
        with self._idle:
            self._pending += 1
        self._queue.put(op_id)

    def take_over(self) -> list[str]:
        """One look for InProgress operations whose holder is gone: claim them, read each again under the claim
        (its holder may have finished it meanwhile) and queue those still InProgress. Returns what it queued."""
        candidates = [o["id"] for o in self._store.list_operations(IN_PROGRESS) if o["kind"] not in ENGINE_KINDS]
        taken: list[str] = []
        for op_id in self.claims.takeable(candidates) if candidates else []:
            if not self.claims.claim(op_id):
                continue
            op = load_operation(self._store, op_id)
            if op is None or op["status"] != IN_PROGRESS:
                self.claims.release(op_id)
                continue
            log.warning("Taking over operation %s (%s): the node that ran it is gone", op_id, op["kind"])
            taken.append(op_id)
            self.submit(op_id)
        return taken

    def pause(self) -> None:
        """Hold operations in flight (tests use this to observe transitional states)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self) -> None:
        self._stopping.set()
        self._running.set()
        self._queue.put(None)
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.claims.close()

    def _sweep_loop(self) -> None:
        interval = self.claims.sweep_interval
        assert interval is not None
        while not self._stopping.wait(interval):
            for look in (self.take_over, *self.sweep_hooks):
                try:
                    look()
                except Exception:  # the database away for a while: the next look tries again
                    log.exception("Looking for operations to take over failed")

    def _loop(self) -> None:
        while True:
            op_id = self._queue.get()
            if op_id is None:
                return
            self._running.wait()
            try:
                self._complete(op_id)
            except Exception:  # keep the worker alive; the operation stays InProgress and is resumed later
                log.exception("Operation %s failed to complete", op_id)
            finally:
                try:
                    self.claims.release(op_id)
                except Exception:
                    log.exception("Could not release operation %s", op_id)
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
