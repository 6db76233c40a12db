"""What a webhook delivers: the event type of an activity-log or rollout event, and its CloudEvents 1.0 JSON
body (structured mode)."""

from __future__ import annotations

from ..activity import WINDOW_OPENED_OPERATION
from ..metrics import ROLLED_BACK, job_outcome
from ..store.base import Record

CE_TYPE_PREFIX = "com.arcext."
CE_SOURCE = "/arcext"


def event_type(event: Record) -> str:
    """The webhook event type of an activity-log event (upgrade attempts, a maintenance window that opened
    with upgrades waiting) or a rollout event."""
    props = event.get("properties") or {}
    if event.get("resourceType", {}).get("value") == "arcext/rollouts":
        return f"rollout.{props['action']}"
    if event.get("operationName", {}).get("value") == WINDOW_OPENED_OPERATION:
        return "maintenanceWindow.opened"
    status = event["status"]["value"]
    if status == "Started":
        return "upgrade.started"
    if status == "Succeeded":
        return "upgrade.succeeded"
    return "upgrade.rolledBack" if job_outcome(event) == ROLLED_BACK or props.get("rolledBack") else "upgrade.failed"


def cloudevent(event: Record, etype: str) -> str:
    """The event as a CloudEvents 1.0 JSON document (the body every interested webhook gets)."""
    # imported on first use: a server without webhooks never pays for them (start-up time matters to
    # the test harness, which starts a server per test module)
    from cloudevents.conversion import to_structured
    from cloudevents.http import CloudEvent

    attributes = {
        "type": CE_TYPE_PREFIX + etype,
        "source": CE_SOURCE + ("/rollouts" if etype.startswith("rollout.") else "/activitylog"),
        "id": event["eventDataId"],
        "time": event["eventTimestamp"],
        "subject": event["resourceId"],
        "datacontenttype": "application/json",
    }
    _headers, body = to_structured(CloudEvent(attributes, event))
    return body.decode() if isinstance(body, bytes) else str(body)
