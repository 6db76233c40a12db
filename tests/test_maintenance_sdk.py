"""Maintenance windows through the unmodified azure-mgmt-maintenance 2.1.0 SDK (api-version 2023-04-01)."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.policies import AzureKeyCredentialPolicy
from azure.mgmt.maintenance import MaintenanceManagementClient
from azure.mgmt.maintenance.models import (
    ConfigurationAssignment,
    ConfigurationAssignmentFilterProperties,
    MaintenanceConfiguration,
)

from arcext.testing import ArcextServer
from arcext.testing.server import StaticTokenCredential

RG = "mw-rg"


def _client(server: ArcextServer, token: str | None = None) -> MaintenanceManagementClient:
    value = token or server.token
    return MaintenanceManagementClient(
        StaticTokenCredential(value),
        server.subscription_id,
        base_url=server.url,
        authentication_policy=AzureKeyCredentialPolicy(AzureKeyCredential(value), "Authorization", prefix="Bearer"),
    )


def _config(**window: Any) -> MaintenanceConfiguration:
    values = {
        "start_date_time": "2026-03-01 22:00",
        "duration": "02:00",
        "time_zone": "Pacific Standard Time",
        "recur_every": "Week Saturday",
        **window,
    }
    return MaintenanceConfiguration(location="eastus", maintenance_scope="Extension", **values)


def _machine(server: ArcextServer, name: str, rg: str = RG) -> str:
    session = server.session()
    url = (
        f"{server.url}/subscriptions/{server.subscription_id}/resourceGroups/{rg}"
        f"/providers/Microsoft.HybridCompute/machines/{name}"
    )
    r = session.put(url, params={"api-version": "2024-07-10"}, json={"location": "eastus"})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


def test_configuration_and_assignments_round_trip(arcext_server: ArcextServer) -> None:
    machine_id = _machine(arcext_server, "web-01")
    with _client(arcext_server) as client:
        created = client.maintenance_configurations.create_or_update(RG, "weekend", _config())
        assert created.maintenance_scope == "Extension"
        assert created.id.endswith(
            f"/resourceGroups/{RG}/providers/Microsoft.Maintenance/maintenanceConfigurations/weekend"
        )
        got = client.maintenance_configurations.get(RG, "weekend")
        assert (got.start_date_time, got.duration, got.time_zone, got.recur_every) == (
            "2026-03-01 22:00",
            "02:00",
            "Pacific Standard Time",
            "Week Saturday",
        )
        assert [c.name for c in client.maintenance_configurations_for_resource_group.list(RG)] == ["weekend"]
        assert [c.name for c in client.maintenance_configurations.list()] == ["weekend"]

        # on a machine
        assignment = client.configuration_assignments.create_or_update(
            RG,
            "Microsoft.HybridCompute",
            "machines",
            "web-01",
            "weekend-web-01",
            ConfigurationAssignment(maintenance_configuration_id=created.id),
        )
        assert assignment.resource_id.lower() == machine_id.lower()
        read = client.configuration_assignments.get(
            RG, "Microsoft.HybridCompute", "machines", "web-01", "weekend-web-01"
        )
        assert read.maintenance_configuration_id == created.id
        listed = client.configuration_assignments.list(RG, "Microsoft.HybridCompute", "machines", "web-01")
        assert [a.name for a in listed] == ["weekend-web-01"]

        # on a resource group, with a filter (a dynamic scope)
        group = client.configuration_assignments_for_resource_group.create_or_update(
            RG,
            "weekend-rg",
            ConfigurationAssignment(
                maintenance_configuration_id=created.id,
                filter=ConfigurationAssignmentFilterProperties(
                    resource_types=["Microsoft.HybridCompute/machines"], locations=["eastus"]
                ),
            ),
        )
        assert (
            group.resource_id.lower() == f"/subscriptions/{arcext_server.subscription_id}/resourcegroups/{RG}".lower()
        )
        back = client.configuration_assignments_for_resource_group.get(RG, "weekend-rg")
        assert back.filter.resource_types == ["Microsoft.HybridCompute/machines"]
        assert back.maintenance_configuration_id == created.id

        # on a subscription
        client.configuration_assignments_for_subscriptions.create_or_update(
            "weekend-sub", ConfigurationAssignment(maintenance_configuration_id=created.id)
        )
        assert client.configuration_assignments_for_subscriptions.get("weekend-sub").name == "weekend-sub"
        names = sorted(a.name for a in client.configuration_assignments_within_subscription.list())
        assert names == ["weekend-rg", "weekend-sub", "weekend-web-01"]

        # the machine's windows show in the pending view
        pending = arcext_server.session().get(
            f"{arcext_server.url}/arcext/v1{machine_id.replace('/providers/Microsoft.HybridCompute', '')}/pending",
            params={"api-version": "2024-07-10"},
        )
        assert pending.status_code == 200, pending.text
        assert [w["name"] for w in pending.json()["maintenanceWindows"]] == ["weekend"]

        client.configuration_assignments_for_subscriptions.delete("weekend-sub")
        client.configuration_assignments_for_resource_group.delete(RG, "weekend-rg")
        client.configuration_assignments.delete(RG, "Microsoft.HybridCompute", "machines", "web-01", "weekend-web-01")
        with pytest.raises(ResourceNotFoundError):
            client.configuration_assignments_for_resource_group.get(RG, "weekend-rg")
        client.maintenance_configurations.delete(RG, "weekend")
        with pytest.raises(ResourceNotFoundError):
            client.maintenance_configurations.get(RG, "weekend")


@pytest.mark.parametrize(
    ("window", "target", "words"),
    [
        ({"start_date_time": "2026-03-01"}, "startDateTime", "yyyy-MM-dd HH:mm"),
        ({"start_date_time": "2026-02-30 10:00"}, "startDateTime", "not a valid date"),
        ({"duration": "2h"}, "duration", "HH:mm"),
        ({"duration": "00:30"}, "duration", "between 01:30"),
        ({"time_zone": "Middle Earth Time"}, "timeZone", "not a time zone"),
        ({"recur_every": "Fortnight"}, "recurEvery", "not a recurrence"),
        ({"recur_every": "Week Funday"}, "recurEvery", "not a recurrence"),
        ({"recur_every": "Month Last Sunday Offset9"}, "recurEvery", "not a recurrence"),
        ({"recur_every": "Month day32"}, "recurEvery", "not a recurrence"),
        ({"expiration_date_time": "2025-01-01 00:00"}, "expirationDateTime", "later than startDateTime"),
    ],
)
def test_bad_windows_are_arm_400s(arcext_server: ArcextServer, window: dict[str, Any], target: str, words: str) -> None:
    with _client(arcext_server) as client, pytest.raises(HttpResponseError) as caught:
        client.maintenance_configurations.create_or_update(RG, "bad", _config(**window))
    assert caught.value.status_code == 400
    assert caught.value.error is not None
    assert caught.value.error.code == "InvalidParameter"
    assert words in str(caught.value.error.message)
    assert str(caught.value.error.target).endswith(target)


def test_other_scopes_unknown_configuration_and_roles(arcext_server: ArcextServer) -> None:
    _machine(arcext_server, "web-02")
    url = (
        f"{arcext_server.url}/subscriptions/{arcext_server.subscription_id}/resourceGroups/{RG}"
        "/providers/Microsoft.Maintenance/maintenanceConfigurations/guest"
    )
    session = arcext_server.session()
    body = {
        "location": "eastus",
        "properties": {
            "maintenanceScope": "InGuestPatch",
            "maintenanceWindow": {"startDateTime": "2026-03-01 22:00", "timeZone": "UTC", "recurEvery": "Day"},
        },
    }
    r = session.put(url, params={"api-version": "2023-04-01"}, json=body)
    assert r.status_code == 400 and "maintenanceScope" in r.json()["error"]["message"]
    with _client(arcext_server) as client, pytest.raises(HttpResponseError) as caught:
        client.configuration_assignments.create_or_update(
            RG,
            "Microsoft.HybridCompute",
            "machines",
            "web-02",
            "a",
            ConfigurationAssignment(
                maintenance_configuration_id=url.removeprefix(arcext_server.url).replace("guest", "missing")
            ),
        )
    assert caught.value.status_code == 400

    reader = arcext_server.create_token("Reader", f"/subscriptions/{arcext_server.subscription_id}")
    body["properties"]["maintenanceScope"] = "Extension"
    denied = requests.put(
        url, params={"api-version": "2023-04-01"}, json=body, headers={"Authorization": f"Bearer {reader}"}, timeout=10
    )
    assert denied.status_code == 403
    assert session.put(url, params={"api-version": "2023-04-01"}, json=body).status_code == 201
    ok = requests.get(
        url, params={"api-version": "2023-04-01"}, headers={"Authorization": f"Bearer {reader}"}, timeout=10
    )
    assert ok.status_code == 200 and ok.json()["properties"]["maintenanceWindow"]["duration"] == "01:30"


def test_the_portal_shows_a_machines_windows(arcext_server: ArcextServer) -> None:
    from test_portal_client import Portal

    _machine(arcext_server, "web-03")
    with _client(arcext_server) as client:
        config = client.maintenance_configurations.create_or_update(RG, "nightly", _config(recur_every="Day"))
        client.configuration_assignments_for_resource_group.create_or_update(
            RG, "nightly", ConfigurationAssignment(maintenance_configuration_id=config.id)
        )
    portal = Portal(arcext_server).sign_in(arcext_server.token)
    page = portal.get(f"/portal/subscriptions/{arcext_server.subscription_id}/resourceGroups/{RG}/machines/web-03")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="maintenance-windows"' in html and "nightly" in html and "Pacific Standard Time" in html
    _machine(arcext_server, "lonely", rg="elsewhere")
    alone = portal.get(
        f"/portal/subscriptions/{arcext_server.subscription_id}/resourceGroups/elsewhere/machines/lonely"
    )
    assert "None assigned" in alone.get_data(as_text=True)
