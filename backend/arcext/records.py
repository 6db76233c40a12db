"""The shapes of what arcext stores, as TypedDicts so mypy checks every field.

One *machine document* holds a machine and its extensions (the unit of consistency: see
``store.base.Store.mutate_machine``). Resources themselves (``machine``, an extension's ``resource``)
are kept in the ARM wire shape of Microsoft.HybridCompute and stay ``dict[str, Any]``: their schema
is the OpenAPI document's (``arcext.schemas``), not ours. What arcext adds around them is typed here.

Ground floor: imports nothing from arcext.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

#: An ARM resource in its wire shape (Machine, MachineExtension, ...).
Resource = dict[str, Any]


class UpgradeError(TypedDict, total=False):
    """Why a host step failed (from ``HostDriverError``)."""

    code: str
    message: str
    handlerExitCode: int
    extensionErrorCode: int


class UpgradeJob(TypedDict, total=False):
    """An extension's upgrade job (``ExtensionRecord.upgrade``): queued, waiting to retry, running
    (``step`` upgrade → rollback), or Failed. Attempt fields are dropped when it is queued again."""

    state: str  # Queued | RetryWait | Running | Failed (upgrades.jobs)
    toVersion: str
    dueAt: str
    rolloutId: str | None
    correlationId: str  # the rollout id, or the manual operation's id
    caller: str | None
    critical: bool
    wave: int | None
    waveEntry: int
    retry: bool
    attempt: int
    firstAttemptDone: bool
    manualOperation: str  # the manual upgrade's operation id
    displaced: UpgradeJob  # an automatic job a manual one set aside, restored when it ends
    blockedReason: str
    lastError: UpgradeError
    resourceId: str
    # one attempt's fields
    superseded: str  # the rollout whose unfinished job this attempt took over
    operationId: str
    step: str
    startedAt: str
    fromVersion: str
    lastKnownGoodVersion: str
    endRecorded: bool
    interrupted: bool


class ExtensionRecord(TypedDict):
    """One extension of a machine document."""

    resource: Resource  # the MachineExtension resource, protectedSettings removed
    protected: str | None  # the sealed protectedSettings (crypto.SecretBox), or None
    operation: str | None  # the in-flight create/update/delete operation's id
    upgrade: NotRequired[UpgradeJob | None]
    lkg: NotRequired[str | None]  # last known good typeHandlerVersion: what a rollback returns to
    outcomes: NotRequired[dict[str, str]]  # first-attempt outcome per rollout or manual operation (bounded)
    droppedOut: NotRequired[bool]  # a rollback failed: out of automatic upgrade until reinstalled


class MachineDocument(TypedDict):
    machine: Resource
    extensions: dict[str, ExtensionRecord]  # by lower-case extension name


class OperationRecord(TypedDict, total=False):
    """A long-running operation (``operations.py``); served as operationstatus."""

    id: str
    kind: str
    status: str  # InProgress | Succeeded | Failed | Canceled
    startTime: str
    endTime: str
    resourceId: str
    subscription: str
    machine: list[str]  # [subscription, resource group, name]
    extension: str
    location: str
    initiatedBy: str
    targets: list[Any]
    parameters: dict[str, Any]
    result: Any
    error: dict[str, Any]
    httpStatus: int


class Batch(TypedDict):
    subscription: str
    targets: list[list[str]]  # [subscription, resource group, machine, extension]
    # counted when the batch's wave completes (upgrades.rollouts)
    succeeded: NotRequired[int]
    failed: NotRequired[int]
    skipped: NotRequired[int]
    upToDate: NotRequired[int]  # targets already on the version (counted as succeeded)
    waitingForWindow: NotRequired[list[int]]  # indexes of targets that waited for their maintenance window
    # their results, counted later as they come (the breaker looks again)
    lateSucceeded: NotRequired[int]
    lateFailed: NotRequired[int]
    lateResults: NotRequired[list[int]]


class Wave(TypedDict, total=False):
    index: int
    phase: int
    region: str
    notBefore: str
    state: str  # Pending | Running | Completed
    batches: list[Batch]
    startedAt: str
    completedAt: str


class RolloutRecord(TypedDict, total=False):
    id: str
    publisher: str
    type: str
    version: str
    critical: bool
    createdAt: str
    windowSeconds: float
    state: str  # Active | Paused | Frozen | Completed
    stateReason: str | None
    eligible: int
    waves: list[Wave]
    frozenAt: str
    completedAt: str
    stalled: str | None  # why an Active rollout cannot move, as the engine's last audit found (None: it moves)


#: An activity-log event in the Azure Monitor wire shape (``activity.upgrade_event``): the shape is the
#: Activity Log API's, so it stays a dict like the resources.
ActivityEvent = dict[str, Any]
