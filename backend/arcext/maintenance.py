"""Maintenance windows: Microsoft.Maintenance maintenanceConfigurations (scope Extension) and their
configurationAssignments on a machine, a resource group or a subscription.

Stored in the store's ``maintenance.json`` (TinyDB, written atomically per change) and kept in memory;
the engine asks :meth:`MaintenanceService.gate` before it starts an automatic upgrade on a machine.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import Any

from .clock import iso
from .store.base import MachineDoc, Record, Store
from .upgrades.windows import Window, WindowError

CONFIGS = "configurations"
ASSIGNMENTS = "assignments"
CONFIG_TYPE = "Microsoft.Maintenance/maintenanceConfigurations"
ASSIGNMENT_TYPE = "Microsoft.Maintenance/configurationAssignments"
MACHINE_TYPE = "microsoft.hybridcompute/machines"
SCOPES = ("Extension",)

CONFIG_ID_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/Microsoft\.Maintenance/"
    r"maintenanceConfigurations/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


class MaintenanceError(ValueError):
    def __init__(self, message: str, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target


def config_id(sub: str, rg: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{CONFIG_TYPE}/{name}"


def configuration_named(body: dict[str, Any]) -> tuple[str, str, str] | None:
    """(subscription, resource group, name) of the maintenance configuration an assignment body names, or
    None when ``properties.maintenanceConfigurationId`` is missing or not such an id (put_assignment says why)."""
    props = body.get("properties")
    cid = props.get("maintenanceConfigurationId") if isinstance(props, dict) else None
    match = CONFIG_ID_RE.match(cid) if isinstance(cid, str) else None
    return (match["sub"], match["rg"], match["name"]) if match else None


def _norm_location(value: str | None) -> str:
    return (value or "").replace(" ", "").lower()


class MaintenanceService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.RLock()
        self._configs: dict[str, Record] = {}
        self._windows: dict[str, Window] = {}
        self._assignments: dict[str, Record] = {}
        self.reload()

    def reload(self) -> None:
        """Read everything from the store again (start-up, and after the store was cleared)."""
        with self._lock:
            self._configs = {r["key"]: _strip(r) for r in self.store.list_maintenance(CONFIGS)}
            self._windows = {}
            for key, record in self._configs.items():
                try:
                    self._windows[key] = Window.parse(record["properties"]["maintenanceWindow"])
                except (WindowError, KeyError, TypeError):
                    continue  # validated on PUT; a hand-edited file must not stop the server
            self._assignments = {r["key"]: _strip(r) for r in self.store.list_maintenance(ASSIGNMENTS)}

    # --- configurations -------------------------------------------------------------------------
    def put_configuration(
        self, sub: str, rg: str, name: str, body: dict[str, Any], principal: str, now: datetime
    ) -> tuple[Record, bool]:
        props = body.get("properties")
        if not isinstance(props, dict):
            raise MaintenanceError("properties is required.", "properties")
        scope = props.get("maintenanceScope")
        if scope not in SCOPES:
            raise MaintenanceError(
                f"maintenanceScope '{scope}' is not served: arcext applies maintenance windows to extension "
                "upgrades only; use maintenanceScope 'Extension'.",
                "properties.maintenanceScope",
            )
        window = props.get("maintenanceWindow")
        if not isinstance(window, dict):
            raise MaintenanceError("properties.maintenanceWindow is required.", "properties.maintenanceWindow")
        try:
            parsed = Window.parse(window)
        except WindowError as exc:
            raise MaintenanceError(str(exc), f"properties.{exc.target}") from None
        location = body.get("location")
        if not isinstance(location, str) or not location:
            raise MaintenanceError("location is required.", "location")
        tags = body.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise MaintenanceError("tags must be an object of strings.", "tags")
        visibility = props.get("visibility") or "Custom"
        if visibility not in ("Custom", "Public"):
            raise MaintenanceError(f"visibility '{visibility}' must be Custom or Public.", "properties.visibility")
        ext_props = props.get("extensionProperties") or {}
        if not isinstance(ext_props, dict):
            raise MaintenanceError("extensionProperties must be an object.", "properties.extensionProperties")
        rid = config_id(sub, rg, name)
        key = rid.lower()
        stamp = iso(now)
        with self._lock:
            existing = self._configs.get(key)
            created = existing is None
            system_data = {
                "createdBy": principal,
                "createdByType": "User",
                "createdAt": stamp,
                **((existing or {}).get("systemData") or {}),
                "lastModifiedBy": principal,
                "lastModifiedByType": "User",
                "lastModifiedAt": stamp,
            }
            if created:
                system_data.update(createdBy=principal, createdAt=stamp)
            mw = {
                k: window[k]
                for k in ("startDateTime", "expirationDateTime", "duration", "timeZone", "recurEvery")
                if window.get(k) not in (None, "")
            }
            mw.setdefault("duration", "01:30")
            record: Record = {
                "id": rid,
                "name": name,
                "type": CONFIG_TYPE,
                "location": location,
                "tags": tags,
                "systemData": system_data,
                "properties": {
                    "namespace": props.get("namespace") or "Microsoft.Maintenance",
                    "extensionProperties": ext_props,
                    "maintenanceScope": scope,
                    "visibility": visibility,
                    "maintenanceWindow": mw,
                },
            }
            self.store.put_maintenance(CONFIGS, key, record)
            self._configs[key] = record
            self._windows[key] = parsed
        return record, created

    def get_configuration(self, sub: str, rg: str, name: str) -> Record | None:
        with self._lock:
            return self._configs.get(config_id(sub, rg, name).lower())

    def delete_configuration(self, sub: str, rg: str, name: str) -> bool:
        key = config_id(sub, rg, name).lower()
        with self._lock:
            if key not in self._configs:
                return False
            self.store.delete_maintenance(CONFIGS, key)
            self._configs.pop(key, None)
            self._windows.pop(key, None)
            return True

    def list_configurations(self, sub: str, rg: str | None = None) -> list[Record]:
        prefix = f"/subscriptions/{sub}/resourcegroups/".lower()
        if rg is not None:
            prefix += f"{rg.lower()}/"
        with self._lock:
            return [r for k, r in sorted(self._configs.items()) if k.startswith(prefix)]

    # --- assignments ----------------------------------------------------------------------------
    def put_assignment(self, scope: str, name: str, body: dict[str, Any], location_default: str) -> tuple[Record, bool]:
        props = body.get("properties")
        if not isinstance(props, dict):
            raise MaintenanceError("properties is required.", "properties")
        cid = props.get("maintenanceConfigurationId")
        named = configuration_named(body)
        if named is None:
            raise MaintenanceError(
                "properties.maintenanceConfigurationId must be the id of a maintenance configuration "
                "(/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Maintenance/maintenanceConfigurations/{name}).",
                "properties.maintenanceConfigurationId",
            )
        config = self.get_configuration(*named)
        if config is None:
            raise MaintenanceError(
                f"The maintenance configuration '{cid}' was not found.", "properties.maintenanceConfigurationId"
            )
        flt = props.get("filter")
        if flt is not None:
            _check_filter(flt)
        location = body.get("location")
        if location is not None and not isinstance(location, str):
            raise MaintenanceError("location must be a string.", "location")
        rid = f"{scope}/providers/Microsoft.Maintenance/configurationAssignments/{name}"
        key = rid.lower()
        record: Record = {
            "id": rid,
            "name": name,
            "type": ASSIGNMENT_TYPE,
            "location": location or location_default,
            "properties": {
                "maintenanceConfigurationId": config["id"],
                "resourceId": scope,
                **({"filter": flt} if flt is not None else {}),
            },
        }
        with self._lock:
            created = key not in self._assignments
            self.store.put_maintenance(ASSIGNMENTS, key, {**record, "scope": scope.lower()})
            self._assignments[key] = record
        return record, created

    def get_assignment(self, scope: str, name: str) -> Record | None:
        key = f"{scope}/providers/Microsoft.Maintenance/configurationAssignments/{name}".lower()
        with self._lock:
            return self._assignments.get(key)

    def delete_assignment(self, scope: str, name: str) -> bool:
        key = f"{scope}/providers/Microsoft.Maintenance/configurationAssignments/{name}".lower()
        with self._lock:
            if key not in self._assignments:
                return False
            self.store.delete_maintenance(ASSIGNMENTS, key)
            self._assignments.pop(key, None)
            return True

    def list_assignments(self, scope: str, within: bool = False) -> list[Record]:
        """Assignments made at ``scope`` (or, with ``within``, anywhere inside it)."""
        scope_l = scope.lower()
        with self._lock:
            out = []
            for record in self._assignments.values():
                target = str(record["properties"]["resourceId"]).lower()
                if target == scope_l or (within and target.startswith(scope_l + "/")):
                    out.append(record)
            return sorted(out, key=lambda r: str(r["id"]).lower())

    # --- what the engine asks -------------------------------------------------------------------
    def in_use(self) -> bool:
        """Whether any assignment exists (the engine skips the window check entirely otherwise)."""
        return bool(self._assignments)

    def windows_for(self, doc: MachineDoc) -> list[tuple[Record, Window]]:
        """The maintenance configurations that apply to a machine (through any assignment)."""
        with self._lock:
            if not self._assignments:
                return []
            machine = doc["machine"]
            mid = str(machine["id"]).lower()
            parts = mid.split("/")
            sub_scope, rg_scope = "/".join(parts[:3]), "/".join(parts[:5])
            found: dict[str, tuple[Record, Window]] = {}
            for record in self._assignments.values():
                props = record["properties"]
                target = str(props["resourceId"]).lower()
                if target == mid:
                    pass
                elif target in (sub_scope, rg_scope):
                    if not _filter_matches(props.get("filter"), machine, parts[4]):
                        continue
                else:
                    continue
                ckey = str(props["maintenanceConfigurationId"]).lower()
                config, window = self._configs.get(ckey), self._windows.get(ckey)
                if config is not None and window is not None:
                    found[ckey] = (config, window)
            return [found[k] for k in sorted(found)]

    def gate(self, doc: MachineDoc, now: datetime) -> datetime | None:
        """None if an automatic upgrade may start on the machine now; else when its next window opens.

        A machine with no assignment (or only expired configurations) is never gated."""
        upcoming: list[datetime] = []
        for _config, window in self.windows_for(doc):
            found = window.next_window(now)
            if found is None:
                continue
            if found[0] <= now:
                return None
            upcoming.append(found[0])
        return min(upcoming) if upcoming else None

    def open_windows(self, doc: MachineDoc, now: datetime) -> list[dict[str, str]]:
        """The machine's windows open at ``now``: configuration id, start and end (UTC, ARM timestamps)."""
        out = []
        for config, window in self.windows_for(doc):
            found = window.next_window(now)
            if found is not None and found[0] <= now:
                out.append(
                    {"maintenanceConfigurationId": str(config["id"]), "start": iso(found[0]), "end": iso(found[1])}
                )
        return out

    def describe(self, doc: MachineDoc, now: datetime) -> list[dict[str, Any]]:
        """A machine's windows for the portal and the pending view."""
        out = []
        for config, window in self.windows_for(doc):
            found = window.next_window(now)
            mw = config["properties"]["maintenanceWindow"]
            out.append(
                {
                    "id": config["id"],
                    "name": config["name"],
                    "timeZone": mw.get("timeZone"),
                    "recurEvery": mw.get("recurEvery"),
                    "duration": mw.get("duration"),
                    "startDateTime": mw.get("startDateTime"),
                    "expirationDateTime": mw.get("expirationDateTime"),
                    "open": bool(found and found[0] <= now),
                    "nextStart": found[0].isoformat() if found else None,
                    "nextEnd": found[1].isoformat() if found else None,
                }
            )
        return out


