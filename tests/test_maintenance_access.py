"""A configurationAssignment links a maintenance configuration, which may sit in another resource group or
subscription: the caller must be able to read that configuration (real HTTP, tokens with scoped roles)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from arcext.testing import ArcextServer
from test_bad_input import assert_arm_error

API = "2023-04-01"
NS = "providers/Microsoft.Maintenance"
WINDOW = {
    "startDateTime": "2026-03-01 22:00",
    "duration": "02:00",
    "timeZone": "UTC",
    "recurEvery": "Week Saturday",
}


def _sub(server: ArcextServer) -> str:
    return f"{server.url}/subscriptions/{server.subscription_id}"


def _call(server: ArcextServer, method: str, url: str, token: str, body: Any = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.request(method, url, params={"api-version": API}, json=body, headers=headers, timeout=30)


def _configuration(server: ArcextServer, rg: str, name: str) -> str:
    """A maintenance configuration made with the server's Owner token; its id."""
    url = f"{_sub(server)}/resourceGroups/{rg}/{NS}/maintenanceConfigurations/{name}"
    body = {"location": "eastus", "properties": {"maintenanceScope": "Extension", "maintenanceWindow": WINDOW}}
    r = _call(server, "PUT", url, server.token, body)
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


def _machine(server: ArcextServer, rg: str, name: str) -> None:
    url = f"{_sub(server)}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{name}"
    r = requests.put(
        url,
        params={"api-version": "2024-07-10"},
        json={"location": "eastus"},
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text


def _assignment_url(server: ArcextServer, where: str, name: str) -> str:
    """``where``: "rg:<group>", "machine:<group>/<name>" or "sub"."""
    if where == "sub":
        return f"{_sub(server)}/{NS}/configurationAssignments/{name}"
    if where.startswith("rg:"):
        return f"{_sub(server)}/resourceGroups/{where[3:]}/{NS}/configurationAssignments/{name}"
    rg, machine = where[len("machine:") :].split("/")
    return (
        f"{_sub(server)}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{machine}"
        f"/{NS}/configurationAssignments/{name}"
    )


def _assign(config_id: str) -> dict[str, Any]:
    return {"location": "eastus", "properties": {"maintenanceConfigurationId": config_id}}


@pytest.mark.parametrize(
    ("where", "token_scope"),
    [
        ("rg:app-rg", "resourceGroups/app-rg"),
        ("machine:app-rg/web-01", "resourceGroups/app-rg"),
    ],
)
def test_an_assignment_to_a_configuration_the_caller_cannot_read_is_403_and_not_stored(
    arcext_server: ArcextServer, where: str, token_scope: str
) -> None:
    secret = _configuration(arcext_server, "ops-rg", "ops-window")
    _machine(arcext_server, "app-rg", "web-01")
    scoped = arcext_server.create_token("Contributor", f"/subscriptions/{arcext_server.subscription_id}/{token_scope}")
    url = _assignment_url(arcext_server, where, "borrowed")

    error = assert_arm_error(_call(arcext_server, "PUT", url, scoped, _assign(secret)), 403, "AuthorizationFailed")
    assert "Microsoft.Maintenance/maintenanceConfigurations/read" in error["message"]
    assert secret in error["message"]  # it names the linked configuration the caller cannot read

    # nothing was stored: the Owner sees no such assignment, and the configuration applies nowhere
    assert _call(arcext_server, "GET", url, arcext_server.token).status_code == 404
    listed = _call(arcext_server, "GET", f"{_sub(arcext_server)}/{NS}/configurationAssignments", arcext_server.token)
    assert listed.status_code == 200 and listed.json()["value"] == []


def test_a_configuration_the_caller_cannot_see_gets_the_same_403_whether_it_exists_or_not(
    arcext_server: ArcextServer,
) -> None:
    """The 403 comes before the existence check: a caller cannot probe other groups for configurations."""
    real = _configuration(arcext_server, "ops-rg", "ops-window")
    missing = real.replace("ops-window", "no-such-window")
    scoped = arcext_server.create_token(
        "Owner", f"/subscriptions/{arcext_server.subscription_id}/resourceGroups/app-rg"
    )
    url = _assignment_url(arcext_server, "rg:app-rg", "probe")
    answers = [
        assert_arm_error(_call(arcext_server, "PUT", url, scoped, _assign(config_id)), 403, "AuthorizationFailed")
        for config_id in (real, missing)
    ]
    # the same answer, but for the name the caller sent: nothing says which of the two exists
    assert answers[0] == {k: v.replace("no-such-window", "ops-window") for k, v in answers[1].items()}


def test_patch_is_checked_too(arcext_server: ArcextServer) -> None:
    own = _configuration(arcext_server, "app-rg", "app-window")
    secret = _configuration(arcext_server, "ops-rg", "ops-window")
    scoped = arcext_server.create_token(
        "Contributor", f"/subscriptions/{arcext_server.subscription_id}/resourceGroups/app-rg"
    )
    url = _assignment_url(arcext_server, "rg:app-rg", "mine")
    assert _call(arcext_server, "PUT", url, scoped, _assign(own)).status_code == 201

    assert_arm_error(_call(arcext_server, "PATCH", url, scoped, _assign(secret)), 403, "AuthorizationFailed")
    kept = _call(arcext_server, "GET", url, scoped)
    assert kept.status_code == 200
    assert kept.json()["properties"]["maintenanceConfigurationId"].lower() == own.lower()  # unchanged


def test_a_reader_of_the_configuration_may_link_it(arcext_server: ArcextServer) -> None:
    """Contributor where the assignment goes and Reader where the configuration is: allowed (a subscription-wide
    Contributor token reads every group of the subscription)."""
    shared = _configuration(arcext_server, "ops-rg", "ops-window")
    _machine(arcext_server, "app-rg", "web-01")
    sub_wide = arcext_server.create_token("Contributor", f"/subscriptions/{arcext_server.subscription_id}")
    url = _assignment_url(arcext_server, "machine:app-rg/web-01", "shared")
    r = _call(arcext_server, "PUT", url, sub_wide, _assign(shared))
    assert r.status_code == 201, r.text
    assert r.json()["properties"]["maintenanceConfigurationId"].lower() == shared.lower()


def test_a_readable_configuration_that_does_not_exist_is_400_and_not_stored(arcext_server: ArcextServer) -> None:
    """As Azure answers a link to a missing configuration: a 400 that names the property, nothing stored."""
    real = _configuration(arcext_server, "app-rg", "app-window")
    missing = real.replace("app-window", "no-such-window")
    url = _assignment_url(arcext_server, "sub", "dangling")
    error = assert_arm_error(
        _call(arcext_server, "PUT", url, arcext_server.token, _assign(missing)), 400, "InvalidParameter"
    )
    assert error["target"] == "properties.maintenanceConfigurationId"
    assert "was not found" in error["message"]
    assert _call(arcext_server, "GET", url, arcext_server.token).status_code == 404


def test_a_reader_cannot_write_an_assignment_at_all(arcext_server: ArcextServer) -> None:
    shared = _configuration(arcext_server, "ops-rg", "ops-window")
    reader = arcext_server.create_token("Reader", f"/subscriptions/{arcext_server.subscription_id}")
    url = _assignment_url(arcext_server, "rg:app-rg", "nope")
    assert_arm_error(_call(arcext_server, "PUT", url, reader, _assign(shared)), 403, "AuthorizationFailed")
    assert _call(arcext_server, "GET", url, arcext_server.token).status_code == 404  # nothing stored
