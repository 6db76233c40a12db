"""End to end over the HTTP API: a live arcext server (engine + ssh driver) and Linux machines whose
handler trees live on a real OpenSSH server on loopback (tests/sshd.py); mixed fleets."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, SUB, UPGRADE_ORDER, ext_url, machine_url, wait_operation
from sshd import Sshd, cached, commands, journal, make_package, settings_files, sshd_server, versions

__all__ = ["sshd_server"]  # the fixture, imported

PUB, TYPE = "Contoso.Linux", "Agent"
HANDLER = f"{PUB}.{TYPE}"
WEEK = 7 * 86400


@pytest.fixture
def arc(driver_arc: ArcextServer) -> ArcextServer:
    return driver_arc


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "host"
    r.mkdir()
    return r


def connection_url(arc: ArcextServer, m: str = "m1") -> str:
    return f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/{m}/hostConnection"


def linux_machine(s: requests.Session, arc: ArcextServer, sshd: Sshd, root: Path, m: str = "m1") -> None:
    r = s.put(
        machine_url(arc, m), params={"api-version": API}, json={"location": "eastus", "properties": {"osType": "linux"}}
    )
    assert r.status_code == 200, r.text
    body = sshd.connection(root)
    del body["driver"]  # osType linux: the ssh driver is the default
    r = s.put(connection_url(arc, m), json=body)
    assert r.status_code in (200, 201), r.text
    view = r.json()
    assert view["driver"] == "ssh" and view["sudo"] is True and view["hasCredentials"] is True
    assert "privateKeyPem" not in view and "PRIVATE KEY" not in r.text and "credentials" not in view


def prepare(
    s: requests.Session,
    arc: ArcextServer,
    sshd: Sshd,
    root: Path,
    new_behaviour: dict[str, Any] | None = None,
) -> bytes:
    r = s.put(f"{arc.url}/arcext/v1/catalog/{PUB}/{TYPE}", json={"autoUpgradeSupported": True})
    assert r.status_code == 200, r.text
    for version, behaviour in (("1.0.0", None), ("1.1.0", new_behaviour)):
        r = s.put(
            f"{arc.url}/arcext/v1/catalog/{PUB}/{TYPE}/versions/{version}/package",
            json={"zipBase64": base64.b64encode(make_package(HANDLER, version, behaviour)).decode()},
        )
        assert r.status_code in (200, 201), r.text
    linux_machine(s, arc, sshd, root)
    body = {
        "location": "eastus",
        "properties": {
            "publisher": PUB,
            "type": TYPE,
            "typeHandlerVersion": "1.0.0",
            "settings": {"workspaceId": "ws-1"},
            "protectedSettings": {"workspaceKey": "very-secret"},
        },
    }
    r = s.put(ext_url(arc, "agent", "m1"), params={"api-version": API}, json=body)
    assert wait_operation(s, r, timeout=30)["status"] == "Succeeded"
    assert versions(root, HANDLER) == {"1.0.0": "Enabled"}
    raw = settings_files(root, HANDLER, "1.0.0")["0.settings"]
    hs = json.loads(raw)["runtimeSettings"][0]["handlerSettings"]
    assert hs["publicSettings"] == {"workspaceId": "ws-1"}
    assert json.loads(base64.b64decode(hs["protectedSettings"])) == {"workspaceKey": "very-secret"}
    return raw


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


def test_linux_machine_upgrades_over_ssh(arc: ArcextServer, s: requests.Session, sshd_server: Sshd, root: Path) -> None:
    settings = prepare(s, arc, sshd_server, root)
    summary = upgrade(s, arc)
    assert summary["succeeded"] == 1, summary
    assert ext(s, arc)["properties"]["typeHandlerVersion"] == "1.1.0"
    assert versions(root, HANDLER) == {"1.1.0": "Enabled"}
    assert settings_files(root, HANDLER, "1.1.0") == {"0.settings": settings}
    assert commands(root)[2:] == UPGRADE_ORDER
    assert cached(root, HANDLER) == ["1.1.0"]
    j = journal(root, HANDLER)
    assert j is not None and j["outcome"] == "succeeded"


def test_enable_fails_rolls_back_over_ssh(
    arc: ArcextServer, s: requests.Session, sshd_server: Sshd, root: Path
) -> None:
    settings = prepare(s, arc, sshd_server, root, {"fail": {"enable": 3}})
    summary = upgrade(s, arc)
    assert summary["rolledBack"] == 1, summary
    body = ext(s, arc)
    assert body["properties"]["typeHandlerVersion"] == "1.0.0"
    assert body["properties"]["provisioningState"] == "Succeeded"
    assert "[1009]" in body["properties"]["instanceView"]["status"]["message"]
    assert versions(root, HANDLER) == {"1.0.0": "Enabled"}
    assert settings_files(root, HANDLER, "1.0.0") == {"0.settings": settings}
    assert commands(root)[2:] == UPGRADE_ORDER + [("1.1.0", "uninstall"), ("1.0.0", "install"), ("1.0.0", "enable")]


def test_failed_rollback_leaves_the_extension_failed_over_ssh(
    arc: ArcextServer, s: requests.Session, sshd_server: Sshd, root: Path
) -> None:
    settings = prepare(s, arc, sshd_server, root, {"fail": {"enable": 3}})
    (root / "break-1.0.0").touch()  # the LKG's enable fails from now on
    summary = upgrade(s, arc)
    assert summary["rollbackFailed"] == 1, summary
    body = ext(s, arc)
    assert body["properties"]["provisioningState"] == "Failed"
    assert versions(root, HANDLER) == {"1.0.0": "Installed"}
    assert settings_files(root, HANDLER, "1.0.0") == {"0.settings": settings}


def test_wrong_host_key_is_refused_through_the_api(
    arc: ArcextServer, s: requests.Session, sshd_server: Sshd, root: Path
) -> None:
    prepare(s, arc, sshd_server, root)
    body = sshd_server.connection(root, hostKeyFingerprint="SHA256:" + "B" * 43)
    r = s.put(connection_url(arc), json=body)
    assert r.status_code == 200, r.text
    summary = upgrade(s, arc)
    assert summary["notRun"] == 1 and summary["rolledBack"] == 0, summary
    assert versions(root, HANDLER) == {"1.0.0": "Enabled"} and commands(root)[2:] == []


# --- mixed fleets --------------------------------------------------------------------------------
def test_mixed_fleet_refuses_types_of_the_other_os(arc: ArcextServer, s: requests.Session) -> None:
    for m, os_type in (("lin", "linux"), ("win", "windows")):
        r = s.put(
            machine_url(arc, m),
            params={"api-version": API},
            json={"location": "eastus", "properties": {"osType": os_type}},
        )
        assert r.status_code == 200, r.text

    def put(m: str, type_: str) -> requests.Response:
        body = {"location": "eastus", "properties": {"publisher": "Microsoft.Azure.Monitor", "type": type_}}
        return s.put(ext_url(arc, "ama", m), params={"api-version": API}, json=body)

    r = put("lin", "AzureMonitorWindowsAgent")
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidParameter"
    assert "is a Windows extension; this machine's osType is linux" in r.json()["error"]["message"]
    r = put("win", "AzureMonitorLinuxAgent")
    assert r.status_code == 400 and "is a Linux extension; this machine's osType is windows" in r.text
    assert put("lin", "AzureMonitorLinuxAgent").status_code in (200, 202)
    assert put("win", "AzureMonitorWindowsAgent").status_code in (200, 202)


def test_host_connection_defaults_by_os_type(arc: ArcextServer, s: requests.Session, sshd_server: Sshd) -> None:
    r = s.put(
        machine_url(arc, "win"),
        params={"api-version": API},
        json={"location": "eastus", "properties": {"osType": "windows"}},
    )
    assert r.status_code == 200
    r = s.put(connection_url(arc, "win"), json={"address": "w1", "username": "u", "password": "p"})
    assert r.status_code in (200, 201) and r.json()["driver"] == "psrp"
    r = s.put(connection_url(arc, "win"), json=sshd_server.connection(Path("/")))
    assert r.status_code == 400 and "osType is windows" in r.json()["error"]["message"]
    r = s.put(
        machine_url(arc, "lin"),
        params={"api-version": API},
        json={"location": "eastus", "properties": {"osType": "linux"}},
    )
    assert r.status_code == 200
    r = s.put(connection_url(arc, "lin"), json={"address": "l1", "username": "root", "password": "p"})
    assert r.status_code == 400 and "hostKeyFingerprint" in r.json()["error"]["message"], "the host key must be pinned"
    r = s.put(
        connection_url(arc, "lin"),
        json={"address": "l1", "username": "root", "password": "p", "trustOnFirstUse": True},
    )
    assert r.status_code in (200, 201), r.text
    assert r.json()["driver"] == "ssh" and r.json()["sudo"] is False and r.json()["port"] == 22
    r = s.put(connection_url(arc, "lin"), json={"driver": "psrp", "address": "l1", "username": "u", "password": "p"})
    assert r.status_code == 400 and "osType is linux" in r.json()["error"]["message"]
    r = s.put(
        connection_url(arc, "lin"),
        json={"address": "l1", "username": "u", "privateKeyPem": "nonsense", "trustOnFirstUse": True},
    )
    assert r.status_code == 400 and "privateKeyPem" in r.text and "nonsense" not in r.text


def test_a_repointed_ssh_connection_must_carry_the_key_again(
    arc: ArcextServer, s: requests.Session, sshd_server: Sshd, root: Path
) -> None:
    """Issue #10 finding 1 for the ssh driver: the stored key only ever goes to the endpoint it was given for."""
    linux_machine(s, arc, sshd_server, root)
    before = s.get(connection_url(arc)).json()
    kept = {k: v for k, v in sshd_server.connection(root).items() if k not in ("privateKeyPem", "password")}
    for name, value in {
        "address": "localhost",
        "port": 2222,
        "username": "someone-else",
        "hostKeyFingerprint": "SHA256:" + "A" * 43,
    }.items():
        r = s.put(connection_url(arc), json={**kept, name: value})
        assert r.status_code == 400, (name, r.text)
        error = r.json()["error"]
        assert error["code"] == "InvalidParameter" and error["target"] == "privateKeyPem", error
        assert "again" in error["message"] and name in error["message"], error
        assert s.get(connection_url(arc)).json() == before, f"a refused change of {name} changed nothing"
    # a setting that does not say where the key goes keeps it
    r = s.put(connection_url(arc), json={**kept, "operationTimeoutSeconds": 9})
    assert r.status_code == 200, r.text
    assert r.json()["hasCredentials"] is True and r.json()["operationTimeoutSeconds"] == 9
