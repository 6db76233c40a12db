"""Machines - Azure Arc: the machine list, a machine's Overview and its Extensions tab.

The Extensions tab follows the Arc documentation's portal steps: the Automatic upgrade column
(Enabled / Disabled / Not supported) and Update available come from ``upgrades.views.pending_view``;
"Enable / Disable automatic upgrade" PATCH ``enableAutomaticUpgrade`` through ``ResourceService``
(the same call the API's MachineExtensions_Update makes), and "Upgrade now" is
``Engine.manual_upgrade`` (upgradeExtensions) as the signed-in principal.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from .. import errors
from ..auth import Principal, Role, scope_contains
from ..ids import machine_key, parse_resource_id, validate_resource_group
from ..operations import IN_PROGRESS
from ..records import ExtensionRecord, OperationRecord
from ..request_context import services
from ..store.base import MachineDoc
from ..upgrades.policy import newest_of_major
from ..upgrades.views import pending_view
from ..versions import major, newer
from . import security
from .blueprint import bp

PAGE_SIZE = 50
#: How long a button waits for its operations before showing the page (they go on in the background).
WAIT_SECONDS = 8.0

EXTENSION_WRITE = "Microsoft.HybridCompute/machines/extensions/write"
UPGRADE_ACTION = "Microsoft.HybridCompute/machines/upgradeExtensions/action"
MACHINE_READ = "Microsoft.HybridCompute/machines/read"


def rg_scope(subscription: str, resource_group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}"


def visible_groups(who: Principal) -> dict[str, list[str]]:
    """Subscription → resource groups (display case) holding machines this principal may read."""

    def project(doc: MachineDoc) -> tuple[str, str] | None:
        parsed = parse_resource_id(doc["machine"]["id"])
        if parsed is None:
            return None
        key = parsed[0]
        visible = scope_contains(who.scope, rg_scope(key.subscription, key.resource_group))
        return (key.subscription, key.resource_group) if visible else None

    groups: dict[str, dict[str, str]] = {}
    for sub, rg in services().lookups.over_machines(project):
        groups.setdefault(sub, {}).setdefault(rg.lower(), rg)
    if who.scope != "/":  # the token's own subscription is always listed, even when it is empty
        sub = who.scope.split("/")[2]
        groups.setdefault(sub, {})
    return {sub: sorted(rgs.values(), key=str.lower) for sub, rgs in sorted(groups.items())}


def scope_group(who: Principal) -> str | None:
    """The resource group a resource-group-scoped token is limited to."""
    parts = who.scope.split("/")
    return parts[4] if len(parts) == 5 else None


def _valid_subscription(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        abort(400, description=f"'{value}' is not a subscription id (a GUID).")


@bp.get("/machines")
def machines() -> Any:
    who = security.principal()
    groups = visible_groups(who)
    subscription = _valid_subscription(request.args.get("subscription")) or next(iter(groups), None)
    resource_group = scope_group(who) or (request.args.get("resourceGroup") or None)
    rows: list[dict[str, Any]] = []
    next_token = None
    if subscription:
        if resource_group:
            validate_resource_group(resource_group)
        scope = rg_scope(subscription, resource_group) if resource_group else f"/subscriptions/{subscription}"
        who.require(Role.READER, scope, MACHINE_READ)
        items, next_token = services().resources.list_machines(
            subscription, resource_group, request.args.get("after") or None, PAGE_SIZE
        )
        for item in items:
            parsed = parse_resource_id(item["id"])
            assert parsed is not None
            props = item.get("properties", {})
            rows.append(
                {
                    "name": item["name"],
                    "resourceGroup": parsed[0].resource_group,
                    "subscription": parsed[0].subscription,
                    "location": item.get("location", ""),
                    "status": props.get("status", ""),
                    "osType": props.get("osType") or props.get("osName") or "",
                    "agentVersion": props.get("agentVersion") or "",
                    "extensions": len(item.get("resources", [])),
                }
            )
    return render_template(
        "portal/machines.html",
        groups=groups,
        subscription=subscription,
        resource_group=resource_group,
        fixed_group=scope_group(who),
        rows=rows,
        next_token=next_token,
    )


MACHINE = "/subscriptions/<subscription>/resourceGroups/<resource_group>/machines/<name>"


def _machine(subscription: str, resource_group: str, name: str) -> tuple[Any, MachineDoc]:
    key = machine_key(subscription, resource_group, name)
    security.principal().require(Role.READER, rg_scope(key.subscription, key.resource_group), MACHINE_READ)
    doc = services().lookups.machine(key)
    if doc is None:
        raise errors.resource_not_found("Microsoft.HybridCompute/machines", name, resource_group)
    parsed = parse_resource_id(doc["machine"]["id"])
    assert parsed is not None
    return parsed[0], doc


@bp.get(MACHINE)
def machine(subscription: str, resource_group: str, name: str) -> Any:
    key, doc = _machine(subscription, resource_group, name)
    m = doc["machine"]
    props = m.get("properties", {})
    facts = [
        ("Status", props.get("status")),
        ("Resource group", key.resource_group),
        ("Subscription", key.subscription),
        ("Location", m.get("location")),
        ("Operating system", props.get("osType")),
        ("OS name", props.get("osName")),
        ("OS version", props.get("osVersion")),
        ("Computer name", props.get("machineFqdn") or props.get("displayName")),
        ("Agent version", props.get("agentVersion")),
        ("Provisioning state", props.get("provisioningState")),
        ("Last status change", props.get("lastStatusChange")),
        ("Extensions", str(len(doc["extensions"]))),
        ("Resource id", m["id"]),
    ]
    return render_template(
        "portal/machine.html",
        key=key,
        machine=m,
        facts=[(label, value) for label, value in facts if value],
        tags=m.get("tags") or {},
        windows=services().maintenance.describe(doc, services().clock.now()),
        tab="overview",
    )


def _extension_rows(key: Any, doc: MachineDoc) -> list[dict[str, Any]]:
    svc = services()
    view = pending_view(svc.engine, svc.catalog, key, doc)
    by_name = {item["name"].lower(): item for item in view["extensions"]}
    rows = []
    for ext in sorted(doc["extensions"]):
        record = doc["extensions"][ext]
        resource = record["resource"]
        props = resource["properties"]
        item = by_name.get(resource["name"].lower(), {})
        rows.append(
            {
                "name": resource["name"],
                "type": ".".join(p for p in (props.get("publisher"), props.get("type")) if p),
                "version": props.get("typeHandlerVersion") or "",
                "status": props.get("provisioningState") or "",
                "automaticUpgrade": item.get("automaticUpgrade", ""),
                "updateAvailable": bool(item.get("updateAvailable")),
                "latestVersion": item.get("latestVersion"),
                "upgradeState": item.get("state"),
                "upgradeReason": item.get("reason"),
                "busy": bool(record.get("operation")),
            }
        )
    return rows


@bp.get(f"{MACHINE}/extensions")
def extensions(subscription: str, resource_group: str, name: str) -> Any:
    key, doc = _machine(subscription, resource_group, name)
    who = security.principal()
    rows = _extension_rows(key, doc)
    return render_template(
        "portal/extensions.html",
        key=key,
        machine=doc["machine"],
        rows=rows,
        updates=sum(1 for r in rows if r["updateAvailable"]),
        can_write=security.allows(who, Role.CONTRIBUTOR, rg_scope(key.subscription, key.resource_group)),
        tab="extensions",
    )


@bp.post(f"{MACHINE}/extensions")
def extensions_action(subscription: str, resource_group: str, name: str) -> Any:
    key, doc = _machine(subscription, resource_group, name)
    who = security.principal()
    action = request.form.get("action", "")
    scope = rg_scope(key.subscription, key.resource_group)
    back = redirect(url_for("portal.extensions", subscription=subscription, resource_group=resource_group, name=name))
    back.status_code = 303
    if action in ("enable", "disable"):
        who.require(Role.CONTRIBUTOR, scope, EXTENSION_WRITE)
    elif action == "upgrade":
        who.require(Role.CONTRIBUTOR, scope, UPGRADE_ACTION)
    else:
        abort(400, description="Choose Enable automatic upgrade, Disable automatic upgrade or Upgrade now.")
    chosen = [n for n in request.form.getlist("extension") if n]
    records = {ext: doc["extensions"].get(ext.lower()) for ext in chosen}
    missing = [ext for ext, record in records.items() if record is None]
    if missing:
        abort(400, description=f"This machine has no extension named {', '.join(missing)}.")
    if not chosen:
        flash("Select one or more extensions first.", "error")
        return back
    if action == "upgrade":
        _upgrade_now(key, {n: r for n, r in records.items() if r is not None}, who)
    else:
        _set_automatic_upgrade(key, [r for r in records.values() if r is not None], action == "enable", who)
    return back


def _wait(op_ids: list[str]) -> dict[str, OperationRecord]:
    """The operations' records once they end, or as they are after WAIT_SECONDS."""
    lookups = services().lookups
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = {op_id: lookups.operation(op_id) or {} for op_id in op_ids}
        if all(op.get("status") != IN_PROGRESS for op in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _set_automatic_upgrade(key: Any, records: list[ExtensionRecord], enable: bool, who: Principal) -> None:
    resources = services().resources
    word = "enabled" if enable else "disabled"
    started: dict[str, str] = {}
    unchanged: list[str] = []
    for record in records:
        name = record["resource"]["name"]
        if bool(record["resource"]["properties"].get("enableAutomaticUpgrade", True)) == enable:
            unchanged.append(name)
            continue
        try:
            op = resources.patch_extension(key, name, {"properties": {"enableAutomaticUpgrade": enable}}, who.name)
        except errors.ArmError as exc:
            flash(f"{name}: {exc.message}", "error")
            continue
        started[op["id"]] = name
    done = _wait(list(started))
    succeeded = [started[i] for i, op in done.items() if op.get("status") == "Succeeded"]
    failed = [(started[i], op) for i, op in done.items() if op.get("status") not in ("Succeeded", IN_PROGRESS)]
    running = [started[i] for i, op in done.items() if op.get("status") == IN_PROGRESS]
    if succeeded:
        flash(f"Automatic upgrade {word} for {', '.join(succeeded)}.", "success")
    for name, op in failed:
        flash(f"{name}: {(op.get('error') or {}).get('message', 'the update failed')}", "error")
    if running:
        flash(f"Still updating {', '.join(running)}; refresh to see the result.", "info")
    if unchanged:
        flash(f"Automatic upgrade was already {word} for {', '.join(unchanged)}.", "info")


def _upgrade_now(key: Any, records: dict[str, ExtensionRecord], who: Principal) -> None:
    """upgradeExtensions to the newest published version of each extension's own major version."""
    svc = services()
    targets: dict[str, dict[str, str]] = {}
    names: dict[str, tuple[str, str]] = {}
    for record in records.values():
        props = record["resource"]["properties"]
        name = record["resource"]["name"]
        publisher, type_ = props.get("publisher", ""), props.get("type", "")
        current = props.get("typeHandlerVersion") or ""
        versions = [v["version"] for v in svc.catalog.versions(publisher, type_)]
        target = newest_of_major(versions, current)
        if target is None or not newer(target, current):
            later = [v for v in versions if current and newer(v, current)]
            hint = f" ({later[-1]} is a new major version: upgrade to it with upgradeExtensions)" if later else ""
            flash(f"{name} already runs the newest {major(current) or ''}.x version{hint}.", "info")
            continue
        targets[f"{publisher}.{type_}"] = {"targetVersion": target}
        names[f"{publisher}.{type_}"] = (name, target)
    if not targets:
        return
    try:
        op = svc.engine.manual_upgrade(key, targets, who.name)
    except errors.ArmError as exc:
        flash(f"Upgrade now was refused: {exc.message}", "error")
        return
    done = _wait([op["id"]])[op["id"]]
    listing = ", ".join(f"{n} to {v}" for n, v in names.values())
    if done.get("status") == "Succeeded":
        flash(f"Upgraded {listing}.", "success")
    elif done.get("status") == IN_PROGRESS:
        flash(f"Upgrading {listing}; refresh to follow it (the activity log has each attempt).", "info")
    else:
        flash(f"Upgrade failed: {(done.get('error') or {}).get('message', 'see the activity log')}", "error")
