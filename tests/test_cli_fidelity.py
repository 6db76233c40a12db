"""Issue #13, CLI: scripts written for ``az connectedmachine`` run unchanged with ``arcext`` in place of ``az``.

One test per item of the issue, each driving the real ``arcext`` command (click's runner, HTTP only)
against a live server; what the server then holds is checked through the API. The az behaviour each
test pins comes from Azure/azure-cli-extensions ``src/connectedmachine`` (the aaz commands) and
azure-cli's generic update, wait and shorthand syntax.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import arcext.client.http as client_http
from arcext.client import generic, shorthand
from arcext.ids import machine_key
from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url
from test_cli_client import HANDLER, Cli, env_for, extension, get_ext, machine, publish

RG_ID = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines"


def ext_id(m: str, name: str) -> str:
    return f"{RG_ID}/{m}/extensions/{name}"


@pytest.fixture(scope="module")
def manual_server() -> Iterator[ArcextServer]:
    with ArcextServer(manual_clock=True, simulate=True, config={"ARCEXT_RETRY_AFTER": 0}) as server:
        yield server


@pytest.fixture
def cli(arc: ArcextServer, tmp_path: Path) -> Cli:
    return Cli(env_for(arc, tmp_path / "config"))


@pytest.fixture
def fast_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    def nap(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(0.02)

    monkeypatch.setattr(client_http, "sleep", nap)
    return slept


# --- 1. extension update is az's generic update ----------------------------------------------------------
def test_update_is_a_generic_update_with_set_add_remove_and_force_string(
    arc: ArcextServer, s: requests.Session, cli: Cli
) -> None:
    machine(s, arc)
    extension(s, arc)
    base = ["connectedmachine", "extension", "update", "-n", "ama", "--machine-name", "m1", "-g", "rg1"]

    # no property: GET then PUT of what was read; succeeds (arcext used to exit 2 here)
    same = cli.json(*base)
    assert same["properties"]["settings"] == {"workspaceId": "ws-m1"}
    assert arc.services.resources.protected_settings(machine_key(SUB, "rg1", "m1"), "ama") == {"workspaceKey": "key-m1"}

    # --set: JSON values parsed, nested objects created, snake_case and camelCase paths; in order with --add/--remove
    result = cli.json(
        *base,
        "--set", "properties.settings.commandToExecute=hostname", "properties.settings.retries=3",
        "tags.env=prod", "properties.enable_automatic_upgrade=false",
        "--add", "properties.settings.fileUris", "https://a/1.ps1", "https://a/2.ps1",
        "--add", "properties.settings.steps", "name=first", "order=1",
        "--remove", "properties.settings.workspaceId",
    )  # fmt: skip
    settings = get_ext(s, arc)["properties"]["settings"]
    assert settings == {
        "commandToExecute": "hostname",
        "retries": 3,
        "fileUris": ["https://a/1.ps1", "https://a/2.ps1"],
        "steps": [{"name": "first", "order": 1}],
    }
    assert result["properties"]["settings"] == settings and result["tags"] == {"env": "prod"}
    assert get_ext(s, arc)["properties"]["enableAutomaticUpgrade"] is False
    assert "protectedSettings" not in json.dumps(result)
    assert arc.services.resources.protected_settings(machine_key(SUB, "rg1", "m1"), "ama") == {"workspaceKey": "key-m1"}

    # --force-string keeps "3" a string; --remove of a list element by index; [key=value] selects an element
    cli.json(*base, "--set", "properties.settings.retries=3", "properties.settings.steps[name=first].order=2",
             "--force-string", "--remove", "properties.settings.fileUris", "0")  # fmt: skip
    settings = get_ext(s, arc)["properties"]["settings"]
    assert settings["retries"] == "3" and settings["steps"] == [{"name": "first", "order": "2"}]
    assert settings["fileUris"] == ["https://a/2.ps1"]

    # the named options apply before --set, as az's InstanceUpdateByJson runs before InstanceUpdateByGeneric
    cli.json(*base, "--settings", "{a:1}", "--set", "properties.settings.b=2")
    assert get_ext(s, arc)["properties"]["settings"] == {"a": "1", "b": 2}

    bad = cli(*base, "--remove", "properties.nothing.here")
    assert bad.exit_code == 2 and bad.stderr.startswith("ERROR: Couldn't find 'nothing'")
    assert cli(*base, "--set", "no-equals-sign").exit_code == 2


def test_generic_update_paths_unit() -> None:
    instance: dict[str, Any] = {"properties": {"typeHandlerVersion": "1.0", "settings": {"list": [1, 2, 3]}}}
    generic.apply(
        instance,
        [
            (generic.SET, ["properties.type_handler_version=1.2", "properties.settings.list[-1]=9"]),
            (generic.REMOVE, ["properties.settings.list", "0"]),
            (generic.ADD, ["properties.settings.list", '{"k": "v"}', "x=1", "y=2", "plain"]),
        ],
    )
    assert instance["properties"]["typeHandlerVersion"] == 1.2  # JSON number, as az's --set reads it
    assert instance["properties"]["settings"]["list"] == [2, 9, {"k": "v"}, {"x": 1, "y": 2}, "plain"]
    with pytest.raises(generic.GenericUpdateError):
        generic.apply(instance, [(generic.ADD, ["properties.typeHandlerVersion", "1"])])


# --- 2. --ids ----------------------------------------------------------------------------------------
def test_ids_on_show_update_delete_and_upgrade_extension(arc: ArcextServer, s: requests.Session, cli: Cli) -> None:
    machine(s, arc, "m1")
    machine(s, arc, "m2")
    extension(s, arc, "m1")
    extension(s, arc, "m2")
    one = cli.json("connectedmachine", "extension", "show", "--ids", ext_id("m1", "ama"))
    assert one["id"].lower() == ext_id("m1", "ama").lower()
    # several ids after one --ids (az's nargs='+'): a list back, in order; no subscription needed
    both = json.loads(cli("connectedmachine", "extension", "show", "--ids", ext_id("m1", "ama"), ext_id("m2", "ama"),
                          env={"ARCEXT_SUBSCRIPTION_ID": None}).stdout)  # fmt: skip
    assert [b["id"].split("/")[8] for b in both] == ["m1", "m2"]

    updated = cli.json("connectedmachine", "extension", "update", "--ids", ext_id("m1", "ama"), ext_id("m2", "ama"),
                       "--enable-auto-upgrade", "false")  # fmt: skip
    assert [u["properties"]["enableAutomaticUpgrade"] for u in updated] == [False, False]
    assert get_ext(s, arc, m="m2")["properties"]["enableAutomaticUpgrade"] is False

    publish(s, arc, "1.1.0")
    upgraded = cli("connectedmachine", "upgrade-extension", "--ids", f"{RG_ID}/m1", f"{RG_ID}/m2",
                   "--extension-targets", json.dumps({HANDLER: {"targetVersion": "1.1.0"}}))  # fmt: skip
    assert upgraded.exit_code == 0, upgraded.output
    for m in ("m1", "m2"):
        assert get_ext(s, arc, m=m)["properties"]["typeHandlerVersion"] == "1.1.0"

    deleted = cli("connectedmachine", "extension", "delete", "--ids", ext_id("m1", "ama"), ext_id("m2", "ama"), "-y")
    assert deleted.exit_code == 0 and deleted.stdout == ""
    for m in ("m1", "m2"):
        assert s.get(ext_url(arc, "ama", m), params={"api-version": API}).status_code == 404

    wrong = cli("connectedmachine", "extension", "show", "--ids", f"{RG_ID}/m1")
    assert wrong.exit_code == 2 and "is not the id of a machine extension" in wrong.stderr
    neither = cli("connectedmachine", "extension", "show", "-g", "rg1")
    assert neither.exit_code == 2 and "--machine-name, --name (or --ids)" in neither.stderr


# --- 3. extension wait ------------------------------------------------------------------------------------
def test_extension_wait_pairs_with_no_wait(
    arc: ArcextServer, s: requests.Session, cli: Cli, fast_sleep: list[float]
) -> None:
    machine(s, arc)
    names = ["-n", "cse", "--machine-name", "m1", "-g", "rg1"]
    created = cli("connectedmachine", "extension", "create", *names, "--publisher", "Microsoft.Compute",
                  "--type", "CustomScriptExtension", "--no-wait")  # fmt: skip
    assert created.exit_code == 0 and created.stdout == ""
    done = cli("connectedmachine", "extension", "wait", *names, "--created", "--interval", "5")
    assert done.exit_code == 0 and done.stdout == ""
    assert get_ext(s, arc, "cse")["properties"]["provisioningState"] == "Succeeded"
    assert cli("connectedmachine", "extension", "wait", "--ids", ext_id("m1", "cse"), "--exists").exit_code == 0

    assert cli("connectedmachine", "extension", "update", *names, "--set", "properties.settings.x=1",
               "--no-wait").exit_code == 0  # fmt: skip
    assert cli("connectedmachine", "extension", "wait", *names, "--updated").exit_code == 0
    custom = cli("connectedmachine", "extension", "wait", *names, "--custom", "properties.settings.x == `1`")
    assert custom.exit_code == 0

    fast_sleep.clear()
    timed_out = cli("connectedmachine", "extension", "wait", *names, "--deleted", "--interval", "2", "--timeout", "6")
    assert timed_out.exit_code == 5 and "Wait operation timed-out after 6 seconds" in timed_out.stderr
    assert fast_sleep == [2, 2, 2]  # az polls range(0, timeout, interval) times

    assert cli("connectedmachine", "extension", "delete", *names, "-y", "--no-wait").exit_code == 0
    assert cli("connectedmachine", "extension", "wait", *names, "--deleted").exit_code == 0
    assert s.get(ext_url(arc, "cse"), params={"api-version": API}).status_code == 404
    missing = cli("connectedmachine", "extension", "wait", *names, "--updated", "--timeout", "1")
    assert missing.exit_code == 3  # --updated on a missing extension is its 404, as in az


# --- 4. --tags a=b c=d ----------------------------------------------------------------------------------
def test_tags_take_several_values_after_one_option(arc: ArcextServer, s: requests.Session, cli: Cli) -> None:
    machine(s, arc)
    created = cli("connectedmachine", "extension", "create", "-n", "cse", "--machine-name", "m1", "-g", "rg1",
                  "--publisher", "Microsoft.Compute", "--type", "CustomScriptExtension",
                  "--tags", "env=test", "team=ops", "empty", "--no-wait")  # fmt: skip
    assert created.exit_code == 0 and created.stdout == ""
    assert arc.wait_for_operations()
    assert get_ext(s, arc, "cse")["tags"] == {"env": "test", "team": "ops", "empty": ""}
    names = ["-n", "cse", "--machine-name", "m1", "-g", "rg1"]
    # the value after a tag may be another option; a negative number is still a value
    updated = cli.json("connectedmachine", "extension", "update", *names, "--tags", "a=b", "c=-1", "--query", "tags")
    assert updated == {"a": "b", "c": "-1"}
    assert cli.json("connectedmachine", "extension", "update", *names, "--tags", "", "--query", "tags") == {}


# --- 5. shorthand syntax --------------------------------------------------------------------------------
def test_shorthand_syntax_for_settings_protected_settings_and_targets(
    arc: ArcextServer, s: requests.Session, cli: Cli, tmp_path: Path
) -> None:
    machine(s, arc)
    names = ["-n", "cse", "--machine-name", "m1", "-g", "rg1"]
    result = cli.json(
        "connectedmachine", "extension", "create", *names, "--publisher", "Microsoft.Compute",
        "--type", "CustomScriptExtension",
        "--settings", "{commandToExecute:powershell.exe -c Get-Date,fileUris:[https://a/b.ps1,'x,y'],n:null}",
        "--protected-settings", "{storageAccountKey:'it/'s secret'}",
    )  # fmt: skip
    assert result["properties"]["settings"] == {
        "commandToExecute": "powershell.exe -c Get-Date",
        "fileUris": ["https://a/b.ps1", "x,y"],
        "n": None,
    }
    assert "secret" not in json.dumps(result)
    key = machine_key(SUB, "rg1", "m1")
    assert arc.services.resources.protected_settings(key, "cse") == {"storageAccountKey": "it's secret"}
    # @file holds shorthand too
    (tmp_path / "settings.txt").write_text('{commandToExecute:hostname, "quoted key":"a\\"b"}')
    cli.json("connectedmachine", "extension", "update", *names, "--settings", f"@{tmp_path / 'settings.txt'}")
    assert get_ext(s, arc, "cse")["properties"]["settings"] == {"commandToExecute": "hostname", "quoted key": 'a"b'}

    extension(s, arc, name="ama")
    publish(s, arc, "1.1.0")
    upgraded = cli("connectedmachine", "upgrade-extension", "--machine-name", "m1", "-g", "rg1",
                   "--extension-targets", f"{{{HANDLER}:{{target-version:1.1.0}}}}")  # fmt: skip
    assert upgraded.exit_code == 0, upgraded.output
    assert get_ext(s, arc, "ama")["properties"]["typeHandlerVersion"] == "1.1.0"


def test_shorthand_parser_unit() -> None:
    assert shorthand.parse('{"a": 1, "b": true}') == {"a": 1, "b": True}  # JSON keeps its types
    assert shorthand.parse("{a:1,b:{c:[x,'y]z',\"q\"]},d:''}") == {"a": "1", "b": {"c": ["x", "y]z", "q"]}, "d": ""}
    assert shorthand.parse("{}") == {} and shorthand.parse("[]") == []
    assert shorthand.parse("plain words: all of it") == "plain words: all of it"
    for bad in ("{a:1", "{a}", "{a:'x}", "[a,b"):
        with pytest.raises(shorthand.ShorthandError):
            shorthand.parse(bad)


# --- 6. image show -n/--name, --auto-upgrade-version, --instance-view, optional --extension-targets ------------
def test_image_show_names_auto_upgrade_version_instance_view_and_optional_targets(
    arc: ArcextServer, s: requests.Session, cli: Cli
) -> None:
    machine(s, arc)
    extension(s, arc)
    publish(s, arc, "1.1.0")
    image = ["connectedmachine", "extension", "image", "show", "-l", "eastus", "-p", "Microsoft.Azure.Monitor",
             "--extension-type", "AzureMonitorWindowsAgent"]  # fmt: skip
    for flag in ("-n", "--name", "--version"):
        assert cli.json(*image, flag, "1.1.0")["version"] == "1.1.0"

    names = ["-n", "ama", "--machine-name", "m1", "-g", "rg1"]
    result = cli.json("connectedmachine", "extension", "update", *names, "--auto-upgrade-version", "true",
                      "--instance-view", "{name:ama,type-handler-version:9.9,status:{code:x,level:Info}}")  # fmt: skip
    assert result["properties"]["autoUpgradeMinorVersion"] is True
    # the instance view is the server's (what the handler reports), as in Azure, not what the client sent
    assert get_ext(s, arc)["properties"].get("instanceView", {}).get("typeHandlerVersion") != "9.9"

    # --extension-targets is optional, as in az: the body is {} and the server answers
    no_targets = cli("connectedmachine", "upgrade-extension", "--machine-name", "m1", "-g", "rg1")
    assert no_targets.exit_code == 1 and no_targets.stderr.startswith("ERROR: (")
    assert "extensionTargets" in no_targets.stderr


# --- 7. az's global options -------------------------------------------------------------------------------
def test_global_options_scripts_pass(arc: ArcextServer, s: requests.Session, cli: Cli) -> None:
    machine(s, arc)
    extension(s, arc)
    base = ["connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1"]
    misspelt = [*base, "--query", "[].properties.enableAutoUpgrade"]
    assert "WARNING" in cli(*misspelt).stderr
    quiet = cli(*misspelt, "--only-show-errors")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert cli("logout").stderr.startswith("WARNING: not logged in")
    assert cli("logout", "--only-show-errors").stderr == ""

    debug = cli(*base, "--debug")
    assert debug.exit_code == 0 and json.loads(debug.stdout)[0]["name"] == "ama"
    assert "Request: GET " in debug.stderr and "Response status: 200" in debug.stderr
    assert arc.token not in debug.stderr and arc.token not in debug.stdout
    verbose = cli(*base, "--verbose")
    assert "Request: GET" in verbose.stderr and "Request query" not in verbose.stderr
    assert cli(*base).stderr == ""  # the logging stops with the command

    for helper in (["-h"], ["extension", "-h"], ["extension", "update", "-h"]):
        shown = cli("connectedmachine", *helper)
        assert shown.exit_code == 0 and "Usage:" in shown.stdout

    yamlc = cli(*base, "-o", "yamlc")
    assert yamlc.exit_code == 0 and "name: ama" in yamlc.stdout

    # --subscription by name: az reads names from its profile; arcext from login's and ARCEXT_SUBSCRIPTION_NAMES
    named = cli(*base, "--subscription", "Contoso Dev", env={
        "ARCEXT_SUBSCRIPTION_ID": None, "ARCEXT_SUBSCRIPTION_NAMES": json.dumps({"Contoso Dev": SUB})})  # fmt: skip
    assert named.exit_code == 0 and json.loads(named.stdout)[0]["name"] == "ama"
    login = cli("login", "--endpoint", arc.url, "--token", arc.token, "--subscription", SUB,
                "--subscription-name", "Contoso Dev", env={"ARCEXT_ENDPOINT": None, "ARCEXT_TOKEN": None})  # fmt: skip
    assert login.exit_code == 0, login.output
    by_id = cli(*base, "--subscription", SUB)
    by_name = cli(*base, "--subscription", "contoso dev", env={"ARCEXT_SUBSCRIPTION_ID": None})
    assert by_id.exit_code == by_name.exit_code == 0 and by_id.stdout == by_name.stdout


def test_yamlc_is_coloured_on_a_terminal() -> None:
    from arcext.client.output import render

    coloured = render({"name": "ama", "n": 1}, "yamlc", color=True)
    assert "\x1b[" in coloured and "ama" in coloured
    assert render({"name": "ama"}, "yamlc", color=False) == "name: ama\n"


# --- 8. connectedmachine list / show ---------------------------------------------------------------------
def test_connectedmachine_list_and_show(arc: ArcextServer, s: requests.Session, cli: Cli) -> None:
    machine(s, arc, "m1", "eastus")
    machine(s, arc, "m2", "westeurope")
    listed = cli.json("connectedmachine", "list", "-g", "rg1")
    assert sorted(m["name"] for m in listed) == ["m1", "m2"]
    assert sorted(m["name"] for m in cli.json("connectedmachine", "list")) == ["m1", "m2"]
    assert len(cli.json("connectedmachine", "list", "--max-items", "1")) == 1
    assert cli.json("connectedmachine", "list", "-g", "elsewhere") == []
    for flag in ("-n", "--name", "--machine-name"):
        shown = cli.json("connectedmachine", "show", flag, "m2", "-g", "rg1")
        assert shown["name"] == "m2" and shown["location"] == "westeurope"
    by_ids = cli.json("connectedmachine", "show", "--ids", f"{RG_ID}/m1", f"{RG_ID}/m2", "--query", "[].name")
    assert by_ids == ["m1", "m2"]
    table = cli("connectedmachine", "list", "-g", "rg1", "-o", "table")
    assert table.exit_code == 0 and "m1" in table.stdout and "westeurope" in table.stdout
    missing = cli("connectedmachine", "show", "-n", "ghost", "-g", "rg1")
    assert missing.exit_code == 3 and missing.stderr.startswith("ERROR: (ResourceNotFound)")