def _strip(record: Record) -> Record:
    out = dict(record)
    out.pop("key", None)
    out.pop("scope", None)
    return out


def _check_filter(flt: Any) -> None:
    if not isinstance(flt, dict):
        raise MaintenanceError("properties.filter must be an object.", "properties.filter")
    for field in ("resourceTypes", "resourceGroups", "osTypes", "locations"):
        value = flt.get(field)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise MaintenanceError(f"filter.{field} must be a list of strings.", f"properties.filter.{field}")
    tag_settings = flt.get("tagSettings")
    if tag_settings is not None:
        if not isinstance(tag_settings, dict):
            raise MaintenanceError("properties.filter.tagSettings must be an object.", "properties.filter.tagSettings")
        tags = tag_settings.get("tags") or {}
        if not isinstance(tags, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in tags.values()
        ):
            raise MaintenanceError(
                "properties.filter.tagSettings.tags must map tag names to lists of values.",
                "properties.filter.tagSettings.tags",
            )
        if tag_settings.get("filterOperator", "Any") not in ("Any", "All"):
            raise MaintenanceError(
                "properties.filter.tagSettings.filterOperator must be Any or All.",
                "properties.filter.tagSettings.filterOperator",
            )


def _filter_matches(flt: dict[str, Any] | None, machine: dict[str, Any], rg_lower: str) -> bool:
    """A subscription or resource group assignment's filter (a dynamic scope): every given list must match."""
    if not flt:
        return True
    types = flt.get("resourceTypes")
    if types and MACHINE_TYPE not in {t.lower() for t in types}:
        return False
    groups = flt.get("resourceGroups")
    if groups and rg_lower not in {g.lower() for g in groups}:
        return False
    os_types = flt.get("osTypes")
    os_type = str((machine.get("properties") or {}).get("osType") or "").lower()
    if os_types and os_type not in {o.lower() for o in os_types}:
        return False
    locations = flt.get("locations")
    if locations and _norm_location(machine.get("location")) not in {_norm_location(x) for x in locations}:
        return False
    tag_settings = flt.get("tagSettings") or {}
    wanted: dict[str, list[str]] = tag_settings.get("tags") or {}
    if wanted:
        have = {k.lower(): v for k, v in (machine.get("tags") or {}).items()}
        hits = [k.lower() in have and have[k.lower()] in v for k, v in wanted.items()]
        if not (all(hits) if tag_settings.get("filterOperator") == "All" else any(hits)):
            return False
    return True
