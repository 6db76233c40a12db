"""One upgrade attempt of one extension on one machine, step by step.

Every step is written to the extension's record before it is taken (state Running, step
upgrade → rollback), with a Started event before the host is touched and one end event after, so
a crash at any point leaves enough on disk to finish or roll back at the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from ..activity import AUTOMATIC_CALLER, upgrade_event
from ..clock import Clock, iso
from ..crypto import SecretBox
from ..hosts.base import ExtensionSpec, HostDriver, HostDriverError, HostUnreachable, spec_of
from ..ids import MachineKey, new_uuid
from ..records import ExtensionRecord, UpgradeError, UpgradeJob
from ..store.base import MachineDoc, Record, Store
from ..versions import newer
from .job_state import (
    ATTEMPT_FIELDS,
    CANCELLED,
    DROPPED,
    FAILED,
    NOT_RUN,
    POSTPONED,
    QUEUED,
    REQUEUED,
    RETRY_WAIT,
    ROLLED_BACK,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    SUPERSEDED,
    UP_TO_DATE,
    WAITING,
    job_without,
    manual_pending,
    remember_outcome,
    restore_displaced,
)
from .job_state import reinstalled as reinstalled  # resources.py imports it from here
from .policy import ineligibility

log = logging.getLogger(__name__)

T = TypeVar("T")


@runtime_checkable
class OptimisticStore(Protocol):
    """A store that writes an extension's record without locking the machine when nobody changes it meanwhile
    (arcext.store.postgres.PostgresStore.mutate_extension): ``change`` may then run more than once, so it must
    change nothing but the document it is given and ``events`` (which the store puts back before a new run).
    Every change a job makes is of that kind."""

    def mutate_extension(
        self,
        key: MachineKey,
        extension: str,
        change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]],
        events: list[Record] | None = None,
    ) -> T: ...


@dataclass
class JobResult:
    key: MachineKey
    extension: str
    outcome: str
    #: the job as it ended, with the reason it did not run or the host's error (an UpgradeJob and more)
    job: dict[str, Any] = field(default_factory=dict)


def error_fields(error: HostDriverError) -> UpgradeError:
    fields: UpgradeError = {"code": error.code, "message": error.message}
    for attribute in ("exit_code", "wala_code"):
        value = getattr(error, attribute, None)
        if value is not None:
            if attribute == "exit_code":
                fields["handlerExitCode"] = value
            else:
                fields["extensionErrorCode"] = value
    return fields


def _apply_to(doc: MachineDoc | None, ext: str, job: UpgradeJob, fn: Callable[[ExtensionRecord], None]) -> None:
    record = doc["extensions"].get(ext) if doc else None
    if record is not None and (record.get("upgrade") or {}).get("operationId") == job["operationId"]:
        fn(record)


def instance_view(resource: dict[str, Any], version: str, now: datetime, ok: bool, message: str) -> dict[str, Any]:
    props = resource["properties"]
    return {
        "name": resource["name"],
        "type": props.get("type"),
        "typeHandlerVersion": version,
        "status": {
            "code": "0" if ok else "1",
            "level": "Information" if ok else "Error",
            "displayStatus": "Provisioning succeeded" if ok else "Provisioning failed",
            "message": message,
            "time": iso(now),
        },
    }


class JobRunner:
    """Runs claimed jobs. ``may_run`` is the engine's last-moment check (auto-upgrade still on,
    rollout not paused or frozen); it returns a reason to skip, or None."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        clock: Clock,
        drivers: Callable[[MachineKey, MachineDoc], HostDriver | None],
        record_events: Callable[[list[Record]], None],
        retry_delay_seconds: float,
        busy_delay_seconds: float,
        may_run: Callable[[ExtensionRecord, UpgradeJob], str | None],
    ) -> None:
        self.store = store
        self.box = box
        self.clock = clock
        self.drivers = drivers
        self.record_events = record_events
        self.retry_delay = retry_delay_seconds
        self.busy_delay = busy_delay_seconds
        self.may_run = may_run
        #: (operationId, since) -> that attempt's events; set by the engine (used after a crash only)
        self.events_for: Callable[[str, str], list[Record]] | None = None
        self._optimistic = store if isinstance(store, OptimisticStore) else None

    def _write(
        self,
        key: MachineKey,
        ext: str,
        change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]],
        events: list[Record] | None = None,
    ) -> T:
        """A job's change of its extension's record (``change`` may run more than once: see OptimisticStore)."""
        if self._optimistic is not None:
            return self._optimistic.mutate_extension(key, ext, change, events)
        return self.store.mutate_machine(key, change, extension=ext, events=events)

    def _later(self, seconds: float) -> str:
        from datetime import timedelta

        return iso(self.clock.now() + timedelta(seconds=seconds))

    # --- claiming ------------------------------------------------------------------------------
    def claim(
        self, key: MachineKey, ext: str, template: UpgradeJob | None = None
    ) -> tuple[UpgradeJob, MachineDoc] | JobResult:
        """Move a due job to Running (persisted) or explain why it does not run now.

        ``template`` is a wave's job for a target that has none yet: it is checked for eligibility
        and written straight as Running (one write per attempt start, not two)."""
        now = self.clock.now()
        stamp = iso(now)

        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, Any]:
            record = doc["extensions"].get(ext) if doc else None
            job = record.get("upgrade") if record else None
            if template is not None:
                if doc is None or record is None:
                    return doc, JobResult(key, ext, CANCELLED, dict(template))
                if template["correlationId"] in (record.get("outcomes") or {}):
                    return doc, JobResult(key, ext, CANCELLED, dict(template))  # concluded already
                if (job and job["state"] == RUNNING) or manual_pending(job):
                    # one upgrade at a time: the wave claims this target once the other job has ended
                    again = {**template, "dueAt": self._later(self.busy_delay), "waveEntry": True}
                    return doc, JobResult(key, ext, POSTPONED, again)
                current = record["resource"]["properties"].get("typeHandlerVersion")
                if current and not newer(template["toVersion"], current):
                    remember_outcome(record, template, UP_TO_DATE if current == template["toVersion"] else SUPERSEDED)
                    return doc, JobResult(key, ext, CANCELLED, {**template, "reason": UP_TO_DATE})
                fresh: UpgradeJob = {
                    **template,
                    "state": QUEUED,
                    "attempt": 1,
                    "dueAt": stamp,
                    "resourceId": record["resource"]["id"],
                }
                if job and job["state"] in WAITING:
                    if newer(job["toVersion"], template["toVersion"]):
                        remember_outcome(record, template, SUPERSEDED)
                        return doc, JobResult(key, ext, CANCELLED, {**template, "reason": SUPERSEDED})
                    if (
                        job.get("rolloutId")
                        and job["rolloutId"] != template["rolloutId"]
                        and not job.get("firstAttemptDone")
                    ):
                        remember_outcome(record, job, SUPERSEDED)
                        fresh["superseded"] = str(job["rolloutId"])
                    if job.get("displaced"):
                        fresh["displaced"] = job["displaced"]
                    # a job of the same version (a late joiner, a retry) is taken over as the wave's attempt
                why = ineligibility(record, True, template["toVersion"]) or self.may_run(record, fresh)
                if why is not None:
                    remember_outcome(record, template, SKIPPED)
                    return doc, JobResult(key, ext, CANCELLED, {**template, "reason": why})
                record["upgrade"] = job = fresh
            if doc is None or record is None or not job or job["state"] not in WAITING:
                return doc, JobResult(key, ext, CANCELLED)
            if job["dueAt"] > stamp:
                return doc, JobResult(key, ext, POSTPONED, dict(job))
            reason = self.may_run(record, job)
            if reason is not None:
                record["upgrade"] = None
                remember_outcome(record, job, CANCELLED)
                restore_displaced(record, job.get("displaced"))
                return doc, JobResult(key, ext, CANCELLED, {**job, "reason": reason})
            current = record["resource"]["properties"].get("typeHandlerVersion")
            if current and not newer(job["toVersion"], current):
                record["upgrade"] = None
                remember_outcome(record, job, UP_TO_DATE if current == job["toVersion"] else SUPERSEDED)
                restore_displaced(record, job.get("displaced"))
                return doc, JobResult(key, ext, CANCELLED, {**job, "reason": UP_TO_DATE})
            if record.get("operation"):
                job["dueAt"] = self._later(self.busy_delay)
                return doc, JobResult(key, ext, POSTPONED, dict(job))
            props = record["resource"]["properties"]
            job["state"] = RUNNING
            job["step"] = "upgrade"
            job["operationId"] = new_uuid()
            job["fromVersion"] = props.get("typeHandlerVersion")
            job["lastKnownGoodVersion"] = record.get("lkg") or props.get("typeHandlerVersion")
            job["startedAt"] = stamp
            record["operation"] = job["operationId"]
            props["provisioningState"] = "Updating"
            started.append(self._make_event("Started", record["resource"]["id"], job, {}))
            return doc, (dict(job), doc)

        started: list[Record] = []  # the attempt's Started event, durable with the Running job
        claimed: tuple[UpgradeJob, MachineDoc] | JobResult = self._write(key, ext, change, started)
        return claimed

    # --- running -------------------------------------------------------------------------------
    def run(
        self,
        key: MachineKey,
        ext: str,
        driver: HostDriver | None = None,
        template: UpgradeJob | None = None,
        host_done: Callable[[], None] | None = None,
    ) -> JobResult:
        """Run the job. ``host_done`` is called once the host has been worked on for the last time when the job
        then only has its outcome to record (the upgrade succeeded, or nothing ran): a cluster node claims the
        next job for the slot meanwhile (arcext.cluster.node)."""
        claimed = self.claim(key, ext, template)
        if isinstance(claimed, JobResult):
            return claimed
        job, doc = claimed
        record = doc["extensions"][ext]
        spec = spec_of(record, self.box.open)
        try:
            driver = driver or self.drivers(key, doc)
            if driver is None:
                raise HostUnreachable(key.name, "connect", "no host connection is configured for this machine")
            try:
                driver.upgrade(spec, job["fromVersion"], job["toVersion"])
            except HostDriverError as exc:
                if exc.nothing_ran:  # unreachable, refused credentials, no package, blocked by policy
                    if host_done is not None:
                        host_done()
                    return self._not_run(key, ext, job, exc)
                return self._roll_back(key, ext, job, spec, driver, exc)
            if host_done is not None:
                host_done()
            return self._succeeded(key, ext, job)
        finally:
            if driver is not None:
                driver.close()

    def resume(self, key: MachineKey, ext: str, driver: HostDriver | None) -> JobResult:
        """A job found Running at start: ask the host what happened, then finish or roll back."""
        doc = self.store.get_machine(key)
        record = doc["extensions"].get(ext) if doc else None
        job = record.get("upgrade") if record else None
        if doc is None or record is None or not job or job.get("state") != RUNNING:
            return JobResult(key, ext, CANCELLED)
        spec = spec_of(record, self.box.open)
        recorded = self.events_for(job["operationId"], job["startedAt"]) if self.events_for else []
        job["endRecorded"] = any(e["status"]["value"] != "Started" for e in recorded)
        if not any(e["status"]["value"] == "Started" for e in recorded):
            self.record_events([self._make_event("Started", record["resource"]["id"], job, {})])
        interrupted = HostDriverError(key.name, "upgrade", "interrupted by a restart of arcext")
        if driver is None:
            return self._not_run(key, ext, job, HostUnreachable(key.name, "reconcile", "no host connection"))
        try:
            if job.get("step") == "upgrade":
                installed = driver.installed(spec.name)
                if installed and installed.version == job["toVersion"] and installed.state == "enabled":
                    return self._succeeded(key, ext, job)
                if installed and installed.version == job["fromVersion"] and installed.state == "enabled":
                    return self._requeue(key, ext, job, "interrupted by a restart of arcext before the host changed")
                return self._roll_back(key, ext, job, spec, driver, interrupted, interrupted=True)
            # the crash came during a rollback: the upgrade had failed; finish the rollback
            failed = HostDriverError(key.name, "upgrade", (job.get("lastError") or {}).get("message", "failed"))
            failed.code = (job.get("lastError") or {}).get("code", failed.code)
            return self._roll_back(key, ext, job, spec, driver, failed, interrupted=bool(job.get("interrupted")))
        except HostDriverError as exc:
            return self._not_run(key, ext, job, exc)
        finally:
            driver.close()

    def abandon(self, key: MachineKey, ext: str, template: UpgradeJob | None, runs: int) -> JobResult:
        """Give up a job whose runs never ended (each took its process down: a poison job) instead of
        running it again. A Running attempt ends Failed, out of automatic upgrade as after a failed
        rollback (an update or reinstall of the extension brings it back), with its end event; a job that
        never started ends Failed on the record (no Started event, so no end event). Either way the
        rollout counts it failed."""
        error: UpgradeError = {
            "code": "UpgradeJobCrashed",
            "message": (
                f"The upgrade job was given up after {runs} runs that never finished (each stopped the node "
                "running it). The host may be in any state: check it, then update or reinstall the extension."
            ),
        }
        doc = self.store.get_machine(key)
        record = doc["extensions"].get(ext) if doc else None
        job = record.get("upgrade") if record else None
        if job and job.get("state") == RUNNING and job.get("operationId"):
            running = job
            now = self.clock.now()

            def failed(record: ExtensionRecord) -> None:
                resource = record["resource"]
                resource["properties"]["provisioningState"] = "Failed"
                resource["properties"]["instanceView"] = instance_view(
                    resource,
                    str(resource["properties"].get("typeHandlerVersion") or running["toVersion"]),
                    now,
                    False,
                    error["message"],
                )
                record["droppedOut"] = True
                ended = job_without(running, ("step", "endRecorded"))
                ended["state"] = FAILED
                ended["lastError"] = error
                record["upgrade"] = ended

            extra = {"rolledBack": False, "errorCode": error["code"], "message": error["message"]}
            self._conclude(key, ext, running, failed, DROPPED, "Failed", extra)
            return JobResult(key, ext, DROPPED, {**running, "error": error["code"], "message": error["message"]})
        gave_up = dict(template or job or {})

        def never_started(doc: MachineDoc | None) -> tuple[MachineDoc | None, None]:
            record = doc["extensions"].get(ext) if doc else None
            if record is None or not gave_up.get("correlationId"):
                return doc, None
            waiting = record.get("upgrade")
            if waiting and waiting.get("correlationId") == gave_up["correlationId"] and waiting["state"] in WAITING:
                record["upgrade"] = {**waiting, "state": FAILED, "lastError": error}
            remember_outcome(record, cast(UpgradeJob, gave_up), DROPPED)
            return doc, None

        self._write(key, ext, never_started)
        return JobResult(key, ext, DROPPED, {**gave_up, "error": error["code"], "message": error["message"]})

    # --- endings -----------------------------------------------------------------------------
    def _conclude(
        self,
        key: MachineKey,
        ext: str,
        job: UpgradeJob,
        apply: Callable[[ExtensionRecord], None],
        outcome: str | None,
        status: str,
        extra: dict[str, Any],
        level: str | None = None,
    ) -> None:
        """Write the attempt's end state and its end event, durable together (one journal write)."""
        events = (
            [] if job.get("endRecorded") else [self._make_event(status, self._ext_id(key, ext, job), job, extra, level)]
        )

        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, None]:
            record = doc["extensions"].get(ext) if doc else None
            if doc is None or record is None or (record.get("upgrade") or {}).get("operationId") != job["operationId"]:
                return doc, None  # deleted meanwhile
            record["operation"] = None
            apply(record)
            if outcome is not None:
                remember_outcome(record, job, outcome)
            restore_displaced(record, job.get("displaced"))
            return doc, None

        self._write(key, ext, change, events)

    def _succeeded(self, key: MachineKey, ext: str, job: UpgradeJob) -> JobResult:
        now = self.clock.now()

        def apply(record: ExtensionRecord) -> None:
            resource = record["resource"]
            props = resource["properties"]
            props["typeHandlerVersion"] = job["toVersion"]
            props["provisioningState"] = "Succeeded"
            props["instanceView"] = instance_view(
                resource,
                job["toVersion"],
                now,
                True,
                f"Extension upgraded from {job['fromVersion']} to {job['toVersion']}.",
            )
            record["lkg"] = job["toVersion"]
            record["upgrade"] = None

        self._conclude(key, ext, job, apply, SUCCEEDED, "Succeeded", {"rolledBack": False})
        return JobResult(key, ext, SUCCEEDED, dict(job))

    @staticmethod
    def _next_job(job: UpgradeJob) -> UpgradeJob:
        return job_without(job, ATTEMPT_FIELDS)

    def _retry_job(self, job: UpgradeJob, error: HostDriverError) -> UpgradeJob:
        retry = self._next_job(job)
        retry.update(
            {
                "state": RETRY_WAIT,
                "attempt": int(job.get("attempt", 1)) + 1,
                "dueAt": self._later(self.retry_delay),
                "lastError": error_fields(error),
                "firstAttemptDone": True,
            }
        )
        return retry

    def _not_run(self, key: MachineKey, ext: str, job: UpgradeJob, error: HostDriverError) -> JobResult:
        retry = self._retry_job(job, error)

        def apply(record: ExtensionRecord) -> None:
            record["resource"]["properties"]["provisioningState"] = "Succeeded"
            record["upgrade"] = retry if job.get("retry", True) else None

        extra = {
            "rolledBack": False,
            "errorCode": error.code,
            "message": error.message,
            "nextAttemptAt": retry["dueAt"] if job.get("retry", True) else None,
        }
        self._conclude(key, ext, job, apply, NOT_RUN, "Failed", extra, level="Warning")
        return JobResult(key, ext, NOT_RUN, {**job, "error": error.code, "message": error.message})

    def _requeue(self, key: MachineKey, ext: str, job: UpgradeJob, reason: str) -> JobResult:
        """Interrupted by a restart with the host back on its previous version: run the same attempt
        again now. A restart is not an upgrade failure, so nothing counts against the rollout."""
        again = self._next_job(job)
        again.update({"state": QUEUED, "dueAt": iso(self.clock.now())})

        def apply(record: ExtensionRecord) -> None:
            record["resource"]["properties"]["provisioningState"] = "Succeeded"
            record["upgrade"] = again

        extra = {
            "rolledBack": False,
            "errorCode": "InterruptedByRestart",
            "message": reason,
            "nextAttemptAt": again["dueAt"],
        }
        self._conclude(key, ext, job, apply, None, "Failed", extra, level="Warning")
        return JobResult(key, ext, REQUEUED, dict(again))

    def _roll_back(
        self,
        key: MachineKey,
        ext: str,
        job: UpgradeJob,
        spec: ExtensionSpec,
        driver: HostDriver,
        error: HostDriverError,
        interrupted: bool = False,
    ) -> JobResult:
        good = job["lastKnownGoodVersion"]

        def mark(doc: MachineDoc | None) -> tuple[MachineDoc | None, None]:
            record = doc["extensions"].get(ext) if doc else None
            running = record.get("upgrade") if record else None
            if running and running.get("operationId") == job["operationId"]:
                running["step"] = "rollback"
                running["lastError"] = {"code": error.code, "message": error.message}
                running["interrupted"] = interrupted
            return doc, None

        self._write(key, ext, mark)
        log.warning(
            "Upgrade of %s on %s to %s failed (%s); reinstalling %s",
            spec.name,
            key.name,
            job["toVersion"],
            error.code,
            good,
        )
        now = self.clock.now()
        try:
            driver.rollback(spec, job["toVersion"], good)
        except HostDriverError as exc:
            rollback_error = exc

            def dropped(record: ExtensionRecord) -> None:
                resource = record["resource"]
                resource["properties"]["provisioningState"] = "Failed"
                resource["properties"]["typeHandlerVersion"] = job["toVersion"]  # what the host has
                resource["properties"]["instanceView"] = instance_view(
                    resource,
                    job["toVersion"],
                    now,
                    False,
                    f"Upgrade to {job['toVersion']} failed ({error.message}) and reinstalling {good} failed "
                    f"({rollback_error.message}). Remove and reinstall the extension, or update it.",
                )
                record["droppedOut"] = True
                failed = job_without(job, ("step", "endRecorded"))
                failed["state"] = FAILED
                failed["lastError"] = {"code": rollback_error.code, "message": rollback_error.message}
                record["upgrade"] = failed

            extra = {
                "rolledBack": False,
                "errorCode": error.code,
                "message": error.message,
                "rollbackError": rollback_error.message,
            }
            self._conclude(key, ext, job, dropped, DROPPED, "Failed", extra)
            return JobResult(key, ext, DROPPED, {**job, "error": error.code})

        if interrupted:

            def restored(record: ExtensionRecord) -> None:
                resource = record["resource"]
                resource["properties"]["typeHandlerVersion"] = good
                resource["properties"]["instanceView"] = instance_view(
                    resource, good, now, True, f"{good} was reinstalled after a restart interrupted the upgrade."
                )

            # the upgrade never finished because arcext stopped, not because the version failed
            def restore(doc: MachineDoc | None) -> tuple[MachineDoc | None, None]:
                _apply_to(doc, ext, job, restored)
                return doc, None

            self._write(key, ext, restore)
            return self._requeue(key, ext, job, f"{error.message}; {good} was reinstalled")

        retry = self._retry_job(job, error)

        def rolled_back(record: ExtensionRecord) -> None:
            resource = record["resource"]
            props = resource["properties"]
            props["typeHandlerVersion"] = good
            props["provisioningState"] = "Succeeded"
            props["instanceView"] = instance_view(
                resource,
                good,
                now,
                True,
                f"Upgrade to {job['toVersion']} failed ({error.message}); {good} was reinstalled.",
            )
            record["upgrade"] = retry if job.get("retry", True) else None

        extra = {
            "rolledBack": True,
            "errorCode": error.code,
            "message": error.message,
            "nextAttemptAt": retry["dueAt"] if job.get("retry", True) else None,
        }
        self._conclude(key, ext, job, rolled_back, ROLLED_BACK, "Failed", extra)
        return JobResult(key, ext, ROLLED_BACK, {**job, "error": error.code, "message": error.message})

    # --- activity ------------------------------------------------------------------------------
    def _ext_id(self, key: MachineKey, ext: str, job: UpgradeJob) -> str:
        return str(job.get("resourceId") or key.extension_id(ext))

    def _make_event(
        self,
        status: str,
        resource_id: str,
        job: UpgradeJob,
        extra: dict[str, Any],
        level: str | None = None,
    ) -> Record:
        properties = {
            "fromVersion": job.get("fromVersion"),
            "toVersion": job.get("toVersion"),
            "lastKnownGoodVersion": job.get("lastKnownGoodVersion"),
            "attempt": job.get("attempt", 1),
            "critical": job.get("critical"),
            "rolloutId": job.get("rolloutId"),
            "wave": job.get("wave"),
            **extra,
        }
        event = upgrade_event(
            status=status,
            resource_id=resource_id,
            caller=job.get("caller") or AUTOMATIC_CALLER,
            correlation_id=job["correlationId"],
            operation_id=job["operationId"],
            now=self.clock.now(),
            properties=properties,
            level=level,
        )
        return event
