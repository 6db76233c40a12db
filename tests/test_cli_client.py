"""The az-style client commands of `arcext` through a live server (click's CliRunner, HTTP only).

The Arc documentation's own CLI commands run with `arcext` in place of `az`; results are checked
through the API. A module-scoped server on a manual clock (Retry-After 0, so waits are short)
makes rollouts deterministic; one test uses the shared `arcext_server` fixture (Retry-After 1).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result

import arcext.client.http as client_http
from arcext.cli import main
from arcext.ids import machine_key
from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, wait_operation

PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
HANDLER = f"{PUB}.{TYPE}"
WEEK = 7 * 86400
AUTO = "Azure Regional Service Manager"
UPGRADE_OP = "Microsoft.HybridCompute/machines/upgradeExtensions/action"


@pytest.fixture(scope="module")
def manual_server() -> Iterator[ArcextServer]:
    with ArcextServer(manual_clock=True, simulate=True, config={"ARCEXT_RETRY_AFTER": 0}) as server:
        yield server


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "config"


class Cli:
    """Runs `arcext ...` with the environment of a logged-in user."""

    def __init__(self, env: dict[str, str | None]) -> None:
        self.env = env
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str | None] | None = None, input: str | None = None) -> Result:
        result = self.runner.invoke(main, list(args), env={**self.env, **(env or {})}, input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def json(self, *args: str) -> Any:
        result = self(*args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


def env_for(server: ArcextServer, config_dir: Path, token: str | None = None) -> dict[str, str | None]:
    return {
        "ARCEXT_ENDPOINT": server.url,
        "ARCEXT_TOKEN": token or server.token,
        "ARCEXT_SUBSCRIPTION_ID": SUB,
        "ARCEXT_CONFIG_DIR": str(config_dir),
        "ARCEXT_OUTPUT": None,
        "ARCEXT_PROGRESS": None,
    }


@pytest.fixture
def cli(arc: ArcextServer, config_dir: Path) -> Cli:
    return Cli(env_for(arc, config_dir))


# --- helpers through the API ----------------------------------------------------------------------
def machine(s: requests.Session, arc: ArcextServer, name: str = "m1", location: str = "eastus") -> None:
    r = s.put(machine_url(arc, name), params={"api-version": API}, json={"location": location})
    assert r.status_code == 200, r.text


def extension(s: requests.Session, arc: ArcextServer, m: str = "m1", name: str = "ama", version: str = "1.0.0") -> None:
    body = {
        "location": "eastus",
        "properties": {
            "publisher": PUB,
            "type": TYPE,
            "typeHandlerVersion": version,
            "settings": {"workspaceId": f"ws-{m}"},
            "protectedSettings": {"workspaceKey": f"key-{m}"},
        },
    }
    r = s.put(ext_url(arc, name, m), params={"api-version": API}, json=body)
    assert wait_operation(s, r)["status"] == "Succeeded"


def get_ext(s: requests.Session, arc: ArcextServer, name: str = "ama", m: str = "m1") -> dict[str, Any]:
    r = s.get(ext_url(arc, name, m), params={"api-version": API})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def publish(s: requests.Session, arc: ArcextServer, version: str) -> dict[str, Any]:
    r = s.put(f"{arc.url}/arcext/v1/catalog/{PUB}/{TYPE}/versions/{version}", json={"critical": False})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def advance_and_run(s: requests.Session, arc: ArcextServer, seconds: float) -> None:
    assert s.post(f"{arc.url}/arcext/v1/clock/advance", json={"seconds": seconds}).status_code == 200
    assert s.post(f"{arc.url}/arcext/v1/engine/run").status_code == 200


def server_now(s: requests.Session, arc: ArcextServer) -> str:
    now: str = s.get(f"{arc.url}/arcext/v1/clock").json()["now"]
    return now


# --- the Arc documentation's commands ----------------------------------------------------------------
DOC_QUERY = "[].{Name:name, AutoUpgrade:properties.enableAutomaticUpgrade}"
MISSPELT_QUERY = "[].{Name:name, AutoUpgrade:properties.enableAutoUpgrade}"


def test_the_documentation_commands_check_enable_and_disable_automatic_upgrade(
    arc: ArcextServer, s: requests.Session, cli: Cli
) -> None:
    machine(s, arc)
    extension(s, arc, name="ama")
    extension(s, arc, name="other")
    listed = cli(
        "connectedmachine", "extension", "list", "--machine-name", "m1", "--resource-group", "rg1",
        "--query", DOC_QUERY, "--output", "table",
    )  # fmt: skip
    assert listed.exit_code == 0 and listed.stderr == ""
    assert [line.rstrip() for line in listed.stdout.splitlines()] == [
        "Name    AutoUpgrade",
        "------  -------------",
        "ama     True",
        "other   True",
    ]

    off = cli(
        "connectedmachine", "extension", "update", "--resource-group", "rg1", "--machine-name", "m1",
        "--name", "ama", "--enable-auto-upgrade", "false",
    )  # fmt: skip
    assert off.exit_code == 0, off.output
    printed = json.loads(off.stdout)  # az prints the resource embedded in the Succeeded operation status
    assert printed["name"] == "ama" and printed["properties"]["enableAutomaticUpgrade"] is False
    assert "protectedSettings" not in json.dumps(printed)
    body = get_ext(s, arc)
    assert body["properties"]["enableAutomaticUpgrade"] is False
    assert body["properties"]["settings"] == {"workspaceId": "ws-m1"}
    assert get_ext(s, arc, "other")["properties"]["enableAutomaticUpgrade"] is True
    # the PATCH left the protected settings alone (the server still holds them)
    key = machine_key(SUB, "rg1", "m1")
    assert arc.services.resources.protected_settings(key, "ama") == {"workspaceKey": "key-m1"}

    rows = cli.json("connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1", "--query", DOC_QUERY)
    assert rows == [{"Name": "ama", "AutoUpgrade": False}, {"Name": "other", "AutoUpgrade": True}]

    on = cli(
        "connectedmachine", "extension", "update", "--resource-group", "rg1", "--machine-name", "m1",
        "--name", "ama", "--enable-auto-upgrade", "true",
    )  # fmt: skip
    assert on.exit_code == 0, on.output
    assert get_ext(s, arc)["properties"]["enableAutomaticUpgrade"] is True
    assert arc.services.resources.protected_settings(key, "ama") == {"workspaceKey": "key-m1"}
    # az's aliases and the bare flag (= true)
    for flag in (["--auto-upgrade", "false"], ["--enable-automatic-upgrade", "0"]):
        assert (
            cli(
                "connectedmachine", "extension", "update", "-n", "ama", "--machine-name", "m1", "-g", "rg1", *flag
            ).exit_code
            == 0
        )
        assert get_ext(s, arc)["properties"]["enableAutomaticUpgrade"] is False
        cli("connectedmachine", "extension", "update", "-n", "ama", "--machine-name", "m1", "-g", "rg1",
            "--enable-auto-upgrade", "-o", "none")  # fmt: skip
        assert get_ext(s, arc)["properties"]["enableAutomaticUpgrade"] is True


def test_the_documentations_misspelt_query_prints_null_and_warns(
    arc: ArcextServer, s: requests.Session, cli: Cli
) -> None:
    machine(s, arc)
    extension(s, arc)
    result = cli(
        "connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1", "--query", MISSPELT_QUERY
    )
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [{"Name": "ama", "AutoUpgrade": None}]  # what az prints
    assert result.stderr.startswith("WARNING: ")
    assert "'properties.enableAutoUpgrade'" in result.stderr
    assert "did you mean 'properties.enableAutomaticUpgrade'?" in result.stderr
    table = cli(
        "connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1",
        "--query", MISSPELT_QUERY, "-o", "table",
    )  # fmt: skip
    # az's table drops null cells, so the AutoUpgrade column disappears; the warning says why
    assert [line.rstrip() for line in table.stdout.splitlines()] == ["Name", "------", "ama"]
    assert "did you mean 'properties.enableAutomaticUpgrade'?" in table.stderr
    assert (
        cli("connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1", "--query", DOC_QUERY).stderr
        == ""
    )


# --- create, show, update, delete -------------------------------------------------------------------------
def test_create_show_update_delete(arc: ArcextServer, s: requests.Session, cli: Cli) -> None:
    machine(s, arc, location="westeurope")
    created = cli.json(
        "connectedmachine", "extension", "create", "--name", "cse", "--machine-name", "m1", "-g", "rg1",
        "--publisher", "Microsoft.Compute", "--type", "CustomScriptExtension", "--type-handler-version", "1.10.3",
        "--settings", '{"commandToExecute": "hostname"}', "--protected-settings", '{"password": "s3cret"}',
        "--enable-auto-upgrade", "false", "--auto-upgrade-minor", "true", "--tags", "env=test team=ops",
    )  # fmt: skip
    assert created["properties"]["provisioningState"] == "Succeeded"
    assert created["location"] == "westeurope"  # the machine's location when -l is not given
    assert created["tags"] == {"env": "test", "team": "ops"}
    assert created["properties"]["enableAutomaticUpgrade"] is False
    assert created["properties"]["autoUpgradeMinorVersion"] is True
    assert "s3cret" not in json.dumps(created)
    shown = cli.json("connectedmachine", "extension", "show", "-n", "cse", "--machine-name", "m1", "-g", "rg1")
    assert shown["id"].endswith("/machines/m1/extensions/cse") and "protectedSettings" not in shown["properties"]
    assert cli.json(
        "connectedmachine", "extension", "show", "--extension-name", "cse", "--machine-name", "m1", "-g", "rg1",
        "--query", "properties.typeHandlerVersion",
    ) == "1.10.3"  # fmt: skip

    updated = cli.json(
        "connectedmachine", "extension", "update", "-n", "cse", "--machine-name", "m1", "-g", "rg1",
        "--settings", '{"commandToExecute": "whoami"}', "--tags", "env=prod",
    )  # fmt: skip
    assert updated["properties"]["settings"] == {"commandToExecute": "whoami"} and updated["tags"] == {"env": "prod"}
    key = machine_key(SUB, "rg1", "m1")
    assert arc.services.resources.protected_settings(key, "cse") == {"password": "s3cret"}

    # az's generic update: an update naming no property is a GET and a PUT of what was read; it succeeds
    nothing = cli.json("connectedmachine", "extension", "update", "-n", "cse", "--machine-name", "m1", "-g", "rg1")
    assert nothing["properties"]["settings"] == {"commandToExecute": "whoami"} and nothing["tags"] == {"env": "prod"}
    assert arc.services.resources.protected_settings(key, "cse") == {"password": "s3cret"}

    # --no-wait prints nothing and returns at once; the operation finishes on the server
    no_wait = cli(
        "connectedmachine", "extension", "create", "-n", "second", "--machine-name", "m1", "-g", "rg1", "-l",
        "westeurope", "--publisher", "Microsoft.Compute", "--type", "CustomScriptExtension", "--no-wait",
    )  # fmt: skip
    assert no_wait.exit_code == 0 and no_wait.stdout == ""
    assert arc.wait_for_operations()
    assert get_ext(s, arc, "second")["properties"]["provisioningState"] == "Succeeded"

    refused = cli("connectedmachine", "extension", "delete", "-n", "cse", "--machine-name", "m1", "-g", "rg1")
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    deleted = cli("connectedmachine", "extension", "delete", "-n", "cse", "--machine-name", "m1", "-g", "rg1", "--yes")
    assert deleted.exit_code == 0 and deleted.stdout == ""
    assert s.get(ext_url(arc, "cse"), params={"api-version": API}).status_code == 404
    assert cli("connectedmachine", "extension", "delete", "-n", "second", "--machine-name", "m1", "-g", "rg1",
               "-y", "--no-wait").exit_code == 0  # fmt: skip
    assert arc.wait_for_operations()
    assert cli.json("connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1") == []


def test_image_list_and_show(arc: ArcextServer, s: requests.Session, cli: Cli) -> None:
    publish(s, arc, "1.1.0")
    publish(s, arc, "1.2.0")
    images = cli.json("connectedmachine", "extension", "image", "list", "-l", "eastus", "-p", PUB, "--type", TYPE)
    assert [i["version"] for i in images] == ["1.2.0", "1.1.0"]
    assert set(images[0]) == {"id", "name", "type", "extensionType", "publisher", "version"}
    assert images[0]["extensionType"] == TYPE and images[0]["publisher"] == PUB
    one = cli.json(
        "connectedmachine", "extension", "image", "show", "--location", "eastus", "--publisher", PUB,
        "--extension-type", TYPE, "--version", "1.1.0",
    )  # fmt: skip
    assert one["version"] == "1.1.0" and one["id"].endswith("/versions/1.1.0")
    missing = cli("connectedmachine", "extension", "image", "show", "-l", "eastus", "-p", PUB, "--type", TYPE,
                  "--version", "9.9.9")  # fmt: skip
    assert missing.exit_code == 3 and missing.stderr.startswith("ERROR: (ResourceNotFound) ")


# --- upgrade-extension -----------------------------------------------------------------------------------
def test_upgrade_extension_now_and_no_wait(arc: ArcextServer, s: requests.Session, cli: Cli) -> None:
    machine(s, arc)
    extension(s, arc)
    publish(s, arc, "1.1.0")
    publish(s, arc, "1.2.0")
    result = cli(
        "connectedmachine", "upgrade-extension", "--machine-name", "m1", "-g", "rg1",
        "--extension-targets", json.dumps({HANDLER: {"targetVersion": "1.1.0"}}),
    )  # fmt: skip
    assert result.exit_code == 0 and result.stdout == "", result.output  # az prints nothing: the LRO's result is None
    assert get_ext(s, arc)["properties"]["typeHandlerVersion"] == "1.1.0"

    no_wait = cli(
        "connectedmachine", "upgrade-extension", "--machine-name", "m1", "-g", "rg1", "--no-wait",
        "--extension-targets", json.dumps({HANDLER: {"targetVersion": "1.2.0"}}),
    )  # fmt: skip
    assert no_wait.exit_code == 0 and no_wait.stdout == ""
    assert arc.wait_for_operations()
    for _ in range(200):
        if get_ext(s, arc)["properties"]["typeHandlerVersion"] == "1.2.0":
            break
        time.sleep(0.02)
    assert get_ext(s, arc)["properties"]["typeHandlerVersion"] == "1.2.0"
    # the manual upgrades are in the activity log under the token's principal
    events = cli.json(
        "activity-log", "list", "--start-time", "2000-01-01T00:00:00Z", "--end-time", "2999-01-01T00:00:00Z",
        "--caller", "arcext-test-owner", "--status", "Succeeded",
    )  # fmt: skip
    assert sorted(e["properties"]["toVersion"] for e in events) == ["1.1.0", "1.2.0"]

    bad = cli("connectedmachine", "upgrade-extension", "--machine-name", "m1", "-g", "rg1",
              "--extension-targets", "{not json")  # fmt: skip
    assert bad.exit_code == 2 and bad.stderr.startswith("ERROR: --extension-targets: neither JSON")
    unknown = cli("connectedmachine", "upgrade-extension", "--machine-name", "m1", "-g", "rg1",
                  "--extension-targets", json.dumps({"Nope.Nothing": {"targetVersion": "1.0"}}))  # fmt: skip
    assert unknown.exit_code in (1, 3) and unknown.stderr.startswith("ERROR: (")


# --- rollouts ----------------------------------------------------------------------------------------------
def test_rollout_list_show_pause_resume_watch(arc: ArcextServer, s: requests.Session, cli: Cli) -> None:
    for i in range(5):
        machine(s, arc, f"m{i}")
        extension(s, arc, f"m{i}")
    rollout_id = publish(s, arc, "1.1.0")["rolloutId"]

    listed = cli.json("rollout", "list")
    assert [r["id"] for r in listed] == [rollout_id] and listed[0]["state"] == "Active"
    table = cli("rollout", "list", "-o", "table")
    header, dashes, row = table.stdout.splitlines()
    assert header.split() == [
        "Id", "Extension", "Version", "Critical", "State", "Eligible", "Succeeded", "Failed", "Skipped", "NextAction",
    ]  # fmt: skip
    assert row.startswith(rollout_id) and HANDLER in row and "Active" in row
    assert cli.json("rollout", "list", "--state", "completed") == []
    assert cli.json("rollout", "show", "--id", rollout_id, "--query", "version") == "1.1.0"

    paused = cli.json("rollout", "pause", "--id", rollout_id)
    assert paused["state"] == "Paused"
    advance_and_run(s, arc, 9 * WEEK)
    assert cli.json("rollout", "show", "--id", rollout_id, "--query", "counts.succeeded") == 0
    assert get_ext(s, arc, m="m0")["properties"]["typeHandlerVersion"] == "1.0.0"
    again = cli("rollout", "resume", "--id", rollout_id, "-o", "none")
    assert again.exit_code == 0 and again.stdout == ""
    assert cli("rollout", "resume", "--id", rollout_id).exit_code == 1  # 409: only a held rollout resumes
    assert cli("rollout", "show", "--id", "no-such-rollout").exit_code == 3

    timed_out = cli("rollout", "watch", "--id", rollout_id, "--timeout", "0", "--query", "state")
    assert timed_out.exit_code == 5 and json.loads(timed_out.stdout) == "Active"
    assert timed_out.stderr.startswith("ERROR: (RolloutWatchTimedOut) ")

    advance_and_run(s, arc, 9 * WEEK)
    watched = cli("rollout", "watch", "--id", rollout_id, "--interval", "0.05", "--timeout", "30")
    assert watched.exit_code == 0, watched.output
    done = json.loads(watched.stdout)
    assert done["state"] == "Completed" and done["counts"]["succeeded"] == 5
    assert all(get_ext(s, arc, m=f"m{i}")["properties"]["typeHandlerVersion"] == "1.1.0" for i in range(5))
    # with a terminal (forced here) the watch draws a rich progress bar on stderr, stdout stays the result
    shown = cli("rollout", "watch", "--id", rollout_id, "--query", "state", env={"ARCEXT_PROGRESS": "1"})
    assert shown.exit_code == 0 and json.loads(shown.stdout) == "Completed"
    assert f"{HANDLER} 1.1.0" in shown.stderr and "5/5" in shown.stderr


def test_rollout_watch_follows_a_running_rollout(
    arc: ArcextServer, s: requests.Session, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        machine(s, arc, f"m{i}")
        extension(s, arc, f"m{i}")
    rollout_id = publish(s, arc, "1.1.0")["rolloutId"]
    polls: list[float] = []

    def tick(seconds: float) -> None:  # each poll of the watch moves the fleet on by three weeks
        polls.append(seconds)
        advance_and_run(s, arc, 3 * WEEK)

    monkeypatch.setattr(client_http, "sleep", tick)
    result = cli("rollout", "watch", "--id", rollout_id, "--interval", "2", "--query", "[state, counts.succeeded]")
    assert result.exit_code == 0 and json.loads(result.stdout) == ["Completed", 3]
    assert polls and set(polls) == {2.0}


# --- the activity log ------------------------------------------------------------------------------------
def test_activity_log_filters(arc: ArcextServer, s: requests.Session, cli: Cli) -> None:
    for m in ("m1", "m2"):
        machine(s, arc, m)
        extension(s, arc, m)
    r = s.put(f"{machine_url(arc, 'm3', 'rg2')}", params={"api-version": API}, json={"location": "eastus"})
    assert r.status_code == 200
    extension_in_rg2 = s.put(
        ext_url(arc, "ama", "m3", "rg2"),
        params={"api-version": API},
        json={"location": "eastus", "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0.0"}},
    )
    assert wait_operation(s, extension_in_rg2)["status"] == "Succeeded"
    start = server_now(s, arc)
    rollout_id = publish(s, arc, "1.1.0")["rolloutId"]
    advance_and_run(s, arc, 9 * WEEK)
    publish(s, arc, "1.2.0")
    assert cli("connectedmachine", "upgrade-extension", "--machine-name", "m1", "-g", "rg1", "--extension-targets",
               json.dumps({HANDLER: {"targetVersion": "1.2.0"}})).exit_code == 0  # fmt: skip
    end = server_now(s, arc)
    span = ["--start-time", start, "--end-time", end]

    every = cli.json("activity-log", "list", *span)
    assert len(every) == 8  # three automatic attempts and one manual, each Started + Succeeded
    assert [e["eventTimestamp"] for e in every] == sorted((e["eventTimestamp"] for e in every), reverse=True)
    automatic = cli.json("activity-log", "list", *span, "--caller", AUTO)
    assert len(automatic) == 6 and {e["correlationId"] for e in automatic} == {rollout_id}
    by_display = cli.json("activity-log", "list", *span, "--operation", "Upgrade Extensions on Azure Arc machines",
                          "--caller", AUTO)  # fmt: skip
    assert by_display == automatic
    assert cli.json("activity-log", "list", *span, "--operation", UPGRADE_OP) == every
    assert cli.json("activity-log", "list", *span, "--operation", "Delete machines") == []
    rg2 = cli.json("activity-log", "list", *span, "-g", "rg2")
    assert len(rg2) == 2 and {e["resourceGroupName"].lower() for e in rg2} == {"rg2"}
    manual = cli.json("activity-log", "list", *span, "--caller", "arcext-test-owner")
    assert len(manual) == 2
    correlated = cli.json("activity-log", "list", *span, "--correlation-id", manual[0]["correlationId"])
    assert {e["eventDataId"] for e in correlated} == {e["eventDataId"] for e in manual}
    assert len(cli.json("activity-log", "list", *span, "--max-events", "3")) == 3
    selected = cli.json("activity-log", "list", *span, "--select", "caller,eventTimestamp", "--max-events", "1")
    assert set(selected[0]) == {"caller", "eventTimestamp"}
    # --offset: a span before the upgrades holds nothing; --start-time with --offset reaches them
    assert cli.json("activity-log", "list", "--end-time", start, "--offset", "1d") == []
    assert len(cli.json("activity-log", "list", "--start-time", start, "--offset", "70d")) == 8
    # the doc's history view: Operation + Event initiated by, as a table
    table = cli("activity-log", "list", *span, "--caller", AUTO, "--query",
                "[?status.value=='Succeeded'].{Time:eventTimestamp, Caller:caller, Status:status.value, "
                "To:properties.toVersion}", "-o", "table")  # fmt: skip
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["Time", "Caller", "Status", "To"] and len(lines) == 5
    assert all(AUTO in line and "1.1.0" in line for line in lines[2:])
    bad = cli("activity-log", "list", "--offset", "soon")
    assert bad.exit_code == 2 and bad.stderr.startswith("ERROR: --offset:")
    inverted = cli("activity-log", "list", "--start-time", end, "--end-time", start)
    assert inverted.exit_code == 2


# --- login, configuration, exit codes, errors --------------------------------------------------------------
def test_login_stores_a_0600_file_and_never_prints_the_token(
    arc: ArcextServer, s: requests.Session, config_dir: Path
) -> None:
    machine(s, arc)
    extension(s, arc)
    bare = Cli({"ARCEXT_CONFIG_DIR": str(config_dir), "ARCEXT_ENDPOINT": None, "ARCEXT_TOKEN": None,
                "ARCEXT_SUBSCRIPTION_ID": None, "ARCEXT_CA_BUNDLE": None, "ARCEXT_OUTPUT": None})  # fmt: skip
    not_logged_in = bare("connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1")
    assert not_logged_in.exit_code == 2 and "arcext login" in not_logged_in.stderr

    wrong = bare("login", "--endpoint", arc.url, "--token", "arcext_not-a-token")
    assert wrong.exit_code == 1 and wrong.stderr.startswith("ERROR: (AuthenticationFailed) ")
    assert not (config_dir / "config.json").exists()

    logged_in = bare("login", "--endpoint", arc.url + "/", "--token", arc.token, "--subscription", SUB)
    assert logged_in.exit_code == 0, logged_in.output
    assert arc.token not in logged_in.output
    path = config_dir / "config.json"
    assert json.loads(logged_in.stdout) == {
        "endpoint": arc.url, "subscription": SUB, "caBundle": None, "configFile": str(path),
    }  # fmt: skip
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["token"] == arc.token
    assert [p.name for p in config_dir.iterdir()] == ["config.json"]

    rows = bare("connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1", "--query", "[].name")
    assert rows.exit_code == 0 and json.loads(rows.stdout) == ["ama"]
    account = bare("account", "show")
    assert account.exit_code == 0 and arc.token not in account.output
    assert json.loads(account.stdout)["sources"]["token"] == str(path)

    # the environment overrides the file, --subscription overrides both
    other_sub = "11111111-1111-1111-1111-111111111111"
    from_env = bare("connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1",
                    env={"ARCEXT_SUBSCRIPTION_ID": other_sub})  # fmt: skip
    assert from_env.exit_code == 3  # no machine m1 in that subscription
    assert bare("connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1", "--subscription", SUB,
                env={"ARCEXT_SUBSCRIPTION_ID": other_sub}).exit_code == 0  # fmt: skip
    bad_env_token = bare("connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1",
                         env={"ARCEXT_TOKEN": "arcext_revoked"})  # fmt: skip
    assert bad_env_token.exit_code == 1 and "arcext_revoked" not in bad_env_token.output
    assert json.loads(bare("account", "show", env={"ARCEXT_TOKEN": "x"}).stdout)["sources"]["token"] == (
        "environment (ARCEXT_TOKEN)"
    )

    # a re-login keeps the mode; the token can come from stdin
    os.chmod(path, 0o644)
    again = bare("login", "--endpoint", arc.url, "--token", "-", input=arc.token + "\n")
    assert again.exit_code == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "subscription" not in json.loads(path.read_text())
    no_sub = bare("connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1")
    assert no_sub.exit_code == 2 and "No subscription" in no_sub.stderr
    assert bare("logout").exit_code == 0 and not path.exists()


def test_login_with_a_ca_bundle_over_https(config_dir: Path) -> None:
    with ArcextServer(tls=True) as server:
        assert server.ca_cert is not None
        bare = Cli({"ARCEXT_CONFIG_DIR": str(config_dir), "ARCEXT_ENDPOINT": None, "ARCEXT_TOKEN": None,
                    "ARCEXT_SUBSCRIPTION_ID": None, "ARCEXT_CA_BUNDLE": None, "REQUESTS_CA_BUNDLE": None,
                    "CURL_CA_BUNDLE": None})  # fmt: skip
        untrusted = bare("login", "--endpoint", server.url, "--token", server.token)
        assert untrusted.exit_code == 4 and untrusted.stderr.startswith("ERROR: (ConnectionError) TLS verification")
        trusted = bare("login", "--endpoint", server.url, "--token", server.token, "--subscription", SUB,
                       "--ca-bundle", str(server.ca_cert))  # fmt: skip
        assert trusted.exit_code == 0, trusted.output
        assert json.loads(trusted.stdout)["caBundle"] == str(server.ca_cert.resolve())
        assert bare("rollout", "list").exit_code == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_exit_codes_and_error_printing(arc: ArcextServer, s: requests.Session, cli: Cli) -> None:
    machine(s, arc)
    missing = cli("connectedmachine", "extension", "show", "-n", "nope", "--machine-name", "m1", "-g", "rg1")
    assert missing.exit_code == 3 and missing.stdout == ""
    assert missing.stderr.startswith("ERROR: (ResourceNotFound) ") and missing.stderr.count("\n") == 1
    no_machine = cli("connectedmachine", "extension", "list", "--machine-name", "ghost", "-g", "rg1")
    assert no_machine.exit_code == 3 and no_machine.stderr.startswith("ERROR: (ResourceNotFound) ")

    no_location_type = cli("connectedmachine", "extension", "create", "-n", "x", "--machine-name", "m1", "-g", "rg1")
    assert no_location_type.exit_code == 1 and no_location_type.stderr.startswith("ERROR: (InvalidParameter) ")

    reader = arc.create_token("Reader", f"/subscriptions/{SUB}", "ci-reader")
    forbidden = cli("connectedmachine", "extension", "create", "-n", "x", "--machine-name", "m1", "-g", "rg1",
                    "-l", "eastus", "--publisher", "P", "--type", "T", env={"ARCEXT_TOKEN": reader})  # fmt: skip
    assert forbidden.exit_code == 1 and forbidden.stderr.startswith("ERROR: (AuthorizationFailed) ")

    usage = cli("connectedmachine", "extension", "show", "--machine-name", "m1", "-g", "rg1")
    assert usage.exit_code == 2 and "arguments are required: --name" in usage.stderr  # az's wording
    bad_query = cli("connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1", "--query", "[?")
    assert bad_query.exit_code == 2 and "invalid JMESPath" in bad_query.stderr
    bad_bool = cli("connectedmachine", "extension", "update", "-n", "x", "--machine-name", "m1", "-g", "rg1",
                   "--enable-auto-upgrade", "maybe")  # fmt: skip
    assert bad_bool.exit_code == 2
    bad_json = cli("connectedmachine", "extension", "create", "-n", "x", "--machine-name", "m1", "-g", "rg1",
                   "--settings", "[1, 2]")  # fmt: skip
    assert bad_json.exit_code == 2 and bad_json.stderr == "ERROR: --settings: expected a JSON object.\n"

    down = cli("rollout", "list", env={"ARCEXT_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    assert down.exit_code == 4 and down.stderr.startswith("ERROR: (ConnectionError) Cannot reach http://127.0.0.1:")
    assert arc.token not in down.output


def test_a_failed_operation_exits_1_with_its_arm_error(arc: ArcextServer, s: requests.Session, cli: Cli) -> None:
    machine(s, arc)
    extension(s, arc)
    publish(s, arc, "1.1.0")
    r = s.put(f"{arc.url}/arcext/v1/simulated-hosts/m1/faults", json={"failUpgrade": 1, "failRollback": True})
    assert r.status_code == 200
    failed = cli("connectedmachine", "upgrade-extension", "--machine-name", "m1", "-g", "rg1", "--extension-targets",
                 json.dumps({HANDLER: {"targetVersion": "1.1.0"}}))  # fmt: skip
    assert failed.exit_code == 1 and failed.stdout == ""
    assert failed.stderr.startswith("ERROR: (") and failed.stderr.count("\n") == 1


def test_long_running_operations_honour_retry_after(
    arcext_server: ArcextServer, arcext_session: requests.Session, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that sends Retry-After: 1 on every 202 and on InProgress statuses (the harness sends 0)."""
    assert arcext_server.app is not None
    monkeypatch.setitem(arcext_server.app.config, "ARCEXT_RETRY_AFTER", 1)
    machine(arcext_session, arcext_server)
    delays: list[float] = []

    def recording_sleep(seconds: float) -> None:
        delays.append(seconds)
        time.sleep(min(seconds, 0.05))

    monkeypatch.setattr(client_http, "sleep", recording_sleep)
    cli = Cli(env_for(arcext_server, config_dir))
    created = cli.json("connectedmachine", "extension", "create", "-n", "cse", "--machine-name", "m1", "-g", "rg1",
                       "--publisher", "Microsoft.Compute", "--type", "CustomScriptExtension")  # fmt: skip
    assert created["properties"]["provisioningState"] == "Succeeded"
    assert delays and all(d == 1.0 for d in delays)
    delays.clear()
    quiet = cli("connectedmachine", "extension", "delete", "-n", "cse", "--machine-name", "m1", "-g", "rg1", "-y",
                "--no-wait")  # fmt: skip
    assert quiet.exit_code == 0 and delays == [] and quiet.stderr == ""
    assert arcext_server.wait_for_operations()


def test_the_progress_spinner_is_on_stderr_only_when_asked_or_on_a_terminal(
    arc: ArcextServer, s: requests.Session, cli: Cli
) -> None:
    machine(s, arc)
    args = ["connectedmachine", "extension", "create", "-n", "cse", "--machine-name", "m1", "-g", "rg1",
            "--publisher", "Microsoft.Compute", "--type", "CustomScriptExtension", "--query", "name"]  # fmt: skip
    plain = cli(*args)
    assert plain.stderr == "" and json.loads(plain.stdout) == "cse"
    forced = cli(*args, env={"ARCEXT_PROGRESS": "1"})
    assert json.loads(forced.stdout) == "cse"
    assert "\x1b[?25l" in forced.stderr  # rich's live display hid the cursor while the spinner ran
    assert cli(*args, "--no-wait", env={"ARCEXT_PROGRESS": "1"}).stderr == ""
    assert arc.wait_for_operations()


def test_serve_and_token_commands_are_still_there() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    for name in ("serve", "token", "connectedmachine", "rollout", "activity-log", "login"):
        assert f"  {name}" in top.stdout
    assert runner.invoke(main, ["token", "--help"]).exit_code == 0
