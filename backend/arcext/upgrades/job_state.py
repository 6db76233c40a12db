"""The upgrade job on an extension's record: its states, the outcomes of its attempts, and the rules
that change it outside a run (one job at a time; a displaced automatic job comes back; a reinstalled
extension rejoins automatic upgrade). ``jobs.JobRunner`` runs the attempts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from ..records import ExtensionRecord, UpgradeJob
from ..versions import newer

QUEUED = "Queued"
REQUEUED = "Requeued"
#: Fields that belong to one attempt, dropped when the job is queued again.
ATTEMPT_FIELDS = (
    "superseded",
    "operationId",
    "step",
    "startedAt",
    "fromVersion",
    "lastKnownGoodVersion",
    "endRecorded",
    "interrupted",
)
RETRY_WAIT = "RetryWait"
RUNNING = "Running"
FAILED = "Failed"
WAITING = (QUEUED, RETRY_WAIT)

SUCCEEDED = "Succeeded"
ROLLED_BACK = "RolledBack"
NOT_RUN = "NotRun"  # the host could not be reached; nothing changed
DROPPED = "RollbackFailed"
CANCELLED = "Cancelled"
POSTPONED = "Postponed"
#: A wave target that already ran the rollout's version when its turn came (another path got it there):
#: counted as succeeded, not as an attempt of the breaker's arithmetic.
UP_TO_DATE = "UpToDate"
SUPERSEDED = "Superseded"  # a newer version was already queued or installed: skipped
SKIPPED = "Skipped"


def manual_pending(job: UpgradeJob | None) -> bool:
    """A manual upgrade's first attempt, queued: its operation waits for it, nothing may replace it."""
    return bool(job and job.get("manualOperation") and job["state"] == QUEUED and job.get("attempt", 1) == 1)


def restore_displaced(record: ExtensionRecord, displaced: UpgradeJob | None) -> None:
    """One rule orders manual and automatic upgrades of one extension: one at a time, and a newer
    automatic version that a manual upgrade displaced (queued or waiting to retry) comes back once the
    manual job has ended, unless the extension already runs it (or as much is queued already).

    Called with the job that just ended (``displaced`` is what it displaced) after ``record`` holds
    that job's follow-up (nothing, a retry, a Failed job)."""
    if not displaced:
        return
    follow = record.get("upgrade")
    if follow and follow.get("displaced"):
        del follow["displaced"]
    current = record["resource"]["properties"].get("typeHandlerVersion")
    if record.get("droppedOut") or not current or not newer(displaced["toVersion"], current):
        return
    if follow and follow["state"] not in WAITING:
        return
    if follow and not newer(displaced["toVersion"], follow["toVersion"]):
        if follow.get("manualOperation"):
            follow["displaced"] = displaced  # the manual retry goes as high: it keeps the automatic one behind
        return
    record["upgrade"] = job_without(displaced, ("displaced",))


def job_without(job: UpgradeJob, fields: Iterable[str]) -> UpgradeJob:
    """A copy of ``job`` without ``fields``."""
    dropped = set(fields)
    return cast(UpgradeJob, {k: v for k, v in job.items() if k not in dropped})


def reinstalled(record: ExtensionRecord) -> None:
    """A create or update of the extension succeeded: the host installed and enabled the version the
    record shows. One that had dropped out after a failed rollback is healthy again, so its Failed job
    is over and it rejoins automatic upgrade (the engine's ``reconsider`` queues it); an update that
    fails leaves it Failed and out, until one succeeds or it is removed and reinstalled."""
    record.pop("droppedOut", None)
    job = record.get("upgrade")
    if job and job.get("state") == FAILED:
        record["upgrade"] = None


def remember_outcome(record: ExtensionRecord, job: UpgradeJob, outcome: str) -> None:
    """The first attempt's outcome per rollout (or manual operation): the breaker and recovery read it."""
    if job.get("firstAttemptDone"):
        return
    outcomes = record.setdefault("outcomes", {})
    outcomes[job["correlationId"]] = outcome
    while len(outcomes) > 20:
        del outcomes[next(iter(outcomes))]
