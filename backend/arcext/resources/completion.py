"""Finishing long-running operations: the host's work, then the resource's terminal state.

A write that answers 202 (resources.py) leaves the machine or extension transitional, naming its
operation; ``OperationCompletion.complete`` (run by the OperationRunner of operations.py) asks the
host driver, if the machine has one, to install, reconfigure or remove the extension, then marks the
resource Succeeded (or drops it) and the operation Succeeded; on a failure it marks both Failed and
frees the resource for new writes. It is idempotent: an operation a crash interrupted runs again at
the next start and finds its work done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..clock import Clock, iso
from ..crypto import SecretBox
from ..hosts.base import HostDriver, HostDriverError, spec_of
from ..ids import MachineKey
from ..operations import FAILED, IN_PROGRESS, SUCCEEDED, load_operation, save_operation
from ..records import OperationRecord
from ..store.base import MachineDoc, Store, jcopy
from ..upgrades.jobs import reinstalled

log = logging.getLogger(__name__)

#: A machine's host driver (None: the machine has none, only the resource state changes).
DriverLookup = Callable[[MachineKey, MachineDoc], HostDriver | None]

#: The kinds whose host work is an install, reconfiguration or removal of one extension.
EXTENSION_KINDS = ("extension.create", "extension.update", "extension.delete")


class OperationCompletion:
    """Carries create/update/delete operations of machines and extensions to their end."""

    def __init__(self, store: Store, box: SecretBox, clock: Clock, drivers: DriverLookup | None = None) -> None:
        self.store = store
        self.box = box
        self.clock = clock
        self.drivers = drivers

    def complete(self, op_id: str, on_extension_ready: Callable[[MachineKey, str], object] | None = None) -> None:
        """Carry an operation to its end. Idempotent: safe to run again after a crash.

        ``on_extension_ready`` (the upgrade engine's hook) hears of every finished create or update."""
        op = load_operation(self.store, op_id)
        if op is None or op["status"] != IN_PROGRESS or op["kind"] == "extension.upgrade":
            return  # upgrades belong to the engine
        key = MachineKey(*op["machine"])
        try:
            self._host_work(op, key)
            result = self._apply(op, key)
        except HostDriverError as exc:
            log.warning("Operation %s (%s) failed on the host: %s", op_id, op["kind"], exc)
            self._fail(key, op, {"code": exc.code, "message": f"The host reported: {exc.message}"})
            op["httpStatus"] = 502 if exc.retryable else 400
        except Exception as exc:  # a bug or a store failure: report it on the operation, never hang
            log.exception("Operation %s (%s) failed", op_id, op["kind"])
            self._fail(key, op, {"code": "InternalOperationError", "message": f"The operation failed: {exc}"})
        else:
            op.update({"status": SUCCEEDED, "endTime": iso(self.clock.now())})
            if result is not None:
                op["result"] = result
        save_operation(self.store, op)
        # also after a failure on the host: the record keeps what the request set (say automatic upgrade
        # turned on), and the engine decides from the record, as its self-check would
        if op["kind"] in ("extension.create", "extension.update") and on_extension_ready is not None:
            try:
                on_extension_ready(key, op["extension"])
            except Exception:  # the engine's bookkeeping must not fail a finished operation
                log.exception("Could not reconsider %s on %s for upgrades", op["extension"], key.name)

    def _host_work(self, op: OperationRecord, key: MachineKey) -> None:
        """Install, reconfigure or remove the extension on the host, when the machine has a driver."""
        if self.drivers is None or op["kind"] not in EXTENSION_KINDS:
            return
        doc = self.store.get_machine(key)
        record = doc["extensions"].get(op["extension"]) if doc else None
        if doc is None or record is None or record.get("operation") != op["id"]:
            return
        driver = self.drivers(key, doc)
        if driver is None:
            return
        resource = record["resource"]
        try:
            if op["kind"] == "extension.delete":
                driver.remove(resource["name"])
            else:
                driver.install(spec_of(record, self.box.open), resource["properties"].get("typeHandlerVersion") or "")
        finally:
            driver.close()

    def _apply(self, op: OperationRecord, key: MachineKey) -> dict[str, Any] | None:
        """The resource's terminal state: a deleted machine goes, an extension turns Succeeded or goes."""
        now = self.clock.now()
        kind = op["kind"]
        if kind == "machine.delete":

            def drop(doc: MachineDoc | None) -> tuple[MachineDoc | None, None]:
                if doc is not None and doc["machine"].get("operation") not in (None, op["id"]):
                    return doc, None
                return None, None

            self.store.mutate_machine(key, drop)
            return None

        ext = op["extension"]

        def finish(doc: MachineDoc | None) -> tuple[MachineDoc | None, dict[str, Any] | None]:
            record = doc["extensions"].get(ext) if doc else None
            if doc is None or record is None or record.get("operation") != op["id"]:
                return doc, None  # already finished before a restart, or never written
            if kind == "extension.delete":
                del doc["extensions"][ext]
                return doc, None
            resource = record["resource"]
            props = resource["properties"]
            props["provisioningState"] = "Succeeded"
            props["instanceView"] = {
                "name": resource["name"],
                "type": props.get("type"),
                "typeHandlerVersion": props.get("typeHandlerVersion") or "",  # a string, as the spec says
                "status": {
                    "code": "0",
                    "level": "Information",
                    "displayStatus": "Provisioning succeeded",
                    "message": "Extension Message: Default configuration is in effect.",
                    "time": iso(now),
                },
            }
            record["operation"] = None
            record["lkg"] = props.get("typeHandlerVersion")
            reinstalled(record)
            return doc, jcopy(resource)

        return self.store.mutate_machine(key, finish)

    def _fail(self, key: MachineKey, op: OperationRecord, error: dict[str, Any]) -> None:
        op.update({"status": FAILED, "endTime": iso(self.clock.now()), "error": error})
        self._release(key, op)

    def _release(self, key: MachineKey, op: OperationRecord) -> None:
        """After a failed completion: mark the resource Failed and free it for new writes."""

        def release(doc: MachineDoc | None) -> tuple[MachineDoc | None, None]:
            if doc is None:
                return doc, None
            if doc["machine"].get("operation") == op["id"]:
                doc["machine"]["operation"] = None
                doc["machine"]["properties"]["provisioningState"] = "Failed"
            record = doc["extensions"].get(op.get("extension", ""))
            if record and record.get("operation") == op["id"]:
                record["operation"] = None
                record["resource"]["properties"]["provisioningState"] = "Failed"
            return doc, None

        try:
            self.store.mutate_machine(key, release)
        except Exception:
            log.exception("Could not release %s after operation %s failed", key.id, op["id"])
