"""What operators read: a machine's pending upgrades and an extension's upgrade history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..activity import AUTOMATIC_CALLER, UPGRADE_OPERATION, ActivityLog, EventFilter
from ..catalog import Catalog
from ..clock import iso, parse_iso
from ..ids import MachineKey
from ..store.base import MachineDoc
from ..versions import newer
from ..versions import newest as newest_version
from . import job_state as J
from .engine import Engine
from .policy import (
    DROPPED_OUT,
    REASON_TEXT,
    UP_TO_DATE,
    auto_upgrade_view,
    ineligibility,
    newest_of_major,
    supports_auto_upgrade,
)
from .targets import NO_HOST_CONNECTION


def _window_wait(engine: Engine, doc: MachineDoc, due: str | None, now: str) -> str | None:
    """When the machine's next maintenance window opens, if an automatic upgrade due at ``due`` (or now)
    would have to wait for it."""
    gate = engine.window_gate
    if gate is None:
        return None
    at = parse_iso(max(due or now, now))
    opens = gate(doc, at)
    return iso(opens) if opens is not None else None


def _moved_to_window(engine: Engine, doc: MachineDoc, job: Any, now: str) -> str | None:
    """The job's due time when the engine already moved it to the opening of the machine's next window (the
    job is then due inside the window, so ``_window_wait`` at its due time sees no wait)."""
    due = job.get("dueAt")
    if not due or due <= now:
        return None
    opens = _window_wait(engine, doc, None, now)
    return due if opens is not None and opens == due else None


def pending_view(engine: Engine, catalog: Catalog, key: MachineKey, doc: MachineDoc) -> dict[str, Any]:
    engine.refresh()  # the rollouts as they are now (a cluster's follower reads them from the store)
    now = iso(engine.now())
    items = []
    for ext in sorted(doc["extensions"]):
        record = doc["extensions"][ext]
        props = record["resource"]["properties"]
        publisher, type_ = props.get("publisher", ""), props.get("type", "")
        supported = supports_auto_upgrade(catalog, record)
        current = props.get("typeHandlerVersion") or ""
        versions = [v["version"] for v in catalog.versions(publisher, type_)]
        latest = newest_of_major(versions, current)
        newest = newest_version(versions)
        item: dict[str, Any] = {
            "name": record["resource"]["name"],
            "publisher": publisher,
            "type": type_,
            "version": current,
            "automaticUpgrade": auto_upgrade_view(record, supported),
            "latestVersion": newest,
            "updateAvailable": bool(newest and current and newer(newest, current)),
            "state": "UpToDate",
            "targetVersion": None,
            "dueAt": None,
            "attempt": None,
            "rolloutId": None,
            "reason": None,
        }
        job = record.get("upgrade")
        if job:
            item.update(
                state=job["state"],
                targetVersion=job.get("toVersion"),
                # a due time in the past means "now" (the engine takes it on its next pass)
                dueAt=max(job.get("dueAt") or now, now),
                attempt=job.get("attempt"),
                rolloutId=job.get("rolloutId"),
            )
            held = engine.held(job.get("rolloutId"))
            if job["state"] == J.RUNNING:
                item["dueAt"] = None
                item["reason"] = f"upgrading to {job['toVersion']} now (attempt {job.get('attempt', 1)})"
            elif job["state"] == J.FAILED:
                item["dueAt"] = None
                item["reason"] = REASON_TEXT[DROPPED_OUT]
            elif held:
                item["state"] = "Held"
                item["dueAt"] = None
                item["reason"] = (
                    f"rollout {held['id']} is {held['state'].lower()}: {held.get('stateReason') or ''}".strip()
                )
            elif not job.get("manualOperation") and (
                opens := _window_wait(engine, doc, job.get("dueAt"), now) or _moved_to_window(engine, doc, job, now)
            ):
                item["dueAt"] = opens
                item["reason"] = f"waiting for maintenance window, next opens at {opens}" + (
                    f" (retry {job.get('attempt')} after a failed attempt)" if job["state"] == J.RETRY_WAIT else ""
                )
            elif job.get("blockedReason") == NO_HOST_CONNECTION:
                item["reason"] = f"no host connection is configured; checking again at {job['dueAt']}"
            elif job["state"] == J.RETRY_WAIT:
                err = (job.get("lastError") or {}).get("message", "the last attempt failed")
                item["reason"] = f"retrying at {job['dueAt']} after a failed attempt ({err})"
            else:
                when = "due now" if job["dueAt"] <= now else f"due at {job['dueAt']}"
                if job.get("manualOperation"):
                    item["reason"] = f"manual upgrade requested by {job.get('caller')}, {when}"
                elif job.get("rolloutId") and job.get("wave") is None:
                    item["reason"] = f"joined rollout {job['rolloutId']} after it was planned; {when}"
                else:
                    item["reason"] = when
        else:
            scheduled = engine.wave_of(key, ext, current, record.get("outcomes") or {})
            held = engine.held(scheduled[0]["id"]) if scheduled else None
            if scheduled and held:
                rollout, wave = scheduled
                item.update(state="Held", targetVersion=rollout["version"], dueAt=None, rolloutId=rollout["id"])
                item["reason"] = (
                    f"in wave {wave['index']} ({wave['region']}) of rollout {rollout['id']}, which is "
                    f"{held['state'].lower()}: {held.get('stateReason') or ''}"
                ).strip()
            elif scheduled and scheduled[1]["state"] == "Running":
                rollout, wave = scheduled
                item.update(state="Queued", targetVersion=rollout["version"], dueAt=now, rolloutId=rollout["id"])
                item["reason"] = f"in wave {wave['index']} ({wave['region']}) of rollout {rollout['id']}, running now"
                opens = _window_wait(engine, doc, now, now)
                if opens:
                    item["dueAt"] = opens
                    item["reason"] = (
                        f"in wave {wave['index']} ({wave['region']}) of rollout {rollout['id']}; "
                        f"waiting for maintenance window, next opens at {opens}"
                    )
                stalled = engine.stalled(rollout["id"])
                if stalled:
                    item["reason"] += f"; the rollout is stalled: {stalled}"
            elif scheduled:
                rollout, wave = scheduled
                waiting = wave["notBefore"] <= now
                item.update(
                    state="Scheduled",
                    targetVersion=rollout["version"],
                    dueAt=None if waiting else wave["notBefore"],
                    rolloutId=rollout["id"],
                )
                item["reason"] = f"in wave {wave['index']} ({wave['region']}) of rollout {rollout['id']}; " + (
                    "starts once the earlier waves complete" if waiting else f"not before {wave['notBefore']}"
                )
                opens = _window_wait(engine, doc, None if waiting else wave["notBefore"], now)
                if opens:
                    item["dueAt"] = opens
                    item["reason"] += f"; then waiting for maintenance window, next opens at {opens}"

            else:
                target = latest if latest and current and newer(latest, current) else newest
                why = ineligibility(record, supported, target) if target else None
                if target and why and why != UP_TO_DATE:
                    item.update(state="NotEligible", reason=REASON_TEXT.get(why, why))
                elif target and why is None:
                    item.update(
                        state="NotEligible",
                        reason=f"{target} has no active rollout for this extension; use upgradeExtensions",
                    )
        items.append(item)
    return {"machine": doc["machine"]["id"], "now": now, "extensions": items}


def history_view(activity: ActivityLog, key: MachineKey, resource_id: str, now_iso: str) -> list[dict[str, Any]]:
    now = parse_iso(now_iso)
    flt = EventFilter(
        start=iso(now - timedelta(days=90)),
        end=iso(now + timedelta(days=1)),
        resource_uri=resource_id,
        operation_name=UPGRADE_OPERATION,
    )
    attempts: dict[str, dict[str, Any]] = {}
    for event in sorted(activity.query(key.subscription, flt), key=lambda e: e["eventTimestamp"]):
        props = event["properties"]
        entry = attempts.setdefault(
            event["operationId"],
            {
                "operationId": event["operationId"],
                "correlationId": event["correlationId"],
                "caller": event["caller"],
                "automatic": event["caller"] == AUTOMATIC_CALLER,
                "fromVersion": props.get("fromVersion"),
                "toVersion": props.get("toVersion"),
                "lastKnownGoodVersion": props.get("lastKnownGoodVersion"),
                "attempt": props.get("attempt"),
                "startedAt": None,
                "endedAt": None,
                "outcome": "Running",
                "message": None,
            },
        )
        status = event["status"]["value"]
        if status == "Started":
            entry["startedAt"] = event["eventTimestamp"]
        else:
            entry["endedAt"] = event["eventTimestamp"]
            if status == "Succeeded":
                entry["outcome"] = "Succeeded"
            elif props.get("rolledBack"):
                entry["outcome"] = "RolledBack"
            elif props.get("rollbackError"):
                entry["outcome"] = "RollbackFailed"
            else:
                entry["outcome"] = "NotRun"
            entry["message"] = props.get("message")
    return sorted(attempts.values(), key=lambda a: a["startedAt"] or a["endedAt"] or "", reverse=True)
