"""Activity log: the Azure portal's recipe for upgrade history, over ``ActivityLog.query``.

Filters as the Azure portal names them: Subscription, Timespan, Resource group, Operation
("Upgrade Extensions on Azure Arc machines"), Event initiated by ("Azure Regional Service
Manager" for automatic attempts, the token's principal for manual ones), Status; a machine's
Activity log link adds its resource. Visibility follows the API's activity-log rule: readable
from any scope inside the subscription, and only events on resources inside the token's scope.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Response, abort, render_template, request, url_for

from .. import errors
from ..activity import AUTOMATIC_CALLER, RETENTION, UPGRADE_OPERATION, UPGRADE_OPERATION_DISPLAY, EventFilter
from ..auth import Principal, scope_contains
from ..clock import iso, parse_iso
from ..ids import parse_resource_id
from ..request_context import services
from ..store.base import Record
from . import security
from .blueprint import bp
from .machines import visible_groups

TIMESPANS: dict[str, tuple[str, timedelta | None]] = {
    "1h": ("Last hour", timedelta(hours=1)),
    "6h": ("Last 6 hours", timedelta(hours=6)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last week", timedelta(days=7)),
    "30d": ("Last month", timedelta(days=30)),
    "90d": ("Last 3 months", RETENTION),
    "custom": ("Custom", None),
}
DEFAULT_TIMESPAN = "7d"
OPERATIONS = {UPGRADE_OPERATION: f"{UPGRADE_OPERATION_DISPLAY} ({UPGRADE_OPERATION})"}
STATUSES = ("Started", "Succeeded", "Failed")
SHOWN = 500

CSV_COLUMNS = (
    "Correlation id",
    "Operation name",
    "Status",
    "Event category",
    "Level",
    "Time",
    "Subscription",
    "Event initiated by",
    "Resource type",
    "Resource group",
    "Resource",
    "Resource id",
    "From version",
    "To version",
    "Last known good version",
    "Attempt",
    "Message",
    "Operation id",
    "Event id",
)


@dataclass
class Query:
    subscription: str | None
    timespan: str
    start: str
    end: str
    operation: str = ""
    caller: str = ""
    resource_group: str = ""
    resource: str = ""
    status: str = ""
    correlation_id: str = ""
    subscriptions: list[str] = field(default_factory=list)

    def event_filter(self) -> EventFilter:
        return EventFilter(
            start=self.start,
            end=self.end,
            resource_group=self.resource_group or None,
            resource_uri=self.resource or None,
            correlation_id=self.correlation_id or None,
            operation_name=self.operation or None,
            caller=self.caller or None,
            status=self.status or None,
        )

    def params(self, **override: str) -> str:
        values = {
            "subscription": self.subscription or "",
            "timespan": self.timespan,
            "operation": self.operation,
            "caller": self.caller,
            "resourceGroup": self.resource_group,
            "resource": self.resource,
            "status": self.status,
            "correlationId": self.correlation_id,
        }
        if self.timespan == "custom":
            values.update(start=self.start[:16], end=self.end[:16])
        values.update(override)
        return urlencode({k: v for k, v in values.items() if v})


def _parse_local(value: str, label: str) -> datetime:
    try:
        parsed = parse_iso(value)
    except ValueError:
        abort(400, description=f"The {label} time '{value}' is not valid; use YYYY-MM-DDTHH:MM (UTC).")
    return parsed


def _query(who: Principal) -> Query:
    args = request.args
    subscriptions = list(visible_groups(who))
    subscription = (args.get("subscription") or "").strip().lower() or (subscriptions[0] if subscriptions else None)
    if subscription and subscription not in subscriptions:
        subscriptions.append(subscription)
    now = services().clock.now()
    timespan = args.get("timespan", DEFAULT_TIMESPAN)
    if timespan not in TIMESPANS:
        abort(400, description=f"Unknown time span '{timespan}'.")
    span = TIMESPANS[timespan][1]
    if span is not None:
        start, end = now - span, now
    else:
        start = _parse_local(args.get("start", ""), "start") if args.get("start") else now - timedelta(days=1)
        end = _parse_local(args.get("end", ""), "end") if args.get("end") else now
        if end < start:
            abort(400, description="The end of the time span is before its start.")
    operation = args.get("operation", "")
    if operation and operation not in OPERATIONS:
        abort(400, description=f"Unknown operation '{operation}'.")
    status = args.get("status", "")
    if status and status not in STATUSES:
        abort(400, description=f"Unknown status '{status}'.")
    return Query(
        subscription=subscription,
        timespan=timespan,
        start=iso(start),
        end=iso(end),
        operation=operation,
        caller=args.get("caller", "").strip(),
        resource_group=args.get("resourceGroup", "").strip(),
        resource=args.get("resource", "").strip(),
        status=status,
        correlation_id=args.get("correlationId", "").strip(),
        subscriptions=subscriptions,
    )


def _require_subscription(who: Principal, subscription: str) -> None:
    """The API's rule for the activity log: any scope inside the subscription may read it."""
    sub_scope = f"/subscriptions/{subscription}"
    if not (scope_contains(who.scope, sub_scope) or scope_contains(sub_scope, who.scope)):
        raise errors.authorization_failed(who.name, "Microsoft.Insights/eventtypes/values/read", sub_scope)


