"""Long-running operations: their records and the worker that carries them to a terminal state.

A write that answers 202 first persists the resource in a transitional state (Creating, Updating,
Deleting) that names its operation, then the operation record, then answers. The runner finishes
the work in the background; at start, every operation still InProgress is queued again, so a crash
leaves nothing transitional behind.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

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


def new_operation(
    kind: str,
    key: MachineKey,
    resource_id: str,
    location: str,
    initiated_by: str,
    now: datetime,
    **extra: Any,
) -> OperationRecord:
    """An InProgress operation on machine ``key`` (or one of its extensions: ``extension=<key>``)."""
    op: OperationRecord = {
        "id": str(uuid.uuid4()),
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


class OperationRunner:
    """One background thread completing operations in submission order.

    ``complete`` is the domain's completion function (the resource service's); it must be
    idempotent, because an operation interrupted by a crash runs again at the next start.
    """

    def __init__(self, store: Store, complete: Callable[[str], None]) -> None:
        self._store = store
        self._complete = complete
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for op in sorted(self._store.list_operations(IN_PROGRESS), key=lambda o: o["startTime"]):
            log.info("Resuming operation %s (%s) interrupted by a restart", op["id"], op["kind"])
            self.submit(op["id"])
        self._thread = threading.Thread(target=self._loop, name="arcext-operations", daemon=True)
        self._thread.start()

    def submit(self, op_id: str) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(op_id)

    def pause(self) -> None:
        """Hold operations in flight (tests use this to observe transitional states)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self) -> None:
        self._running.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            op_id = self._queue.get()
            if op_id is None:
                return
            self._running.wait()
            try:
                self._complete(op_id)
            except Exception:  # keep the worker alive; the operation stays InProgress and resumes at start
                log.exception("Operation %s failed to complete", op_id)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
