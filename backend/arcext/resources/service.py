"""Machines and their extensions: the ARM resource rules (create, read, update, delete), independent of HTTP.

Every method takes validated request data (the schemas' output) and returns wire-shaped dicts.
protectedSettings are sealed before they reach the store and never appear in a returned dict.
A write that is long-running leaves the resource transitional and hands its operation to the
runner (operations.py); completion.py finishes it, and recovery.py repairs what a crash left at start.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .. import errors
from ..catalog import Catalog, os_mismatch
from ..clock import Clock, iso
from ..crypto import SecretBox
from ..ids import EXTENSION_TYPE, MACHINE_TYPE, MachineKey, validate_extension_name
from ..operations import IN_PROGRESS, SUCCEEDED, OperationClaims, OperationRunner, new_operation, new_operation_id
from ..records import ExtensionRecord, OperationRecord
from ..store.base import MachineDoc, Store, jcopy
from .completion import DriverLookup, OperationCompletion
from .recovery import InFlight, adopt_orphan, orphaned_writes, prune_old_operations, reconcile_orphans


def system_data(existing: dict[str, Any] | None, principal: str, now: datetime) -> dict[str, Any]:
    stamp = iso(now)
    created = existing or {"createdBy": principal, "createdByType": "User", "createdAt": stamp}
    return {
        "createdBy": created["createdBy"],
        "createdByType": created["createdByType"],
        "createdAt": created["createdAt"],
        "lastModifiedBy": principal,
        "lastModifiedByType": "User",
        "lastModifiedAt": stamp,
    }


#: The tenant arcext reports for system-assigned identities (there is no Entra ID behind it).
TENANT_ID = "00000000-0000-0000-0000-00000000a7c0"


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge: nested objects merge key by key; any other value replaces."""
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = jcopy(v)
    return target


