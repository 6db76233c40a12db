"""The activity log: Azure Monitor events for every upgrade attempt, and the $filter queries on them.

Each attempt writes a Started event and an end event (Succeeded or Failed) sharing one
operationId; all attempts of one rollout share its correlationId. Automatic attempts carry the
caller "Azure Regional Service Manager"; manual ones the token's principal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import errors
from .clock import iso, parse_iso
from .ids import EXTENSION_TYPE, MACHINE_TYPE, new_uuid, parse_resource_id
from .records import ActivityEvent
from .store.base import Store

AUTOMATIC_CALLER = "Azure Regional Service Manager"
UPGRADE_OPERATION = "Microsoft.HybridCompute/machines/upgradeExtensions/action"
UPGRADE_OPERATION_DISPLAY = "Upgrade Extensions on Azure Arc machines"
RETENTION = timedelta(days=90)
#: What the engine writes when its own invariant check finds and repairs something; operators filter
#: on it: ``$filter=operationName eq 'Microsoft.HybridCompute/machines/extensions/engineRepair/action'``.
REPAIR_OPERATION = "Microsoft.HybridCompute/machines/extensions/engineRepair/action"
REPAIR_OPERATION_DISPLAY = "Upgrade engine repaired its own state"
ENGINE_CALLER = "arcext upgrade engine"
#: One event per machine each time one of its maintenance windows opens while automatic upgrades on it were
#: waiting for it (written with the change that releases them; docs/operations.md):
#: ``$filter=operationName eq 'Microsoft.Maintenance/maintenanceConfigurations/windowOpened/action'``.
WINDOW_OPENED_OPERATION = "Microsoft.Maintenance/maintenanceConfigurations/windowOpened/action"
WINDOW_OPENED_OPERATION_DISPLAY = "Maintenance window opened with upgrades waiting"

_SUB_STATUS = {
    "Started": ("Accepted", "Accepted (HTTP Status Code: 202)"),
    "Succeeded": ("OK", "OK (HTTP Status Code: 200)"),
    "Failed": ("InternalServerError", "Internal Server Error (HTTP Status Code: 500)"),
}


def upgrade_event(
    *,
    status: str,
    resource_id: str,
    caller: str,
    correlation_id: str,
    operation_id: str,
    now: datetime,
    properties: dict[str, Any],
    level: str | None = None,
) -> ActivityEvent:
    parsed = parse_resource_id(resource_id)
    assert parsed is not None
    key = parsed[0]
    event_id = new_uuid()
    ticks = int(now.timestamp() * 10_000_000) + 621355968000000000
    stamp = iso(now)
    sub_value, sub_text = _SUB_STATUS[status]
    return {
        "authorization": {"action": UPGRADE_OPERATION, "scope": resource_id},
        "caller": caller,
        "channels": "Operation",
        "claims": {},
        "correlationId": correlation_id,
        "description": "",
        "eventDataId": event_id,
        "eventName": {
            "value": "BeginRequest" if status == "Started" else "EndRequest",
            "localizedValue": "Begin request" if status == "Started" else "End request",
        },
        "category": {"value": "Administrative", "localizedValue": "Administrative"},
        "eventTimestamp": stamp,
        "id": f"{resource_id}/events/{event_id}/ticks/{ticks}",
        "level": level or ("Error" if status == "Failed" else "Informational"),
        "operationId": operation_id,
        "operationName": {"value": UPGRADE_OPERATION, "localizedValue": UPGRADE_OPERATION_DISPLAY},
        "resourceGroupName": key.resource_group,
        "resourceProviderName": {"value": "Microsoft.HybridCompute", "localizedValue": "Microsoft.HybridCompute"},
        "resourceType": {"value": EXTENSION_TYPE, "localizedValue": EXTENSION_TYPE},
        "resourceId": resource_id,
        "status": {"value": status, "localizedValue": status},
        "subStatus": {"value": sub_value, "localizedValue": sub_text},
        "submissionTimestamp": stamp,
        "subscriptionId": key.subscription,
        "properties": {k: v for k, v in properties.items() if v is not None},
    }


def repair_event(*, resource_id: str, invariant: str, repair: str, now: datetime, correlation_id: str) -> ActivityEvent:
    """An activity-log event for one repair the engine made to its own state (level Warning)."""
    event = upgrade_event(
        status="Succeeded",
        resource_id=resource_id,
        caller=ENGINE_CALLER,
        correlation_id=correlation_id,
        operation_id=new_uuid(),
        now=now,
        properties={"invariant": invariant, "repair": repair},
        level="Warning",
    )
    event["operationName"] = {"value": REPAIR_OPERATION, "localizedValue": REPAIR_OPERATION_DISPLAY}
    event["authorization"]["action"] = REPAIR_OPERATION
    return event


def window_opened_event(
    *, machine_id: str, now: datetime, windows: list[dict[str, str]], waiting: list[dict[str, Any]]
) -> ActivityEvent:
    """The activity-log event of a maintenance window that opened on a machine with automatic upgrades
    waiting for it: ``windows`` are the open windows (``maintenanceConfigurationId``, ``start``, ``end``),
    ``waiting`` the extensions it releases (``extension``, ``extensionId``, ``targetVersion``, ``rolloutId``,
    ``attempt``)."""
    operation_id = new_uuid()
    event = upgrade_event(
        status="Succeeded",
        resource_id=machine_id,
        caller=AUTOMATIC_CALLER,
        correlation_id=operation_id,
        operation_id=operation_id,
        now=now,
        properties={
            "maintenanceConfigurationIds": [w["maintenanceConfigurationId"] for w in windows],
            "windowStart": min((w["start"] for w in windows), default=None),
            "windowEnd": max((w["end"] for w in windows), default=None),
            "windows": windows,
            "waitingExtensions": waiting,
        },
    )
    event["operationName"] = {"value": WINDOW_OPENED_OPERATION, "localizedValue": WINDOW_OPENED_OPERATION_DISPLAY}
    event["authorization"]["action"] = WINDOW_OPENED_OPERATION
    event["resourceType"] = {"value": MACHINE_TYPE, "localizedValue": MACHINE_TYPE}
    event["eventName"] = {"value": "EndRequest", "localizedValue": "End request"}
    return event


@dataclass(frozen=True)
class EventFilter:
    start: str
    end: str
    resource_group: str | None = None
    resource_uri: str | None = None
    correlation_id: str | None = None
    operation_name: str | None = None
    caller: str | None = None
    status: str | None = None

    def matches(self, event: ActivityEvent) -> bool:
        ts = event["eventTimestamp"]
        if ts < self.start or ts > self.end:
            return False
        if self.resource_group and event["resourceGroupName"].lower() != self.resource_group.lower():
            return False
        if self.resource_uri:
            rid = event["resourceId"].lower()
            want = self.resource_uri.lower().rstrip("/")
            if rid != want and not rid.startswith(want + "/"):
                return False
        if self.correlation_id and event["correlationId"].lower() != self.correlation_id.lower():
            return False
        if self.operation_name and event["operationName"]["value"].lower() != self.operation_name.lower():
            return False
        if self.caller and event["caller"].lower() != self.caller.lower():
            return False
        return not (self.status and event["status"]["value"].lower() != self.status.lower())


_CLAUSE = re.compile(r"^\s*(\w+)\s+(eq|ge|le)\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)
_FIELDS = {
    "eventtimestamp": "eventTimestamp",
    "resourcegroupname": "resource_group",
    "resourceuri": "resource_uri",
    "resourceid": "resource_uri",
    "correlationid": "correlation_id",
    "operationname": "operation_name",
    "caller": "caller",
    "status": "status",
}


def _normalise_time(value: str) -> str:
    try:
        parsed = parse_iso(value)
    except ValueError:
        raise errors.bad_request(
            f"'{value}' is not a valid time; use ISO 8601 such as 2026-11-25T00:00:00Z.", target="$filter"
        ) from None
    return iso(parsed)


def parse_filter(text: str | None) -> EventFilter:
    """Parse Azure Monitor's ``$filter``: clauses joined by ``and``; ``eventTimestamp ge`` is required."""
    if not text:
        raise errors.bad_request(
            "$filter is required and must include \"eventTimestamp ge '<start>'\" "
            "(for example $filter=eventTimestamp ge '2026-11-01T00:00:00Z' and "
            "eventTimestamp le '2026-11-25T00:00:00Z').",
            target="$filter",
        )
    values: dict[str, str] = {}
    start = end = None
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        m = _CLAUSE.match(clause)
        if not m:
            raise errors.bad_request(
                f"Cannot parse the $filter clause \"{clause.strip()}\"; use <field> eq|ge|le '<value>'.",
                target="$filter",
            )
        field, op, value = m.group(1).lower(), m.group(2).lower(), m.group(3).replace("''", "'")
        if field not in _FIELDS:
            raise errors.bad_request(
                f"$filter cannot use the field '{m.group(1)}'; use eventTimestamp, resourceGroupName, resourceUri, "
                "correlationId, operationName, caller or status.",
                target="$filter",
            )
        if field == "eventtimestamp":
            if op == "ge":
                start = _normalise_time(value)
            elif op == "le":
                end = _normalise_time(value)
            else:
                raise errors.bad_request("eventTimestamp takes ge and le, not eq.", target="$filter")
        elif op != "eq":
            raise errors.bad_request(f"'{m.group(1)}' takes eq only.", target="$filter")
        else:
            values[_FIELDS[field]] = value
    if start is None:
        raise errors.bad_request(
            "$filter must include \"eventTimestamp ge '<start>'\"; the activity log is only queried by time span.",
            target="$filter",
        )
    return EventFilter(start=start, end=end or "9999-12-31T23:59:59.999999Z", **values)


class ActivityLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, events: list[ActivityEvent]) -> None:
        self.store.append_events(events)

    def query(self, subscription: str, flt: EventFilter) -> list[ActivityEvent]:
        """Matching events of one subscription, newest first."""
        candidates = self.store.query_events(
            flt.start[:10], flt.end[:10], subscription.lower(), resource_id=flt.resource_uri, caller=flt.caller
        )
        found = [e for e in candidates if flt.matches(e)]
        found.sort(key=lambda e: e["eventTimestamp"], reverse=True)
        return found

    def for_operation(self, operation_id: str, since: str) -> list[ActivityEvent]:
        """The events of one attempt (used when reconciling after a crash)."""
        return list(self.store.iter_events(since[:10], "9999-12-31", ("operationId", operation_id)))

    def prune(self, now: datetime) -> int:
        return self.store.prune_events_before(iso(now - RETENTION)[:10])

    def prepare(self, now: datetime) -> bool:
        """Make room for today's and tomorrow's events ahead of them (PostgreSQL: their day partitions, whose making
        would otherwise stop every write of the log for as long as a transaction reading it ran, store/postgres/
        events.py); False when the store could not now (it tries again later)."""
        return self.store.prepare_event_days([iso(now)[:10], iso(now + timedelta(days=1))[:10]])
