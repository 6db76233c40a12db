"""``arcext activity-log list``: az monitor activity-log list against arcext's activity log."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from ...clock import parse_iso
from ..errors import UsageProblem
from ..http import ACTIVITY_API_VERSION
from .common import ClientCommand, client, emit, output_options, subscription_option

DEFAULT_OFFSET = timedelta(hours=6)
_OFFSET = re.compile(r"^\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*$", re.IGNORECASE)


def parse_offset(value: str) -> timedelta:
    """az's ``##d##h`` (``1d``, ``6h``, ``2d12h``; minutes as ``30m``)."""
    match = _OFFSET.match(value)
    if not match or not any(match.groups()):
        raise UsageProblem(f"--offset: '{value}' is not a time offset in ##d##h format (e.g. 6h, 1d, 2d12h).")
    days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes)


def parse_time(value: str, option: str) -> datetime:
    text = value.strip()
    try:
        parsed = parse_iso(text)
    except ValueError:
        raise UsageProblem(
            f"{option}: '{value}' is not a date/time; use ISO 8601, e.g. 2026-11-25T08:00:00Z."
        ) from None
    return parsed


def time_range(start: str | None, end: str | None, offset: str | None) -> tuple[datetime, datetime]:
    """az's rules: start and end → both (offset ignored); start → start + offset; end or neither → end - offset."""
    span = parse_offset(offset) if offset else DEFAULT_OFFSET
    if start and end:
        begin, finish = parse_time(start, "--start-time"), parse_time(end, "--end-time")
    elif start:
        begin = parse_time(start, "--start-time")
        finish = begin + span
    else:
        finish = parse_time(end, "--end-time") if end else datetime.now(UTC)
        begin = finish - span
    if begin > finish:
        raise UsageProblem("--start-time is after --end-time.")
    return begin, finish


def _stamp(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts.microsecond == 0 else ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def build_filter(
    begin: datetime,
    finish: datetime,
    resource_group: str | None = None,
    resource_id: str | None = None,
    correlation_id: str | None = None,
    caller: str | None = None,
    status: str | None = None,
    operation: str | None = None,
) -> str:
    clauses = [f"eventTimestamp ge '{_stamp(begin)}'", f"eventTimestamp le '{_stamp(finish)}'"]
    for field, value in (
        ("resourceGroupName", resource_group),
        ("resourceUri", resource_id),
        ("correlationId", correlation_id),
        ("caller", caller),
        ("status", status),
        ("operationName", operation),
    ):
        if value:
            clauses.append(f"{field} eq {_quote(value)}")
    return " and ".join(clauses)


def _display_name_matches(event: dict[str, Any], wanted: str) -> bool:
    op = event.get("operationName") or {}
    names = {str(op.get("value", "")).lower(), str(op.get("localizedValue", "")).lower()}
    return wanted.lower() in names


@click.group("activity-log")
def activity_log() -> None:
    """The activity log (az monitor activity-log): upgrade attempts, automatic and manual."""


@activity_log.command("list", cls=ClientCommand)
@click.option("--start-time", help="Start of the span (ISO 8601; default: end time minus the offset).")
@click.option("--end-time", help="End of the span (ISO 8601; default: now, or start time plus the offset).")
@click.option("--offset", help="Length of the span in ##d##h format (default 6h); ignored with both times.")
@click.option("--resource-group", "-g", help="Only events of this resource group.")
@click.option("--resource-id", help="Only events of this resource (and its children).")
@click.option(
    "--operation",
    help="Only this operation: its name (Microsoft.HybridCompute/machines/upgradeExtensions/action) "
    'or display name ("Upgrade Extensions on Azure Arc machines").',
)
@click.option("--caller", help='Who initiated the event ("Azure Regional Service Manager" for automatic upgrades).')
@click.option("--correlation-id", help="Only events of this correlation id (one rollout, or one manual upgrade).")
@click.option("--status", help="Only events with this status (Started, Succeeded, Failed).")
@click.option("--max-events", default=50, show_default=True, type=click.IntRange(min=1), help="Most events to list.")
@click.option("--select", help="Event fields to return, comma or space separated.")
@subscription_option
@output_options
def activity_log_list(
    start_time: str | None,
    end_time: str | None,
    offset: str | None,
    resource_group: str | None,
    resource_id: str | None,
    operation: str | None,
    caller: str | None,
    correlation_id: str | None,
    status: str | None,
    max_events: int,
    select: str | None,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """List activity-log events, newest first."""
    begin, finish = time_range(start_time, end_time, offset)
    by_name = operation if operation and "/" in operation else None
    by_display = operation if operation and "/" not in operation else None
    flt = build_filter(begin, finish, resource_group, resource_id, correlation_id, caller, status, by_name)
    params = {"$filter": flt}
    fields = [f for f in re.split(r"[,\s]+", select or "") if f]
    if fields:
        params["$select"] = ",".join(fields if not by_display else [*fields, "operationName"])
    with client(subscription) as arm:
        path = f"{arm.subscription_path()}/providers/Microsoft.Insights/eventtypes/management/values"
        events: list[dict[str, Any]] = []
        for event in arm.iter_pages(path, params, api_version=ACTIVITY_API_VERSION):
            if by_display and not _display_name_matches(event, by_display):
                continue
            if fields and by_display and "operationName" not in fields:
                event = {k: v for k, v in event.items() if k != "operationName"}
            events.append(event)
            if len(events) >= max_events:
                break
    emit(events, output, query)
