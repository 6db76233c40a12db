"""Bad input gets a clear ARM error with the right status and code, and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, rg_url, wait_operation


def snapshot(session: requests.Session, server: ArcextServer) -> Any:
    """Everything the API can show about the subscription's machines and extensions."""
    r = session.get(
        f"{server.url}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/machines", params={"api-version": API}
    )
    assert r.status_code == 200
    return r.json()


def assert_arm_error(r: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert len(body["error"]["message"]) > 20  # a sentence a person can act on
    assert r.headers["x-ms-request-id"]
    return body["error"]


CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    # (id, method, path suffix, request kwargs, status, code)
    (
        "missing api-version",
        "PUT",
        "ext",
        {"json": {"location": "eastus"}, "no_api": True},
        400,
        "MissingApiVersionParameter",
    ),
    (
        "malformed json",
        "PUT",
        "ext",
        {"data": b'{"location": "eastus", ', "json_ct": True},
        400,
        "InvalidRequestContent",
    ),
    ("json array body", "PUT", "ext", {"json": ["location"]}, 400, "InvalidRequestContent"),
    (
        "boolean as string",
        "PUT",
        "ext",
        {
            "json": {
                "location": "eastus",
                "properties": {"publisher": "P", "type": "T", "enableAutomaticUpgrade": "yes"},
            }
        },
        400,
        "InvalidRequestContent",
    ),
    (
        "settings not an object",
        "PATCH",
        "ext",
        {"json": {"properties": {"settings": "commandToExecute=dir"}}},
        400,
        "InvalidRequestContent",
    ),
    ("location not a string", "PUT", "machine2", {"json": {"location": 5}}, 400, "InvalidRequestContent"),
    (
        "machine name outside the pattern",
        "PUT",
        "badmachine",
        {"json": {"location": "eastus"}},
        400,
        "InvalidResourceName",
    ),
    (
        "body over 1 MiB",
        "PUT",
        "ext",
        {
            "json": {
                "location": "eastus",
                "properties": {"publisher": "P", "type": "T", "settings": {"blob": "x" * (1024 * 1024 + 10)}},
            }
        },
        413,
        "RequestEntityTooLarge",
    ),
    (
        "extension PUT without location",
        "PUT",
        "ext2",
        {"json": {"properties": {"publisher": "P", "type": "T"}}},
        400,
        "LocationRequired",
    ),
    ("machine PUT without location", "PUT", "machine2", {"json": {"properties": {}}}, 400, "LocationRequired"),
    (
        "extension PUT without publisher",
        "PUT",
        "ext2",
        {"json": {"location": "eastus", "properties": {"type": "T"}}},
        400,
        "InvalidParameter",
    ),
    (
        "PATCH of a missing extension",
        "PATCH",
        "ext2",
        {"json": {"properties": {"enableAutomaticUpgrade": False}}},
        404,
        "ResourceNotFound",
    ),
    (
        "extension under a missing machine",
        "PUT",
        "orphan",
        {"json": {"location": "eastus", "properties": {"publisher": "P", "type": "T"}}},
        404,
        "ParentResourceNotFound",
    ),
    ("subscription not a GUID", "PUT", "badsub", {"json": {"location": "eastus"}}, 400, "InvalidSubscriptionId"),
    (
        "text/plain body",
        "PUT",
        "ext",
        {"data": b'{"location": "eastus"}', "ct": "text/plain"},
        415,
        "UnsupportedMediaType",
    ),
    ("unknown route", "GET", "nowhere", {}, 404, "NotFound"),
]


def _url(server: ArcextServer, which: str) -> str:
    return {
        "ext": ext_url(server),
        "ext2": ext_url(server, "second"),
        "machine2": machine_url(server, "m2"),
        "badmachine": machine_url(server, "bad name!"),
        "orphan": ext_url(server, "cse", machine="ghost"),
        "badsub": f"{server.url}/subscriptions/not-a-guid/resourceGroups/rg1/providers/Microsoft.HybridCompute/"
        "machines/m3",
        "nowhere": f"{rg_url(server)}/widgets/w1",
    }[which]


@pytest.mark.parametrize(
    ("method", "which", "kwargs", "status", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_rejected_and_changes_nothing(
    seeded: ArcextServer,
    arcext_session: requests.Session,
    method: str,
    which: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    before = snapshot(arcext_session, seeded)
    kwargs = dict(kwargs)
    params = {} if kwargs.pop("no_api", False) else {"api-version": API}
    headers = {}
    if kwargs.pop("json_ct", False):
        headers["Content-Type"] = "application/json"
    if "ct" in kwargs:
        headers["Content-Type"] = kwargs.pop("ct")
    r = arcext_session.request(method, _url(seeded, which), params=params, headers=headers, **kwargs)
    assert_arm_error(r, status, code)
    seeded.wait_for_operations()
    assert snapshot(arcext_session, seeded) == before


def test_wrong_type_error_names_the_field(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    r = arcext_session.patch(
        ext_url(seeded), params={"api-version": API}, json={"properties": {"enableAutomaticUpgrade": "false"}}
    )
    error = assert_arm_error(r, 400, "InvalidRequestContent")
    assert error["target"] == "properties.enableAutomaticUpgrade"
    assert "boolean" in error["message"]


def test_write_during_operation_in_flight_gets_409(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    runner = seeded.services.resources.runner
    runner.pause()
    try:
        first = arcext_session.patch(
            ext_url(seeded), params={"api-version": API}, json={"properties": {"enableAutomaticUpgrade": False}}
        )
        assert first.status_code == 202
        during = arcext_session.get(ext_url(seeded), params={"api-version": API}).json()
        assert during["properties"]["provisioningState"] == "Updating"
        for method, url, body in [
            ("PATCH", ext_url(seeded), {"properties": {"settings": {"a": 1}}}),
            ("PUT", ext_url(seeded), {"location": "eastus", "properties": {"publisher": "P", "type": "T"}}),
            ("DELETE", ext_url(seeded), None),
            ("DELETE", machine_url(seeded), None),
        ]:
            r = arcext_session.request(method, url, params={"api-version": API}, json=body)
            assert_arm_error(r, 409, "AnotherOperationInProgress")
    finally:
        runner.resume()
    assert wait_operation(arcext_session, first)["status"] == "Succeeded"
    after = arcext_session.get(ext_url(seeded), params={"api-version": API}).json()
    assert after["properties"]["enableAutomaticUpgrade"] is False
    assert after["properties"]["settings"] == {"commandToExecute": "hostname"}
    assert after["properties"]["provisioningState"] == "Succeeded"


def test_admin_bad_input(arcext_server: ArcextServer, arcext_session: requests.Session) -> None:
    url = f"{arcext_server.url}/arcext/v1/catalog/Microsoft.Compute/CustomScriptExtension"
    assert_arm_error(arcext_session.put(url, json={"autoUpgradeSupported": "true"}), 400, "InvalidRequestContent")
    assert_arm_error(arcext_session.put(url, json={}), 400, "InvalidRequestContent")
    assert_arm_error(arcext_session.put(f"{url}/versions/1.x", json={}), 400, "InvalidParameter")
    r = arcext_session.get(f"{arcext_server.url}/arcext/v1/catalog/Microsoft.Compute/CustomScriptExtension")
    assert_arm_error(r, 404, "ResourceNotFound")
    assert json.loads(arcext_session.get(f"{arcext_server.url}/arcext/v1/catalog").text)  # seeded types remain
