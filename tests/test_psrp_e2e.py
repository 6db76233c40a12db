"""End to end: the upgrade engine + the psrp driver + unmodified pypsrp over real HTTP(S) + fake
Windows hosts (arcext.testing.fakehost). Handler behaviour comes from the packages the backend pushes.

Every test asserts on the fake host's own model: the versions on disk and their handler states, the
settings bytes, and the order of the handler commands it ran.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from arcext.testing import ArcextServer
from arcext.testing.fakehost import FakeHost, make_package
from conftest import API, SUB, UPGRADE_ORDER, ext_url, machine_url, wait_operation

PUB, TYPE = "Contoso.Fake", "Agent"
HANDLER = f"{PUB}.{TYPE}"
WEEK = 7 * 86400
HOUR = 3600


@pytest.fixture
def arc(driver_arc: ArcextServer) -> ArcextServer:
    return driver_arc


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "host", auth="basic", tls=True) as host:
        yield host


@pytest.fixture
def fake_ntlm(tmp_path: Path) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "ntlmhost", auth="ntlm", tls=False, username="ntlmuser") as host:
        yield host


# --- helpers -------------------------------------------------------------------------------------
def attach(s: requests.Session, arc: ArcextServer, version: str, data: bytes) -> dict[str, Any]:
    r = s.put(
        f"{arc.url}/arcext/v1/catalog/{PUB}/{TYPE}/versions/{version}/package",
        json={"zipBase64": base64.b64encode(data).decode()},
    )
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


def connect(s: requests.Session, arc: ArcextServer, host: FakeHost, m: str = "m1", **overrides: Any) -> None:
    body = host.connection(
        operationTimeoutSeconds=3,
        statusDeadlineSeconds=2,
        handlerTimeoutSeconds={"update": 2, "install": 5, "enable": 5, "disable": 5, "uninstall": 5},
        **overrides,
    )
    r = s.put(f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/{m}/hostConnection", json=body)
    assert r.status_code in (200, 201), r.text
    assert '"password"' not in r.text and host.password not in r.text and "credentials" not in r.json()


def prepare(
    s: requests.Session,
    arc: ArcextServer,
    host: FakeHost,
    new_behaviour: dict[str, Any] | None = None,
    old_behaviour: dict[str, Any] | None = None,
    heartbeat: bool = False,
) -> bytes:
    """Catalog type + both packages, a machine on the fake host, the extension installed at 1.0.0
    through the driver. Returns the settings file bytes the host has for 1.0.0."""
    r = s.put(f"{arc.url}/arcext/v1/catalog/{PUB}/{TYPE}", json={"autoUpgradeSupported": True})
    assert r.status_code == 200, r.text
    attach(s, arc, "1.0.0", make_package(HANDLER, "1.0.0", old_behaviour or {}, report_heartbeat=heartbeat))
    attach(s, arc, "1.1.0", make_package(HANDLER, "1.1.0", new_behaviour or {}, report_heartbeat=heartbeat))
    r = s.put(machine_url(arc, "m1"), params={"api-version": API}, json={"location": "eastus"})
    assert r.status_code == 200, r.text
    connect(s, arc, host)
    body = {
        "location": "eastus",
        "properties": {
            "publisher": PUB,
            "type": TYPE,
            "typeHandlerVersion": "1.0.0",
            "settings": {"workspaceId": "ws-1", "nested": {"a": [1, 2]}},
            "protectedSettings": {"workspaceKey": "very-secret"},
        },
    }
    r = s.put(ext_url(arc, "agent", "m1"), params={"api-version": API}, json=body)
    assert wait_operation(s, r, timeout=30)["status"] == "Succeeded"
    assert host.machine.versions(HANDLER) == {"1.0.0": "Enabled"}
    assert host.machine.commands(HANDLER) == [("1.0.0", "install"), ("1.0.0", "enable")]
    settings = host.machine.settings_files(HANDLER, "1.0.0")
    assert list(settings) == ["0.settings"]
    return settings["0.settings"]


def upgrade(s: requests.Session, arc: ArcextServer) -> dict[str, Any]:
    r = s.put(f"{arc.url}/arcext/v1/catalog/{PUB}/{TYPE}/versions/1.1.0", json={"critical": False})
    assert r.status_code == 201, r.text
    r = s.post(f"{arc.url}/arcext/v1/clock/advance", json={"seconds": 8 * WEEK})
    assert r.status_code == 200
    r = s.post(f"{arc.url}/arcext/v1/engine/run")
    assert r.status_code == 200, r.text
    summary: dict[str, Any] = r.json()
    return summary


def ext(s: requests.Session, arc: ArcextServer) -> dict[str, Any]:
    r = s.get(ext_url(arc, "agent", "m1"), params={"api-version": API})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def job_commands(host: FakeHost) -> list[tuple[str, str]]:
    return host.machine.commands(HANDLER)[2:]  # after the initial install + enable


def pending(s: requests.Session, arc: ArcextServer) -> dict[str, Any]:
    r = s.get(f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/m1/pending")
    assert r.status_code == 200, r.text
    found: dict[str, Any] = {e["name"]: e for e in r.json()["extensions"]}["agent"]
    return found


# --- scenarios -----------------------------------------------------------------------------------
def test_upgrade_succeeds_over_basic_tls(arc: ArcextServer, s: requests.Session, fake: FakeHost) -> None:
    settings = prepare(s, arc, fake)
    pools_before = fake.server.pools_opened
    summary = upgrade(s, arc)
    assert summary["succeeded"] == 1, summary
    assert ext(s, arc)["properties"]["typeHandlerVersion"] == "1.1.0"
    model = fake.machine
    assert model.versions(HANDLER) == {"1.1.0": "Enabled"}
    assert model.settings_files(HANDLER, "1.1.0") == {"0.settings": settings}, "settings copied byte for byte"
    assert job_commands(fake) == UPGRADE_ORDER
    assert model.cached(HANDLER) == ["1.1.0"], "the old package is dropped only once the new one is healthy"
    journal = model.journal(HANDLER)
    assert journal is not None and journal["finished"] is True and journal["outcome"] == "succeeded"
    assert fake.server.pools_opened - pools_before == 1, "one runspace pool per host per job"
    assert fake.server.open_shells() == [], "the driver closes its pool"


def test_enable_fails_1009_rolls_back(arc: ArcextServer, s: requests.Session, fake: FakeHost) -> None:
    settings = prepare(s, arc, fake, new_behaviour={"enable": {"exitCode": 3}})
    summary = upgrade(s, arc)
    assert summary["rolledBack"] == 1, summary
    body = ext(s, arc)
    assert body["properties"]["typeHandlerVersion"] == "1.0.0"
    assert body["properties"]["provisioningState"] == "Succeeded"
    assert "[1009]" in body["properties"]["instanceView"]["status"]["message"]
    assert "exited with 3" in body["properties"]["instanceView"]["status"]["message"]
    model = fake.machine
    assert model.versions(HANDLER) == {"1.0.0": "Enabled"}
    assert model.settings_files(HANDLER, "1.0.0") == {"0.settings": settings}
    assert job_commands(fake) == UPGRADE_ORDER + [("1.1.0", "uninstall"), ("1.0.0", "install"), ("1.0.0", "enable")]
    assert model.cached(HANDLER) == ["1.0.0"], "the failed package is purged, the LKG stays cached"
    view = pending(s, arc)
    assert view["state"] == "RetryWait" and view["targetVersion"] == "1.1.0"


def test_update_hangs_times_out_1011_and_rolls_back(arc: ArcextServer, s: requests.Session, fake: FakeHost) -> None:
    settings = prepare(s, arc, fake, new_behaviour={"update": {"hang": True}})
    summary = upgrade(s, arc)
    assert summary["rolledBack"] == 1, summary
    body = ext(s, arc)
    assert body["properties"]["typeHandlerVersion"] == "1.0.0"
    assert "[1011]" in body["properties"]["instanceView"]["status"]["message"]
    model = fake.machine
    assert model.versions(HANDLER) == {"1.0.0": "Enabled"}
    assert model.settings_files(HANDLER, "1.0.0") == {"0.settings": settings}
    # the old version was only disabled (never uninstalled): rollback uninstalls the failed one and re-enables it
    assert job_commands(fake) == [
        ("1.0.0", "disable"),
        ("1.1.0", "update"),
        ("1.1.0", "uninstall"),
        ("1.0.0", "enable"),
    ]
    update = [c for c in model.command_log() if c["command"] == "update"][0]
    assert update["timedOut"] is True and update["exitCode"] == 1011


def test_status_stays_transitioning_past_its_deadline_rolls_back(
    arc: ArcextServer, s: requests.Session, fake: FakeHost
) -> None:
    settings = prepare(s, arc, fake, new_behaviour={"status": "transitioning"})
    summary = upgrade(s, arc)
    assert summary["rolledBack"] == 1, summary
    message = ext(s, arc)["properties"]["instanceView"]["status"]["message"]
    assert "transitioning" in message
    model = fake.machine
    assert model.versions(HANDLER) == {"1.0.0": "Enabled"}
    assert model.settings_files(HANDLER, "1.0.0") == {"0.settings": settings}
    assert job_commands(fake) == UPGRADE_ORDER + [
        ("1.1.0", "disable"),
        ("1.1.0", "uninstall"),
        ("1.0.0", "install"),
        ("1.0.0", "enable"),
    ]


def test_stale_heartbeat_rolls_back(arc: ArcextServer, s: requests.Session, fake: FakeHost) -> None:
    settings = prepare(s, arc, fake, new_behaviour={"heartbeat": "stale"}, heartbeat=True)
    summary = upgrade(s, arc)
    assert summary["rolledBack"] == 1, summary
    assert "heartbeat is stale" in ext(s, arc)["properties"]["instanceView"]["status"]["message"]
    model = fake.machine
    assert model.versions(HANDLER) == {"1.0.0": "Enabled"}
    assert model.settings_files(HANDLER, "1.0.0") == {"0.settings": settings}
    assert job_commands(fake)[: len(UPGRADE_ORDER)] == UPGRADE_ORDER
    assert job_commands(fake)[len(UPGRADE_ORDER) :] == [
        ("1.1.0", "disable"),
        ("1.1.0", "uninstall"),
        ("1.0.0", "install"),
        ("1.0.0", "enable"),
    ]


def test_connection_reset_during_install_resumes_from_the_journal_over_ntlm(
    arc: ArcextServer, s: requests.Session, fake_ntlm: FakeHost
) -> None:
    fake = fake_ntlm
    settings = prepare(s, arc, fake)
    fake.reset_after.add("install")  # the Receive carrying new.install's result is cut with a TCP RST
    pools_before = fake.server.pools_opened
    summary = upgrade(s, arc)
    assert summary["succeeded"] == 1, summary
    assert not fake.reset_after, "the fault fired"
    model = fake.machine
    assert model.versions(HANDLER) == {"1.1.0": "Enabled"}
    assert model.settings_files(HANDLER, "1.1.0") == {"0.settings": settings}
    assert job_commands(fake) == UPGRADE_ORDER, "resumed: no handler command ran twice"
    assert fake.server.pools_opened - pools_before == 2, "one reconnection after the reset"
    journal = model.journal(HANDLER)
    assert journal is not None and journal["outcome"] == "succeeded"


def test_wrong_password_is_an_auth_error_without_retry_storm(
    arc: ArcextServer, s: requests.Session, fake: FakeHost
) -> None:
    prepare(s, arc, fake)
    connect(s, arc, fake, password="not-the-password")
    requests_before = len(fake.server.actions)
    summary = upgrade(s, arc)
    assert summary["notRun"] == 1 and summary["rolledBack"] == 0, summary
    assert len(fake.server.actions) == requests_before, "refused at the HTTP layer: no WSMan action ran"
    view = pending(s, arc)
    assert view["state"] == "RetryWait"
    r = s.get(f"{arc.url}/arcext/v1/rollouts")
    assert r.status_code == 200
    r = s.post(f"{arc.url}/arcext/v1/engine/run")
    assert r.json()["dispatched"] == 0, "no retry before the hour is up"
    model = fake.machine
    assert model.versions(HANDLER) == {"1.0.0": "Enabled"}
    assert job_commands(fake) == []
    events = s.get(
        f"{arc.url}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values",
        params={"api-version": "2015-04-01", "$filter": "eventTimestamp ge '2000-01-01T00:00:00Z'"},
    ).json()["value"]
    failed = [e for e in events if e["status"]["value"] == "Failed"]
    assert failed and failed[0]["properties"]["errorCode"] == "HostAuthenticationFailed"
    assert failed[0]["properties"]["rolledBack"] is False


def test_failed_rollback_leaves_the_extension_failed(arc: ArcextServer, s: requests.Session, fake: FakeHost) -> None:
    prepare(
        s,
        arc,
        fake,
        new_behaviour={"enable": {"exitCode": 3}},
        old_behaviour={"enable": {"exitCode": 7, "fromRun": 2}},  # 1.0.0 enables once, never again
    )
    summary = upgrade(s, arc)
    assert summary["rollbackFailed"] == 1, summary
    body = ext(s, arc)
    assert body["properties"]["provisioningState"] == "Failed"
    assert "Remove and reinstall" in body["properties"]["instanceView"]["status"]["message"]
    model = fake.machine
    assert model.versions(HANDLER) == {"1.0.0": "Installed"}
    assert job_commands(fake) == UPGRADE_ORDER + [("1.1.0", "uninstall"), ("1.0.0", "install"), ("1.0.0", "enable")]
    assert pending(s, arc)["state"] == "Failed"
    r = s.post(f"{arc.url}/arcext/v1/clock/advance", json={"seconds": 5 * HOUR})
    r = s.post(f"{arc.url}/arcext/v1/engine/run")
    assert r.json()["dispatched"] == 0
