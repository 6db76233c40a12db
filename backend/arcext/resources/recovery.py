"""Start-up recovery of operations: old records pruned, orphaned in-flight writes given a record.

A write persists the resource in a transitional state naming its operation before it writes the
operation record (resources.py). A crash between the two leaves a resource that names an operation
no record describes; at start (and, on a cluster, when another node's sweep finds it) such an operation gets
its record back (InProgress) from the node that claims it, so the runner finishes it with the others
(operations.py). The client was never answered, so the change is
finished as if it had been acknowledged: the data is already durable and finishing is the least
surprising outcome.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from ..clock import Clock, iso
from ..ids import MachineKey, parse_resource_id
from ..operations import LocalClaims, OperationClaims, new_operation
from ..store.base import MachineDoc, Store, jcopy

log = logging.getLogger(__name__)

#: How long finished operation records are kept (their operationstatus URLs answer until then).
OPERATION_RETENTION = timedelta(days=7)


def prune_old_operations(store: Store, clock: Clock) -> None:
    """Remove finished operation records older than OPERATION_RETENTION."""
    cutoff = iso(clock.now() - OPERATION_RETENTION)
    removed = store.delete_operations_before(cutoff)
    if removed:
        log.info("Removed %d operation records older than %s", removed, cutoff)


#: a machine document with the operations its resources name as in flight
InFlight = tuple[MachineDoc, list[str]]


def writes_in_flight(doc: MachineDoc) -> InFlight | None:
    """The operations a machine's resources name as in flight (a projection for ``Store.project_machines``:
    services.py lets it ride on the upgrade engine's scan at start, so the fleet is read once). Upgrade
    operations (the extension's upgrade job names them) belong to the upgrade engine."""
    pending: list[str] = []
    if doc["machine"].get("operation"):
        pending.append(doc["machine"]["operation"])
    pending += [
        operation
        for r in doc["extensions"].values()
        if (operation := r.get("operation")) and operation != (r.get("upgrade") or {}).get("operationId")
    ]
    return (jcopy(doc), pending) if pending else None


def orphaned_writes(store: Store, found: list[InFlight] | None = None) -> list[tuple[MachineKey, str]]:
    """Every in-flight operation a resource names but the store holds no record of, with its machine.

    ``found``: what ``writes_in_flight`` projected from a scan already made (else the machines are scanned)."""
    orphans: list[tuple[MachineKey, str]] = []
    scanned = found if found is not None else store.project_machines_naming_operations(writes_in_flight)
    for doc, pending in scanned:
        for op_id in pending:
            if store.get_operation(op_id) is None:
                orphans.append((_key_of(doc), op_id))
    return orphans


def reconcile_orphans(
    store: Store, clock: Clock, found: list[InFlight] | None = None, claims: OperationClaims | None = None
) -> list[str]:
    """Give a record back to every in-flight operation a resource names but the store does not hold, and that
    this node can claim (a write another node is making holds its claim until its record is written).

    Returns the operations given a record: still claimed, for the caller to run."""
    claims = claims if claims is not None else LocalClaims()
    adopted: list[str] = []
    for key, op_id in orphaned_writes(store, found):
        if not claims.claim(op_id):
            continue
        if adopt_orphan(store, clock, key, op_id):
            adopted.append(op_id)
        else:
            claims.release(op_id)
    return adopted


def adopt_orphan(store: Store, clock: Clock, key: MachineKey, op_id: str) -> bool:
    """Under the claim of ``op_id``: read the machine again and, if a resource still names the operation and it
    still has no record, write its record (InProgress). False: nothing to adopt (finished or recorded meanwhile)."""
    doc = store.get_machine(key)
    pending = writes_in_flight(doc) if doc is not None else None
    if doc is None or pending is None or op_id not in pending[1] or store.get_operation(op_id) is not None:
        return False
    log.warning("Found operation %s on %s without a record; finishing it", op_id, doc["machine"]["id"])
    _recreate_operation(store, clock, doc, op_id)
    return True


def _key_of(doc: MachineDoc) -> MachineKey:
    parsed = parse_resource_id(doc["machine"]["id"])
    assert parsed is not None
    return parsed[0]


def _recreate_operation(store: Store, clock: Clock, doc: MachineDoc, op_id: str) -> None:
    """An InProgress record for ``op_id``, its kind read from the resource's transitional state."""
    key = _key_of(doc)
    now = clock.now()
    machine = doc["machine"]
    if machine.get("operation") == op_id:
        op = new_operation("machine.delete", key, machine["id"], machine["location"], "arcext", now)
    else:
        ext, record = next((k, r) for k, r in doc["extensions"].items() if r.get("operation") == op_id)
        resource = record["resource"]
        state = resource["properties"].get("provisioningState")
        kind = {"Deleting": "extension.delete", "Creating": "extension.create"}.get(state, "extension.update")
        op = new_operation(kind, key, resource["id"], resource["location"], "arcext", now, extension=ext)
    op["id"] = op_id
    store.put_operation(op)
