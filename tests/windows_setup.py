"""Maintenance-window set-up the engine's window suites share (tests/test_engine_windows.py,
tests/test_window_webhooks.py): a maintenance configuration with its window, assigned to machines or to a
subscription or resource group, over the Microsoft.Maintenance API of a live server."""

from __future__ import annotations

from typing import Any

import requests

from arcext.testing import ArcextServer
from conftest import API, SUB, machine_url

MW_API = "2023-04-01"
ASSIGNMENTS = "providers/Microsoft.Maintenance/configurationAssignments"


def put_json(s: requests.Session, url: str, body: dict[str, Any], api: str = API) -> dict[str, Any]:
    """PUT a body, expect 200 or 201, return the answer."""
    r = s.put(url, params={"api-version": api}, json=body)
    assert r.status_code in (200, 201), r.text
    found: dict[str, Any] = r.json()
    return found


def window_configuration(
    s: requests.Session,
    arc: ArcextServer,
    name: str,
    start: str,
    duration: str,
    time_zone: str,
    recur: str,
    location: str = "eastus",
) -> dict[str, Any]:
    """A maintenance configuration (scope Extension) in resource group ``ops`` with one window: ``start`` is
    "YYYY-MM-DD HH:MM" in ``time_zone`` (a Windows zone name or UTC), ``recur`` as Azure writes it."""
    return put_json(
        s,
        f"{arc.url}/subscriptions/{SUB}/resourceGroups/ops/providers/Microsoft.Maintenance/maintenanceConfigurations/{name}",
        {
            "location": location,
            "properties": {
                "maintenanceScope": "Extension",
                "maintenanceWindow": {
                    "startDateTime": start,
                    "duration": duration,
                    "timeZone": time_zone,
                    "recurEvery": recur,
                },
            },
        },
        MW_API,
    )


def assign(
    s: requests.Session, scope_url: str, name: str, configuration: dict[str, Any], filter: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Assign ``configuration`` under ``scope_url`` (a machine's, a resource group's or a subscription's URL),
    with a dynamic scope's ``filter`` if given."""
    properties: dict[str, Any] = {"maintenanceConfigurationId": configuration["id"]}
    if filter is not None:
        properties["filter"] = filter
    return put_json(s, f"{scope_url}/{ASSIGNMENTS}/{name}", {"properties": properties}, MW_API)


def assign_machines(
    s: requests.Session, arc: ArcextServer, machines: list[str], name: str, configuration: dict[str, Any]
) -> None:
    """Assign ``configuration`` to each machine of resource group rg1."""
    for m in machines:
        assign(s, machine_url(arc, m, "rg1"), name, configuration)