def identity_with_ids(requested: dict[str, Any] | None, previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """A SystemAssigned identity gets a principal id (kept across updates) and the arcext tenant."""
    if requested is None:
        return previous
    if requested.get("type") != "SystemAssigned":
        return {"type": requested.get("type", "None"), "tenantId": TENANT_ID}
    keep = previous if previous and previous.get("type") == "SystemAssigned" else {}
    return {
        "type": "SystemAssigned",
        "principalId": keep.get("principalId") or str(uuid.uuid4()),
        "tenantId": TENANT_ID,
    }


def _not_found_machine(key: MachineKey) -> errors.ArmError:
    return errors.resource_not_found(MACHINE_TYPE, key.name, key.resource_group)


def _not_found_extension(key: MachineKey, name: str) -> errors.ArmError:
    return errors.resource_not_found(f"{EXTENSION_TYPE}", f"{key.name}/{name}", key.resource_group)


def _begin_extension_operation(
    kind: str,
    state: str,
    key: MachineKey,
    name: str,
    record: ExtensionRecord,
    principal: str,
    now: datetime,
    op_id: str,
) -> OperationRecord:
    """A new InProgress operation (``op_id``, claimed) on an existing extension, which turns transitional
    (``state``) under it."""
    resource = record["resource"]
    op = new_operation(kind, key, resource["id"], resource["location"], principal, now, op_id, extension=name.lower())
    record["operation"] = op["id"]
    resource["properties"]["provisioningState"] = state
    return op


class ResourceService:
    """The machine and extension resources of one store; long-running writes go to ``runner``."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        clock: Clock,
        drivers: DriverLookup | None = None,
        catalog: Catalog | None = None,
        claims: OperationClaims | None = None,
    ) -> None:
        self.completion = OperationCompletion(store, box, clock, drivers)
        #: Resolves a Major.Minor typeHandlerVersion to the newest published Major.Minor.x (None: stored as given).
        self.catalog = catalog
        #: Called with (machine, extension key) after an install or update succeeded (the engine's hook).
        self.on_extension_ready: Callable[[MachineKey, str], object] | None = None
        self.store = store
        self.box = box
        self.clock = clock
        self.runner = OperationRunner(store, self.complete_operation, claims)
        #: who runs which operation (one process: this one; a cluster: the node holding its claim)
        self.claims = self.runner.claims
        self._orphans: dict[str, MachineKey] = {}  # writes without a record another node may have left
        self._orphan_scan = 0.0  # time.monotonic() of the last scan for them

    @property
    def drivers(self) -> DriverLookup | None:
        """The host driver of a machine (None: no host work, the resource state only)."""
        return self.completion.drivers

    @drivers.setter
    def drivers(self, drivers: DriverLookup | None) -> None:
        self.completion.drivers = drivers

    def start(self, in_flight: list[InFlight] | None = None) -> None:
        """Prune old operation records, give orphaned in-flight writes a record (``in_flight``: found by a scan
        already made, recovery.writes_in_flight), resume every operation no other node holds; on a cluster,
        look for the operations and orphaned writes of nodes gone from then on (``claims``)."""
        prune_old_operations(self.store, self.clock)
        adopted = reconcile_orphans(self.store, self.clock, in_flight, self.claims)
        self._orphan_scan = time.monotonic()
        if self.claims.orphan_interval is not None:
            self.runner.sweep_hooks.append(self.take_over_orphans)
        self.runner.start(adopted)

    def take_over_orphans(self) -> list[str]:
        """One look (on the runner's sweep) for in-flight writes without a record whose writer is gone: the machines
        are scanned every ``claims.orphan_interval`` seconds; an orphan found is taken once no node has held its
        claim for a whole sweep, given its record and run. Returns what it took."""
        interval = self.claims.orphan_interval
        if interval is not None and time.monotonic() - self._orphan_scan >= interval:
            self._orphan_scan = time.monotonic()
            self._orphans = dict((op_id, key) for key, op_id in orphaned_writes(self.store))
        if not self._orphans:
            return []
        taken: list[str] = []
        for op_id in self.claims.takeable(sorted(self._orphans)):
            key = self._orphans.pop(op_id)
            if not self.claims.claim(op_id):
                continue
            if adopt_orphan(self.store, self.clock, key, op_id):
                taken.append(op_id)
                self.runner.submit(op_id)
            else:
                self.claims.release(op_id)
        return taken

    def _claim_new_operation(self) -> str:
        """A new operation id, claimed for this node before anything names it (so no other node's start-up or
        sweep takes the write while it is made). A clash of claim keys takes another id."""
        for _ in range(5):
            op_id = new_operation_id()
            if self.claims.claim(op_id):
                return op_id
        raise RuntimeError("Could not claim a new operation")

    def _persist(
        self, op_id: str, key: MachineKey, change: Callable[[MachineDoc | None], tuple[Any, OperationRecord | None]]
    ) -> OperationRecord | None:
        """A write under the claim of its new operation ``op_id``: the resource (``change``), then the operation's
        record; an InProgress operation goes to the runner, which releases the claim once it ran (any other
        outcome releases it here)."""
        try:
            op: OperationRecord | None = self.store.mutate_machine(key, change)
            if op is not None:
                self.store.put_operation(op)
        except BaseException:
            self.claims.release(op_id)  # a refused write names nothing; a half-made one is an orphan to adopt
            raise
        if op is not None and op["status"] == IN_PROGRESS:
            self.runner.submit(op_id)
        else:
            self.claims.release(op_id)
        return op

    def stop(self) -> None:
        self.runner.stop()

    def complete_operation(self, op_id: str) -> None:
        """Carry an operation to its end (completion.py). Idempotent: safe to run again after a crash."""
        self.completion.complete(op_id, self.on_extension_ready)

    # --- views ----------------------------------------------------------------------------
    @staticmethod
    def extension_view(record: ExtensionRecord) -> dict[str, Any]:
        view: dict[str, Any] = jcopy(record["resource"])
        return view

    def machine_view(self, doc: MachineDoc) -> dict[str, Any]:
        view: dict[str, Any] = jcopy(doc["machine"])
        view.pop("operation", None)
        view.pop("hostConnection", None)  # holds sealed credentials; served by its own API only
        view["resources"] = [self.extension_view(r) for r in self._ordered_extensions(doc)]
        return view

    @staticmethod
    def _ordered_extensions(doc: MachineDoc) -> list[ExtensionRecord]:
        return [doc["extensions"][k] for k in sorted(doc["extensions"])]

    # --- machines ---------------------------------------------------------------------------
    def get_machine(self, key: MachineKey) -> dict[str, Any]:
        doc = self.store.get_machine(key)
        if doc is None:
            raise _not_found_machine(key)
        return self.machine_view(doc)

    def list_machines(
        self, subscription: str, resource_group: str | None, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        docs, token = self.store.list_machines(subscription, resource_group, after, limit)
        return [self.machine_view(d) for d in docs], token

    def put_machine(self, key: MachineKey, body: dict[str, Any], principal: str) -> tuple[dict[str, Any], bool]:
        now = self.clock.now()

        def change(doc: MachineDoc | None) -> tuple[MachineDoc, bool]:
            if doc is not None and doc["machine"].get("operation"):
                raise errors.another_operation_in_progress(key.id, doc["machine"]["operation"])
            previous = doc["machine"] if doc else None
            name = previous["name"] if previous else key.name
            properties = dict(body.get("properties") or {})
            properties["provisioningState"] = "Succeeded"
            properties.setdefault(
                "status", previous["properties"].get("status", "Connected") if previous else "Connected"
            )
            properties["lastStatusChange"] = (
                previous["properties"].get("lastStatusChange", iso(now)) if previous else iso(now)
            )
            properties["errorDetails"] = []
            machine: dict[str, Any] = {
                "id": key.with_name(name).id,
                "name": name,
                "type": MACHINE_TYPE,
                "location": body["location"],
                "systemData": system_data(previous.get("systemData") if previous else None, principal, now),
                "properties": properties,
            }
            for optional in ("tags", "kind"):
                if optional in body:
                    machine[optional] = body[optional]
            if previous and previous.get("hostConnection"):
                machine["hostConnection"] = previous["hostConnection"]  # set through its own API only
            identity = identity_with_ids(body.get("identity"), previous.get("identity") if previous else None)
            if identity is not None:
                machine["identity"] = identity
            new_doc: MachineDoc = {"machine": machine, "extensions": doc["extensions"] if doc else {}}
            return new_doc, doc is None

        created = self.store.mutate_machine(key, change)
        return self.get_machine(key), created

    def patch_machine(self, key: MachineKey, body: dict[str, Any], principal: str) -> dict[str, Any]:
        now = self.clock.now()

        def change(doc: MachineDoc | None) -> tuple[MachineDoc, None]:
            if doc is None:
                raise _not_found_machine(key)
            machine = doc["machine"]
            if machine.get("operation"):
                raise errors.another_operation_in_progress(key.id, machine["operation"])
            for field in ("tags", "kind"):
                if field in body:
                    machine[field] = body[field]
            if "identity" in body:
                machine["identity"] = identity_with_ids(body["identity"], machine.get("identity"))
            merge(machine["properties"], body.get("properties") or {})
            machine["systemData"] = system_data(machine.get("systemData"), principal, now)
            return doc, None

        self.store.mutate_machine(key, change)
        return self.get_machine(key)

    def delete_machine(self, key: MachineKey, principal: str, asynchronous: bool) -> OperationRecord | None:
        """Delete a machine and its extensions; None when there was nothing to delete (204).

        With ``asynchronous`` the machine turns Deleting and an operation finishes the job;
        otherwise (older api-versions, where Machines_Delete is not long-running) it goes at once."""
        now = self.clock.now()
        op_id = self._claim_new_operation()

        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, OperationRecord | None]:
            if doc is None:
                return None, None
            busy = self._busy_operation(doc)
            if busy:
                raise errors.another_operation_in_progress(key.id, busy)
            machine = doc["machine"]
            op = new_operation(
                "machine.delete",
                key,
                machine["id"],
                machine["location"],
                principal,
                now,
                op_id,
            )
            if not asynchronous:
                op["status"], op["endTime"] = SUCCEEDED, iso(now)
                return None, op
            machine["operation"] = op["id"]
            machine["properties"]["provisioningState"] = "Deleting"
            return doc, op

        return self._persist(op_id, key, change)

    @staticmethod
    def _busy_operation(doc: MachineDoc) -> str | None:
        if doc["machine"].get("operation"):
            return str(doc["machine"]["operation"])
        for record in doc["extensions"].values():
            if record.get("operation"):
                return str(record["operation"])
        return None

    # --- extensions ---------------------------------------------------------------------------
    def get_extension(self, key: MachineKey, name: str) -> dict[str, Any]:
        def view(doc: MachineDoc | None) -> dict[str, Any]:
            if doc is None:
                raise _not_found_machine(key)
            record: ExtensionRecord | None = doc["extensions"].get(name.lower())
            if record is None:
                raise _not_found_extension(key, name)
            # the stored resource itself, not a copy (about 10 us of a GET's 400 under load): a store replaces a
            # document or record when it changes, never changes one in place, and the response's dump builds
            # new dicts; the caller only reads it
            return record["resource"]

        return self.store.view_machine(key, view)

    def list_extensions(self, key: MachineKey) -> list[dict[str, Any]]:
        def view(doc: MachineDoc | None) -> list[dict[str, Any]]:
            if doc is None:
                raise _not_found_machine(key)
            return [self.extension_view(r) for r in self._ordered_extensions(doc)]

        return self.store.view_machine(key, view)

    def protected_settings(self, key: MachineKey, name: str) -> dict[str, Any] | None:
        """The decrypted protectedSettings, for host drivers only; never for a response."""
        doc = self.store.get_machine(key)
        record: ExtensionRecord | None = doc["extensions"].get(name.lower()) if doc else None
        sealed = record.get("protected") if record is not None else None
        return self.box.open(sealed) if sealed else None

    def _writable_machine(self, key: MachineKey, doc: MachineDoc | None, action: str) -> dict[str, Any]:
        if doc is None:
            raise errors.parent_resource_not_found(action, "machines/extensions", key.id)
        machine: dict[str, Any] = doc["machine"]
        if machine.get("operation"):
            raise errors.another_operation_in_progress(key.id, machine["operation"])
        return machine

    def _resolve_version(self, key: MachineKey, name: str, props_in: dict[str, Any]) -> None:
        """Azure accepts a Major.Minor typeHandlerVersion ("1.10") and installs the newest published
        Major.Minor.x; properties and instanceView then show that full version ("1.10.3", as the spec's
        Extension_CreateOrUpdate and Extension_Update examples answer), and so does the upgrade engine's idea
        of what is installed. With no such version in the catalog the version is kept as given.

        Runs before the machine's mutation (the catalog is another part of the store); the publisher and
        type are the request's, else the stored extension's."""
        version = props_in.get("typeHandlerVersion")
        if self.catalog is None or not isinstance(version, str) or version.count(".") != 1:
            return
        publisher, type_ = props_in.get("publisher"), props_in.get("type")
        if not (publisher and type_):
            doc = self.store.get_machine(key)
            record: ExtensionRecord | None = doc["extensions"].get(name.lower()) if doc else None
            stored = record["resource"]["properties"] if record else {}
            publisher, type_ = publisher or stored.get("publisher"), type_ or stored.get("type")
        if publisher and type_:
            props_in["typeHandlerVersion"] = self.catalog.newest_of_minor(publisher, type_, version) or version

    def put_extension(self, key: MachineKey, name: str, body: dict[str, Any], principal: str) -> OperationRecord:
        validate_extension_name(name)
        now = self.clock.now()
        props_in = dict(body.get("properties") or {})
        protected = props_in.pop("protectedSettings", None)
        self._resolve_version(key, name, props_in)
        op_id = self._claim_new_operation()

        def change(doc: MachineDoc | None) -> tuple[MachineDoc, OperationRecord]:
            machine = self._writable_machine(key, doc, "write")
            assert doc is not None
            existing: ExtensionRecord | None = doc["extensions"].get(name.lower())
            if existing and existing.get("operation"):
                raise errors.extension_busy(existing)
            if existing is None:
                for field in ("publisher", "type"):
                    if not props_in.get(field):
                        raise errors.invalid_parameter(
                            f"properties.{field} is required to create an extension.", target=f"properties.{field}"
                        )
            display = existing["resource"]["name"] if existing else name
            ext_id = key.with_name(machine["name"]).extension_id(display)
            op = new_operation(
                "extension.create" if existing is None else "extension.update",
                key,
                ext_id,
                body["location"],
                principal,
                now,
                op_id,
                extension=name.lower(),
            )
            properties: dict[str, Any] = {
                "autoUpgradeMinorVersion": False,
                "enableAutomaticUpgrade": True,
                **props_in,
            }
            if existing:
                for carried in ("publisher", "type", "typeHandlerVersion"):
                    if not properties.get(carried) and existing["resource"]["properties"].get(carried):
                        properties[carried] = existing["resource"]["properties"][carried]
                if "instanceView" in existing["resource"]["properties"]:
                    properties["instanceView"] = existing["resource"]["properties"]["instanceView"]
            mismatch = os_mismatch(
                (machine.get("properties") or {}).get("osType"),
                str(properties.get("publisher", "")),
                str(properties.get("type", "")),
            )
            if mismatch:
                raise errors.invalid_parameter(mismatch, target="properties.type")
            properties["provisioningState"] = "Creating" if existing is None else "Updating"
            resource: dict[str, Any] = {
                "id": ext_id,
                "name": display,
                "type": EXTENSION_TYPE,
                "location": body["location"],
                "systemData": system_data(existing["resource"].get("systemData") if existing else None, principal, now),
                "properties": properties,
            }
            if "tags" in body:
                resource["tags"] = body["tags"]
            sealed = existing.get("protected") if existing else None
            if protected is not None:
                sealed = self.box.seal(protected) if protected else None
            record: ExtensionRecord = {"resource": resource, "protected": sealed, "operation": op["id"]}
            if existing:  # what the engine keeps about the extension survives a rewrite of its resource
                for field in ("upgrade", "lkg", "droppedOut", "outcomes"):
                    if field in existing:
                        record[field] = existing[field]  # type: ignore[literal-required]
            doc["extensions"][name.lower()] = record
            return doc, op

        op = self._persist(op_id, key, change)
        assert op is not None
        return op

    def patch_extension(self, key: MachineKey, name: str, body: dict[str, Any], principal: str) -> OperationRecord:
        now = self.clock.now()
        props_in = dict(body.get("properties") or {})
        protected = props_in.pop("protectedSettings", None)
        self._resolve_version(key, name, props_in)
        op_id = self._claim_new_operation()

        def change(doc: MachineDoc | None) -> tuple[MachineDoc, OperationRecord]:
            if doc is None:
                raise _not_found_machine(key)
            self._writable_machine(key, doc, "write")
            record: ExtensionRecord | None = doc["extensions"].get(name.lower())
            if record is None:
                raise _not_found_extension(key, name)
            if record.get("operation"):
                raise errors.extension_busy(record)
            resource = record["resource"]
            resource["properties"].update(props_in)
            if "tags" in body:
                resource["tags"] = body["tags"]
            resource["systemData"] = system_data(resource.get("systemData"), principal, now)
            if protected is not None:
                record["protected"] = self.box.seal(protected) if protected else None
            op = _begin_extension_operation("extension.update", "Updating", key, name, record, principal, now, op_id)
            return doc, op

        op = self._persist(op_id, key, change)
        assert op is not None
        return op

    def delete_extension(self, key: MachineKey, name: str, principal: str) -> OperationRecord | None:
        now = self.clock.now()
        op_id = self._claim_new_operation()

        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, OperationRecord | None]:
            if doc is None:
                return doc, None
            self._writable_machine(key, doc, "delete")
            record: ExtensionRecord | None = doc["extensions"].get(name.lower())
            if record is None:
                return doc, None
            if record.get("operation"):
                raise errors.extension_busy(record)
            op = _begin_extension_operation("extension.delete", "Deleting", key, name, record, principal, now, op_id)
            return doc, op

        return self._persist(op_id, key, change)
