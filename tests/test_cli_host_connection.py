"""`arcext host-connection set|show|delete` through a live server: the settings reach the API, the
password travels on stdin only and is never printed, and bad settings get the server's clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, SUB, machine_url
from test_cli_client import Cli, env_for

SECRET = "S3cret-passw0rd!"


@pytest.fixture
def arc(arcext_server: ArcextServer) -> Iterator[ArcextServer]:
    arcext_server.reset()
    with arcext_server.session() as s:
        r = s.put(machine_url(arcext_server, "m1"), params={"api-version": API}, json={"location": "eastus"})
        assert r.status_code == 200, r.text
    yield arcext_server


def _api(arc: ArcextServer) -> requests.Response:
    with arc.session() as s:
        return s.get(f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/m1/hostConnection")


def test_set_show_delete_a_winrm_connection(arc: ArcextServer, tmp_path: Path) -> None:
    cli = Cli(env_for(arc, tmp_path / "config"))
    set_ = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "winhost01.corp.example.com",
        "--driver", "winrm", "--transport", "http", "--auth", "ntlm", "--username", "CORP\\arcext",
        "--password-stdin", "--allow", "Microsoft.Azure.Monitor/AzureMonitorWindowsAgent",
        "--handler-timeouts", '{"install": 1200}', "--status-deadline", "600",
        input=f"{SECRET}\n",
    )  # fmt: skip
    assert set_.exit_code == 0, set_.output
    assert SECRET not in set_.output
    stored = _api(arc).json()
    assert stored["driver"] == "winrm" and stored["port"] == 5985 and stored["auth"] == "ntlm"
    assert stored["extensionsAllowList"] == ["Microsoft.Azure.Monitor/AzureMonitorWindowsAgent"]
    assert stored["handlerTimeoutSeconds"] == {"install": 1200} and stored["statusDeadlineSeconds"] == 600
    assert stored["hasCredentials"] is True and SECRET not in str(stored)

    shown = cli.json("host-connection", "show", "-g", "rg1", "--machine-name", "m1")
    assert shown["address"] == "winhost01.corp.example.com" and "password" not in shown
    assert cli.json("host-connection", "show", "-g", "rg1", "--machine-name", "m1", "--query", "driver") == "winrm"

    deleted = cli("host-connection", "delete", "-g", "rg1", "--machine-name", "m1")
    assert deleted.exit_code == 0, deleted.output
    assert _api(arc).status_code == 404


def test_bad_settings_get_the_servers_error_and_change_nothing(arc: ArcextServer, tmp_path: Path) -> None:
    cli = Cli(env_for(arc, tmp_path / "config"))
    basic_over_http = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "h",
        "--transport", "http", "--auth", "basic", "--username", "u", "--password-stdin",
        input=f"{SECRET}\n",
    )  # fmt: skip
    assert basic_over_http.exit_code != 0
    assert "Basic authentication is allowed only over https" in basic_over_http.stderr
    jea_on_winrm = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "h", "--driver", "winrm",
        "--username", "u", "--configuration-name", "JEA-Arc",
    )  # fmt: skip
    assert jea_on_winrm.exit_code != 0 and "needs the psrp driver" in jea_on_winrm.stderr
    empty_stdin = cli(
        "host-connection", "set", "-g", "rg1", "--machine-name", "m1", "--address", "h", "--username", "u",
        "--password-stdin", input="",
    )  # fmt: skip
    assert empty_stdin.exit_code == 2 and "held no password" in empty_stdin.stderr
    assert _api(arc).status_code == 404  # nothing was stored