def _events(who: Principal, q: Query) -> list[Record]:
    if not q.subscription:
        return []
    _require_subscription(who, q.subscription)
    found = services().activity.query(q.subscription, q.event_filter())
    return [e for e in found if scope_contains(who.scope, e["resourceId"])]


def _resource_name(resource_id: str) -> str:
    parsed = parse_resource_id(resource_id)
    if parsed is None:
        return resource_id.rsplit("/", 1)[-1]
    key, ext = parsed
    return f"{key.name}/{ext}" if ext else key.name


@bp.get("/activity")
def activity() -> Any:
    who = security.principal()
    q = _query(who)
    events = _events(who, q)
    groups = visible_groups(who)
    callers = sorted({AUTOMATIC_CALLER, who.name} | {e["caller"] for e in events})
    return render_template(
        "portal/activity.html",
        q=q,
        events=events[:SHOWN],
        total=len(events),
        shown=SHOWN,
        timespans=TIMESPANS,
        operations=OPERATIONS,
        statuses=STATUSES,
        callers=callers,
        resource_groups=groups.get(q.subscription or "", []),
        resource_name=_resource_name,
        csv_url=url_for("portal.activity_csv") + "?" + q.params(),
    )


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@bp.get("/activity/download.csv")
def activity_csv() -> Response:
    who = security.principal()
    q = _query(who)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in _events(who, q):
        props = e.get("properties") or {}
        writer.writerow(
            [
                _cell(v)
                for v in (
                    e["correlationId"],
                    e["operationName"]["localizedValue"],
                    e["status"]["localizedValue"],
                    e["category"]["localizedValue"],
                    e["level"],
                    e["eventTimestamp"],
                    e["subscriptionId"],
                    e["caller"],
                    e["resourceType"]["value"],
                    e["resourceGroupName"],
                    _resource_name(e["resourceId"]),
                    e["resourceId"],
                    props.get("fromVersion"),
                    props.get("toVersion"),
                    props.get("lastKnownGoodVersion"),
                    props.get("attempt"),
                    props.get("message"),
                    e["operationId"],
                    e["eventDataId"],
                )
            ]
        )
    stamp = services().clock.now().strftime("%Y%m%d-%H%M%S")
    return Response(
        "\ufeff" + out.getvalue(),  # a BOM, so spreadsheets read it as UTF-8
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="ActivityLog-{stamp}.csv"'},
    )


@bp.get("/activity/events/<event_id>")
def activity_event(event_id: str) -> Any:
    who = security.principal()
    subscription = (request.args.get("subscription") or "").strip().lower()
    if not subscription:
        abort(400, description="Which subscription? Open events from the activity log.")
    _require_subscription(who, subscription)
    now = services().clock.now()
    window = EventFilter(start=iso(now - RETENTION), end=iso(now + timedelta(days=1)))
    every = [e for e in services().activity.query(subscription, window) if scope_contains(who.scope, e["resourceId"])]
    event = next((e for e in every if e["eventDataId"].lower() == event_id.lower()), None)
    if event is None:
        raise errors.resource_not_found("Microsoft.Insights/eventtypes/values", event_id)
    related = sorted(
        (e for e in every if e["operationId"] == event["operationId"] and e is not event),
        key=lambda e: e["eventTimestamp"],
    )
    parsed = parse_resource_id(event["resourceId"])
    return render_template(
        "portal/event.html",
        event=event,
        related=related,
        subscription=subscription,
        machine_key=parsed[0] if parsed else None,
        resource_name=_resource_name,
        event_json=json.dumps(event, indent=2, sort_keys=False),
        correlation_url=url_for("portal.activity")
        + "?"
        + urlencode({"subscription": subscription, "timespan": "90d", "correlationId": event["correlationId"]}),
    )
