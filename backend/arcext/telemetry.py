"""What the operations surface watches, taken from two places only (no hooks inside the engine):

* the activity log's appends (``EventLog.listener``): every upgrade attempt's Started and end events,
  handed over once they are durable; they feed the job metrics, one structured log line per step and
  the webhook outbox (which also gets the log's other events, such as a maintenance window opening);
* rollout writes (``TinyDBStore.rollout_listener``): a rollout's state changes become rollout events
  (planned, frozen with the breaker's figures, paused, resumed, completed);

plus the host operations the engine's driver resolver reports (arcext.host_timing wraps it), which
become ``arcext_host_operation_duration_seconds`` and a log line each.

Everything here runs on the caller's thread and is cheap: counters, a dict, and a queue append
for the webhook dispatcher (which does the serializing, the disk writes and the network).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .activity import AUTOMATIC_CALLER, UPGRADE_OPERATION
from .clock import iso
from .host_timing import InstrumentedResolver
from .hosts.base import HostDriver
from .ids import MachineKey, new_uuid, parse_resource_id
from .metrics import Metrics, job_outcome
from .records import RolloutRecord
from .store.base import MachineDoc, Record

step_log = logging.getLogger("arcext.upgrades.steps")

ROLLOUT_OPERATION = "arcext/rollouts/{}"
ROLLOUT_ACTIONS = {"Active": "resumed", "Paused": "paused", "Frozen": "frozen", "Completed": "completed"}
HELD_STATES = ("Paused", "Frozen")

EventSink = Callable[[list[Record]], None]


def upgrade_step(event: Record) -> str:
    """started, succeeded, rolled_back, failed, timed_out, not_run or interrupted."""
    return job_outcome(event) or "started"


class Telemetry:
    def __init__(
        self, metrics: Metrics, now: Callable[[], datetime], rollouts: list[RolloutRecord], breaker_fraction: float
    ) -> None:
        self.metrics = metrics
        self.now = now
        self.breaker_fraction = breaker_fraction
        self.event_sinks: list[EventSink] = []
        self._jobs: dict[str, list[str]] = {}  # extension id (lower) -> [rollout id, correlation id, driver]
        self._lock = threading.Lock()
        self._rollout_states = {r["id"]: r["state"] for r in rollouts}

    # --- activity-log events ------------------------------------------------------------------
    def on_events(self, events: list[Record]) -> None:
        logging_on = step_log.isEnabledFor(logging.INFO)
        for event in events:
            if event["operationName"]["value"] != UPGRADE_OPERATION:
                continue  # not an upgrade step (a maintenance window opening, an engine repair): webhooks only
            key = event["resourceId"].lower()
            props = event.get("properties") or {}
            outcome = job_outcome(event)
            if outcome is None:
                self.metrics.upgrades_started.inc()
                with self._lock:
                    self._jobs[key] = [props.get("rolloutId") or "", event["correlationId"], "none"]
                driver = ""
            else:
                with self._lock:
                    job = self._jobs.pop(key, None)
                driver = job[2] if job else "none"
                self.metrics.job_ended(outcome, driver)
            if logging_on:
                self._log_step(event, outcome or "started", driver)
        for sink in self.event_sinks:
            sink(events)

    @staticmethod
    def _log_step(event: Record, step: str, driver: str) -> None:
        props = event.get("properties") or {}
        parsed = parse_resource_id(event["resourceId"])
        machine, extension = (parsed[0].name, parsed[1]) if parsed else ("", None)
        fields = {
            "event": "upgrade.step",
            "step": step,
            "status": event["status"]["value"],
            "rolloutId": props.get("rolloutId"),
            "machine": machine,
            "extension": extension,
            "resourceId": event["resourceId"],
            "x-ms-correlation-request-id": event["correlationId"],
            "operationId": event["operationId"],
            "caller": event["caller"],
            "fromVersion": props.get("fromVersion"),
            "toVersion": props.get("toVersion"),
            "attempt": props.get("attempt"),
            "errorCode": props.get("errorCode"),
            "driver": driver or None,
        }
        level = logging.WARNING if event.get("level") in ("Error", "Warning") else logging.INFO
        step_log.log(
            level,
            "upgrade %s: %s on %s %s -> %s (rollout %s)",
            step,
            extension,
            machine,
            props.get("fromVersion"),
            props.get("toVersion"),
            props.get("rolloutId") or "-",
            extra={"fields": {k: v for k, v in fields.items() if v is not None}},
        )

    # --- host operations ---------------------------------------------------------------------------
    def host_operation(
        self, driver: str, step: str, key: MachineKey, extension: str, seconds: float, error: str | None
    ) -> None:
        self.metrics.host_operation(driver, step, seconds, error)
        ext_id = key.extension_id(extension).lower()
        with self._lock:
            job = self._jobs.get(ext_id)
            if job is not None:
                job[2] = driver
        if step_log.isEnabledFor(logging.INFO):
            fields = {
                "event": "host.operation",
                "step": step,
                "driver": driver,
                "machine": key.name,
                "extension": extension,
                "rolloutId": (job[0] or None) if job else None,
                "x-ms-correlation-request-id": job[1] if job else None,
                "durationMs": round(seconds * 1000, 3),
                "errorCode": error,
            }
            step_log.log(
                logging.INFO if error is None else logging.WARNING,
                "host %s %s of %s on %s took %.1f ms%s",
                driver,
                step,
                extension,
                key.name,
                seconds * 1000,
                f" and failed ({error})" if error else "",
                extra={"fields": {k: v for k, v in fields.items() if v is not None}},
            )

    def instrument(self, resolver: Callable[[MachineKey, MachineDoc], HostDriver | None]) -> InstrumentedResolver:
        """The engine's driver resolver with every host operation timed into :meth:`host_operation`."""
        return InstrumentedResolver(resolver, self.host_operation)

    # --- rollouts ------------------------------------------------------------------------------------
    def on_rollout(self, rollout: RolloutRecord) -> None:
        state = rollout["state"]
        with self._lock:
            before = self._rollout_states.get(rollout["id"])
            if before == state:
                return
            self._rollout_states[rollout["id"]] = state
        events: list[Record] = []
        if before is None:
            events.append(self.rollout_event(rollout, "planned"))
            if state == "Completed":
                events.append(self.rollout_event(rollout, "completed"))
        elif state == "Active" and before not in HELD_STATES:
            return
        else:
            events.append(self.rollout_event(rollout, ROLLOUT_ACTIONS[state]))
        for event in events:
            if step_log.isEnabledFor(logging.INFO):
                step_log.info(
                    "rollout %s %s (%s.%s %s)",
                    rollout["id"],
                    event["properties"]["action"],
                    rollout["publisher"],
                    rollout["type"],
                    rollout["version"],
                    extra={
                        "fields": {
                            "event": "rollout." + event["properties"]["action"],
                            "rolloutId": rollout["id"],
                            "state": state,
                            "stateReason": rollout.get("stateReason"),
                            "x-ms-correlation-request-id": rollout["id"],
                        }
                    },
                )
        for sink in self.event_sinks:
            sink(events)

    def rollout_event(self, rollout: RolloutRecord, action: str) -> Record:
        """A rollout's change of state in the shape of an activity-log event (Azure Monitor's fields)."""
        now = self.now()
        stamp = iso(now)
        event_id = new_uuid()
        waves = rollout.get("waves") or []
        counts = {
            k: sum(int(b.get(k, 0)) for w in waves for b in w["batches"])  # type: ignore[call-overload]
            for k in ("succeeded", "failed", "skipped")
        }
        remaining = sum(len(b.get("targets") or ()) for w in waves if w["state"] != "Completed" for b in w["batches"])
        properties: dict[str, Any] = {
            "action": action,
            "rolloutId": rollout["id"],
            "publisher": rollout["publisher"],
            "type": rollout["type"],
            "version": rollout["version"],
            "critical": rollout.get("critical", False),
            "state": rollout["state"],
            "stateReason": rollout.get("stateReason"),
            "eligible": rollout.get("eligible", 0),
            "waves": len(waves),
            "counts": counts,
            "remaining": remaining,
        }
        if action == "frozen":
            properties["breaker"] = {
                "thresholdPercent": round(self.breaker_fraction * 100, 3),
                "batches": [
                    {
                        "wave": w["index"],
                        "region": w["region"],
                        "subscription": b["subscription"],
                        "size": len(b.get("targets") or ()),
                        **{k: b.get(k, 0) for k in ("succeeded", "failed", "skipped")},
                        # of which late: targets that waited for their maintenance window and ran after the wave
                        **(
                            {"late": {"succeeded": b.get("lateSucceeded", 0), "failed": b["lateFailed"]}}
                            if b.get("lateFailed")
                            else {}
                        ),
                    }
                    for w in waves
                    if w["state"] == "Completed"
                    for b in w["batches"]
                    if b.get("failed")
                ],
            }
        resource_id = f"/arcext/v1/rollouts/{rollout['id']}"
        status = "Failed" if action == "frozen" else "Succeeded"
        return {
            "authorization": {"action": ROLLOUT_OPERATION.format("write"), "scope": resource_id},
            "caller": AUTOMATIC_CALLER,
            "channels": "Operation",
            "claims": {},
            "correlationId": rollout["id"],
            "description": rollout.get("stateReason") or "",
            "eventDataId": event_id,
            "eventName": {"value": "EndRequest", "localizedValue": "End request"},
            "category": {"value": "Administrative", "localizedValue": "Administrative"},
            "eventTimestamp": stamp,
            "id": f"{resource_id}/events/{event_id}",
            "level": "Warning" if action == "frozen" else "Informational",
            "operationId": rollout["id"],
            "operationName": {"value": ROLLOUT_OPERATION.format(action), "localizedValue": f"Rollout {action}"},
            "resourceProviderName": {"value": "arcext", "localizedValue": "arcext"},
            "resourceType": {"value": "arcext/rollouts", "localizedValue": "arcext/rollouts"},
            "resourceId": resource_id,
            "status": {"value": status, "localizedValue": status},
            "subStatus": {"value": "", "localizedValue": ""},
            "submissionTimestamp": stamp,
            "properties": properties,
        }
