"""Manual upgrade (POST .../machines/{m}/upgradeExtensions) through the public API and the unmodified SDK.

Issue 3: targets keyed "publisher.type" (a publisher-only key when it names exactly one extension on the
machine), runs at once with the user as caller, same rollback semantics as automatic upgrades; an
unknown target version, a target the machine does not have, or a downgrade each get a clear 400 and
change nothing. Every check looks at the server's answers, the stored extension, the simulated host and
the activity log.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.mgmt.hybridcompute.models import ExtensionTargetProperties, MachineExtensionUpgrade

from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, put_machine

RG = "rg1"
MACHINE = "m1"
CSE = ("Microsoft.Compute", "CustomScriptExtension")
AMA = ("Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent")
SETTINGS = {"commandToExecute": "hostname"}
PROTECTED = {"storageAccountKey": "s3cr3t-key"}
UPGRADE_OPERATION = "Microsoft.HybridCompute/machines/upgradeExtensions/action"
AUTOMATIC_CALLER = "Azure Regional Service Manager"
TERMINAL = {"Succeeded", "Failed", "Canceled"}


# --- helpers ---------------------------------------------------------------------------------------
def publish(session: requests.Session, server: ArcextServer, publisher: str, ext_type: str, version: str) -> None:
    r = session.put(
        f"{server.url}/arcext/v1/catalog/{publisher}/{ext_type}/versions/{version}", json={"critical": False}
    )
    assert r.status_code in (200, 201), r.text


def install(
    session: requests.Session, server: ArcextServer, name: str, handler: tuple[str, str], version: str, **props: Any
) -> None:
    r = session.put(
        ext_url(server, name, MACHINE, RG),
        params={"api-version": API},
        json={
            "location": "eastus",
            "properties": {"publisher": handler[0], "type": handler[1], "typeHandlerVersion": version, **props},
        },
    )
    assert r.status_code in (200, 202), r.text
    assert server.wait_for_operations(10)
    assert get_ext(session, server, name)["properties"]["provisioningState"] == "Succeeded"


def get_ext(session: requests.Session, server: ArcextServer, name: str) -> dict[str, Any]:
    r = session.get(ext_url(server, name, MACHINE, RG), params={"api-version": API})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def host(session: requests.Session, server: ArcextServer) -> dict[str, Any]:
    r = session.get(f"{server.url}/arcext/v1/simulated-hosts/{MACHINE}")
    assert r.status_code == 200, r.text
    hosts = r.json()["hosts"]
    assert len(hosts) == 1, hosts
    found: dict[str, Any] = hosts[0]
    return found


def upgrade(
    session: requests.Session, server: ArcextServer, targets: dict[str, str], machine: str = MACHINE
) -> requests.Response:
    return session.post(
        f"{machine_url(server, machine, RG)}/upgradeExtensions",
        params={"api-version": API},
        json={"extensionTargets": {k: {"targetVersion": v} for k, v in targets.items()}},
    )


def finish(session: requests.Session, accepted: requests.Response, timeout: float = 10) -> dict[str, Any]:
    """The 202 of upgradeExtensions, then its operation polled every 0.05 s until terminal."""
    assert accepted.status_code == 202, accepted.text
    assert not accepted.content, f"the 202 of an action has no body: {accepted.text}"
    for header in ("Azure-AsyncOperation", "Location", "Retry-After"):
        assert accepted.headers.get(header), f"202 lacks {header}: {dict(accepted.headers)}"
    assert accepted.headers["Retry-After"].isdigit()
    assert "/operationstatus/" in accepted.headers["Azure-AsyncOperation"]
    assert "/operationresults/" in accepted.headers["Location"]
    deadline = time.monotonic() + timeout
    while True:
        r = session.get(accepted.headers["Azure-AsyncOperation"])
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in TERMINAL:
            return body
        assert body["status"] == "InProgress", body
        assert time.monotonic() < deadline, f"operation still InProgress after {timeout} s: {body}"
        time.sleep(0.05)


def events(session: requests.Session, server: ArcextServer, resource_id: str, since: str) -> list[dict[str, Any]]:
    """Activity-log events of one extension since ``since``, oldest first."""
    r = session.get(
        f"{server.url}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values",
        params={
            "api-version": "2015-04-01",
            "$filter": f"eventTimestamp ge '{since}' and resourceUri eq '{resource_id}'",
        },
    )
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["value"]
    assert all(e["resourceId"].lower() == resource_id.lower() for e in found), found
    return sorted(found, key=lambda e: e["eventTimestamp"])


def an_hour_ago() -> str:
    return (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def assert_error(response: requests.Response, code: str, *fragments: str) -> dict[str, Any]:
    assert response.status_code == 400, f"expected 400 {code}, got {response.status_code}: {response.text}"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    for fragment in fragments:
        assert fragment.lower() in error["message"].lower(), f"{fragment!r} not in {error['message']!r}"
    return error


@pytest.fixture
def fleet(arcext_server: ArcextServer, arcext_session: requests.Session) -> ArcextServer:
    """m1 with CustomScriptExtension 'cse' 1.9 (settings and protected settings) and AzureMonitorWindowsAgent
    'ama' 1.20.0; published: CSE 1.8, 1.9, 1.10 and AMA 1.20.0, 1.22.0.

    The versions are published before the extensions exist: a version published under an opted-in
    extension on an older one starts an automatic rollout at once, which would race the manual upgrade."""
    s, arc = arcext_session, arcext_server
    for version in ("1.8", "1.9", "1.10"):
        publish(s, arc, *CSE, version)
    for version in ("1.20.0", "1.22.0"):
        publish(s, arc, *AMA, version)
    put_machine(s, arc, MACHINE, RG)
    install(s, arc, "cse", CSE, "1.9", settings=SETTINGS, protectedSettings=PROTECTED)
    install(s, arc, "ama", AMA, "1.20.0")
    return arc


# --- the SDK ----------------------------------------------------------------------------------------
def test_sdk_begin_upgrade_extensions_completes(
    fleet: ArcextServer, arcext_session: requests.Session, arcext_client: Any
) -> None:
    before_host = host(arcext_session, fleet)["extensions"]["cse"]
    poller = arcext_client.begin_upgrade_extensions(
        RG,
        MACHINE,
        MachineExtensionUpgrade(
            extension_targets={
                "Microsoft.Compute.CustomScriptExtension": ExtensionTargetProperties(target_version="1.10")
            }
        ),
    )
    assert poller.result(timeout=30) is None
    assert poller.done() and poller.status().lower() == "succeeded"

    cse = arcext_client.machine_extensions.get(RG, MACHINE, "cse")
    assert cse.properties.type_handler_version == "1.10"  # 1.10 > 1.9: versions compare component by component
    assert cse.properties.provisioning_state == "Succeeded"
    assert cse.properties.instance_view.type_handler_version == "1.10"
    assert cse.properties.settings == SETTINGS
    assert arcext_client.machine_extensions.get(RG, MACHINE, "ama").properties.type_handler_version == "1.20.0"

    on_host = host(arcext_session, fleet)["extensions"]
    assert on_host["cse"]["version"] == "1.10"
    assert on_host["cse"]["state"] == "enabled"
    assert on_host["cse"]["settings"] == SETTINGS
    assert on_host["cse"]["protectedSha256"] == before_host["protectedSha256"], "protected settings changed"
    assert on_host["ama"]["version"] == "1.20.0", "an extension that was not a target was touched"


# --- the HTTP surface ----------------------------------------------------------------------------
def test_several_targets_at_once(fleet: ArcextServer, arcext_session: requests.Session) -> None:
    s = arcext_session
    since = an_hour_ago()
    accepted = upgrade(
        s,
        fleet,
        {
            "Microsoft.Compute.CustomScriptExtension": "1.10",
            "Microsoft.Azure.Monitor.AzureMonitorWindowsAgent": "1.22.0",
        },
    )
    status = finish(s, accepted)
    assert status["status"] == "Succeeded", status
    assert status["properties"] == [], "Azure's Succeeded status of upgradeExtensions has properties []"
    assert status["name"] == accepted.headers["Azure-AsyncOperation"].split("?")[0].rsplit("/", 1)[1]
    assert status["startTime"]
    result = s.get(accepted.headers["Location"])
    assert (result.status_code, result.json()) == (200, [])

    on_host = host(s, fleet)["extensions"]
    for name, version in (("cse", "1.10"), ("ama", "1.22.0")):
        props = get_ext(s, fleet, name)["properties"]
        assert (props["typeHandlerVersion"], props["provisioningState"]) == (version, "Succeeded"), props
        assert on_host[name]["version"] == version
    correlation = set()
    for name in ("cse", "ama"):
        found = events(s, fleet, get_ext(s, fleet, name)["id"], since)
        assert [e["status"]["value"] for e in found] == ["Started", "Succeeded"], found
        correlation |= {e["correlationId"] for e in found}
    assert len(correlation) == 1, f"one request, one correlationId: {correlation}"


def test_publisher_only_key_names_the_one_extension_of_that_publisher(
    fleet: ArcextServer, arcext_session: requests.Session
) -> None:
    status = finish(arcext_session, upgrade(arcext_session, fleet, {"Microsoft.Azure.Monitor": "1.22.0"}))
    assert status["status"] == "Succeeded", status
    assert get_ext(arcext_session, fleet, "ama")["properties"]["typeHandlerVersion"] == "1.22.0"
    assert get_ext(arcext_session, fleet, "cse")["properties"]["typeHandlerVersion"] == "1.9"
    assert host(arcext_session, fleet)["extensions"]["ama"]["version"] == "1.22.0"


def test_publisher_only_key_naming_several_extensions_is_rejected(
    fleet: ArcextServer, arcext_session: requests.Session
) -> None:
    s = arcext_session
    publish(s, fleet, "Microsoft.Compute", "BGInfo", "2.2")
    install(s, fleet, "bginfo", ("Microsoft.Compute", "BGInfo"), "2.1")
    before = {n: get_ext(s, fleet, n) for n in ("cse", "bginfo")}
    error = assert_error(
        upgrade(s, fleet, {"Microsoft.Compute": "1.10"}), "InvalidParameter", "Microsoft.Compute", "several"
    )
    assert "Microsoft.Compute" in error.get("target", ""), error
    assert {n: get_ext(s, fleet, n) for n in ("cse", "bginfo")} == before


# --- 400s: a clear error, nothing changed ----------------------------------------------------------
BAD_TARGETS = {
    # name: (targets, message fragments)
    "unknown target version": ({"Microsoft.Compute.CustomScriptExtension": "1.11"}, ("1.11", "not published", "1.10")),
    "extension the machine does not have": (
        {"Microsoft.Azure.Security.IaaSAntimalware": "1.5"},
        ("Microsoft.Azure.Security.IaaSAntimalware", "no extension"),
    ),
    "downgrade": ({"Microsoft.Compute.CustomScriptExtension": "1.8"}, ("1.9", "1.8", "downgrade")),
    # all or nothing: the valid target of a request with one bad target is not upgraded either
    "one bad target among good ones": (
        {
            "Microsoft.Azure.Monitor.AzureMonitorWindowsAgent": "1.22.0",
            "Microsoft.Compute.CustomScriptExtension": "1.8",
        },
        ("downgrade",),
    ),
}


@pytest.mark.parametrize("case", list(BAD_TARGETS))
def test_bad_target_is_a_clear_400_and_changes_nothing(
    fleet: ArcextServer, arcext_session: requests.Session, case: str
) -> None:
    s = arcext_session
    targets, fragments = BAD_TARGETS[case]
    since = an_hour_ago()
    before = {n: get_ext(s, fleet, n) for n in ("cse", "ama")}
    host_before = host(s, fleet)

    response = upgrade(s, fleet, targets)
    error = assert_error(response, "InvalidParameter", *fragments)
    assert error.get("target", "").startswith("extensionTargets"), error
    assert "Azure-AsyncOperation" not in response.headers

    time.sleep(0.2)  # anything wrongly queued would have started by now
    assert {n: get_ext(s, fleet, n) for n in ("cse", "ama")} == before
    assert host(s, fleet) == host_before
    for resource in before.values():
        assert events(s, fleet, resource["id"], since) == []


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"extensionTargets": {}}, "at least one"),
        ({"extensionTargets": {"Microsoft.Compute.CustomScriptExtension": {}}}, "targetVersion"),
    ],
)
def test_malformed_targets_are_400(
    fleet: ArcextServer, arcext_session: requests.Session, body: dict[str, Any], fragment: str
) -> None:
    before = get_ext(arcext_session, fleet, "cse")
    r = arcext_session.post(
        f"{machine_url(fleet, MACHINE, RG)}/upgradeExtensions", params={"api-version": API}, json=body
    )
    assert r.status_code == 400, r.text
    assert fragment.lower() in r.json()["error"]["message"].lower(), r.text
    assert get_ext(arcext_session, fleet, "cse") == before


def test_unknown_machine_is_404(fleet: ArcextServer, arcext_session: requests.Session) -> None:
    r = upgrade(arcext_session, fleet, {"Microsoft.Compute.CustomScriptExtension": "1.10"}, machine="nope")
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "ResourceNotFound"


# --- who and when: the activity log ----------------------------------------------------------------
def test_manual_upgrade_runs_at_once_with_the_user_as_caller(
    fleet: ArcextServer, arcext_session: requests.Session
) -> None:
    token = fleet.create_token("Contributor", f"/subscriptions/{SUB}", name="alice@contoso.com")
    since = an_hour_ago()
    with fleet.session(token) as alice:
        posted = datetime.now(UTC)
        status = finish(alice, upgrade(alice, fleet, {"Microsoft.Compute.CustomScriptExtension": "1.10"}))
    assert status["status"] == "Succeeded", status  # no engine/run, no clock advance: it ran at once

    cse = get_ext(arcext_session, fleet, "cse")
    found = events(arcext_session, fleet, cse["id"], since)
    assert [e["status"]["value"] for e in found] == ["Started", "Succeeded"], found
    for event in found:
        assert event["caller"] == "alice@contoso.com", event["caller"]
        assert event["operationName"]["value"] == UPGRADE_OPERATION
        assert event["properties"]["fromVersion"] == "1.9"
        assert event["properties"]["toVersion"] == "1.10"
        assert event["properties"]["lastKnownGoodVersion"] == "1.9"
        assert event["properties"]["attempt"] == 1
        started = datetime.fromisoformat(event["eventTimestamp"].replace("Z", "+00:00"))
        assert abs((started - posted).total_seconds()) < 5, (event["eventTimestamp"], posted)
    assert found[1]["properties"].get("rolledBack") is False
    assert found[0]["operationId"] == found[1]["operationId"]
    assert found[0]["correlationId"] == found[1]["correlationId"]

    # the manual attempt is not reported as an automatic one
    automatic = arcext_session.get(
        f"{fleet.url}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values",
        params={
            "api-version": "2015-04-01",
            "$filter": f"eventTimestamp ge '{since}' and caller eq '{AUTOMATIC_CALLER}'",
        },
    )
    assert automatic.status_code == 200, automatic.text
    assert automatic.json()["value"] == []


# --- failure: rolled back to the last known good version -------------------------------------------
def test_failing_manual_upgrade_rolls_back(fleet: ArcextServer, arcext_session: requests.Session) -> None:
    s = arcext_session
    since = an_hour_ago()
    faults = s.put(f"{fleet.url}/arcext/v1/simulated-hosts/{MACHINE}/faults", json={"failUpgrade": 1})
    assert faults.status_code == 200, faults.text

    status = finish(s, upgrade(s, fleet, {"Microsoft.Compute.CustomScriptExtension": "1.10"}))
    assert status["status"] == "Failed", status
    assert status["error"]["code"], status
    assert "1.10" in status["error"]["message"] and "1.9" in status["error"]["message"], status["error"]
    assert "properties" not in status or status["properties"] in (None, []), status

    cse = get_ext(s, fleet, "cse")
    assert cse["properties"]["typeHandlerVersion"] == "1.9"
    assert cse["properties"]["provisioningState"] == "Succeeded"
    assert cse["properties"]["settings"] == SETTINGS
    on_host = host(s, fleet)["extensions"]["cse"]
    assert (on_host["version"], on_host["state"]) == ("1.9", "enabled")

    found = events(s, fleet, cse["id"], since)
    assert [e["status"]["value"] for e in found] == ["Started", "Failed"], found
    end = found[-1]
    assert {e["caller"] for e in found} == {"arcext-test-owner"}  # the plugin's Owner token
    assert end["properties"]["rolledBack"] is True
    assert end["properties"]["fromVersion"] == "1.9"
    assert end["properties"]["toVersion"] == "1.10"
    assert end["properties"]["lastKnownGoodVersion"] == "1.9"


def test_failing_manual_upgrade_fails_the_sdk_poller(
    fleet: ArcextServer, arcext_session: requests.Session, arcext_client: Any
) -> None:
    faults = arcext_session.put(f"{fleet.url}/arcext/v1/simulated-hosts/{MACHINE}/faults", json={"failUpgrade": 1})
    assert faults.status_code == 200, faults.text
    poller = arcext_client.begin_upgrade_extensions(
        RG, MACHINE, {"extensionTargets": {"Microsoft.Compute.CustomScriptExtension": {"targetVersion": "1.10"}}}
    )
    with pytest.raises(HttpResponseError) as raised:
        poller.result(timeout=30)
    assert "1.10" in str(raised.value), str(raised.value)
    assert poller.status().lower() == "failed"
    assert arcext_client.machine_extensions.get(RG, MACHINE, "cse").properties.type_handler_version == "1.9"


# --- one operation at a time per extension -------------------------------------------------------
def test_manual_upgrade_while_an_automatic_one_runs_is_409(
    fleet: ArcextServer, arcext_session: requests.Session
) -> None:
    s = arcext_session
    slow = s.put(f"{fleet.url}/arcext/v1/simulated-hosts/{MACHINE}/faults", json={"latencyMs": 500})
    assert slow.status_code == 200, slow.text
    publish(s, fleet, *AMA, "1.23.0")  # AMA supports auto-upgrade: 'ama' (opted in) starts upgrading now
    deadline = time.monotonic() + 5
    while get_ext(s, fleet, "ama")["properties"]["provisioningState"] != "Updating":
        assert time.monotonic() < deadline, "the automatic upgrade did not start"
        time.sleep(0.02)

    response = upgrade(s, fleet, {"Microsoft.Azure.Monitor.AzureMonitorWindowsAgent": "1.22.0"})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "AnotherOperationInProgress"
    assert response.json()["error"]["target"].lower().endswith("/extensions/ama")

    while get_ext(s, fleet, "ama")["properties"]["provisioningState"] == "Updating":
        assert time.monotonic() < deadline + 10, "the automatic upgrade did not finish"
        time.sleep(0.05)
    props = get_ext(s, fleet, "ama")["properties"]
    assert (props["typeHandlerVersion"], props["provisioningState"]) == ("1.23.0", "Succeeded"), props
