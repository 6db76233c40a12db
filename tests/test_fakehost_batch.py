"""Issue 15 item 4: several agent scripts per pipeline and handler steps chained on the host keep the
safety properties of one script per pipeline: a failed step stops the chain (the next is never
started, and the host says so), each step is journalled before it is taken, a batch stops at its
first error, only the project's own scripts run in one, and both drivers stay under 25 WS-Management
round trips per upgrade with every gate still in place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from arcext.crypto import SecretBox
from arcext.hosts import connections
from arcext.hosts.base import ExtensionSpec, RemoteScriptError
from arcext.hosts.packages import PackageStore
from arcext.hosts.psrp import AgentScriptDriver, DriverTuning, HandlerCommandFailed, PsrpDriver, script_text
from arcext.hosts.winrm import WinrmDriver
from arcext.testing.fakehost import FakeHost, make_package

HANDLER = "Contoso.Fake.Agent"
NO_OPERATION = "00000000-0000-0000-0000-000000000000"
SPEC = ExtensionSpec("agent", "Contoso.Fake", "Agent", {"w": 1}, {"k": "secret"})


@pytest.fixture(params=["psrp", "winrm"])
def host(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "host", auth="basic", tls=True, driver=request.param) as h:
        yield h


def make_driver(tmp: Path, host: FakeHost, new_behaviour: dict[str, Any] | None = None) -> AgentScriptDriver:
    public, secrets = connections.validate(host.connection(operationTimeoutSeconds=3, statusDeadlineSeconds=3))
    box = SecretBox.from_data_dir(tmp / "data")
    conn = connections.load({**public, "credentials": box.seal(secrets)}, box)
    store = PackageStore(tmp / "data" / "packages")
    store.put("Contoso.Fake", "Agent", "1.0.0", make_package(HANDLER, "1.0.0"), datetime.now(UTC))
    store.put("Contoso.Fake", "Agent", "1.1.0", make_package(HANDLER, "1.1.0", new_behaviour), datetime.now(UTC))
    cls = WinrmDriver if host.driver == "winrm" else PsrpDriver
    return cls("m1", conn, store, {"agent": HANDLER}, DriverTuning(status_poll_s=0.05, status_settle_s=1))


def test_a_failed_step_stops_the_chain_on_the_host(tmp_path: Path, host: FakeHost) -> None:
    d = make_driver(tmp_path, host, {"update": {"exitCode": 5}})
    try:
        d.install(SPEC, "1.0.0")
        with pytest.raises(HandlerCommandFailed) as failed:
            d.upgrade(SPEC, "1.0.0", "1.1.0")
    finally:
        d.close()
    assert failed.value.wala_code == 1008 and failed.value.exit_code == 5
    # old.disable and new.update were sent with old.uninstall in one pipeline: the host ran the first
    # two and refused to start the third (its After step failed); nothing after it was sent
    assert host.machine.commands(HANDLER)[2:] == [("1.0.0", "disable"), ("1.1.0", "update")]
    journal = host.machine.journal(HANDLER)
    assert journal is not None and not journal["finished"]
    assert set(journal["steps"]) == {"old.disable", "new.update"}, "each step journalled before it ran; no other"
    assert journal["steps"]["new.update"]["exitCode"] == 5
    assert host.machine.versions(HANDLER) == {"1.0.0": "Installed", "1.1.0": "FailedUpgrade"}, "old not uninstalled"


def test_the_upgrade_is_five_commands_and_the_install_step_is_decided_on_the_host(
    tmp_path: Path, host: FakeHost
) -> None:
    d = make_driver(tmp_path, host)
    try:
        d.install(SPEC, "1.0.0")
        d.scripts_run.clear()
        commands_before = len(host.server.actions)
        d.upgrade(SPEC, "1.0.0", "1.1.0")
    finally:
        d.close()
    actions = host.server.actions[commands_before:]
    assert actions.count("Command") == 5, actions  # state, upload, three batches
    assert len(actions) <= 25, actions
    assert host.machine.commands(HANDLER)[2:] == [
        ("1.0.0", "disable"),
        ("1.1.0", "update"),
        ("1.0.0", "uninstall"),
        ("1.1.0", "install"),
        ("1.1.0", "enable"),
    ]
    assert host.machine.versions(HANDLER) == {"1.1.0": "Enabled"}
    journal = host.machine.journal(HANDLER)
    assert journal is not None and journal["finished"] and journal["outcome"] == "succeeded"


def run_batch(host: FakeHost, calls_json: str, scripts: dict[str, str]) -> list[Any]:
    wsman = WSMan(**host.pypsrp_kwargs())
    with wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(script_text("Invoke-AgentBatch"), use_local_scope=True)
        ps.add_parameters({"Scripts": scripts, "CallsJson": calls_json})
        ps.invoke()
        assert not ps.had_errors, [str(e) for e in ps.streams.error]
        return list(ps.output)


def test_a_batch_stops_at_its_first_error_and_runs_only_the_projects_scripts(tmp_path: Path) -> None:
    with FakeHost(tmp_path / "host", auth="basic", tls=True) as host:
        names = ["Get-ExtensionState", "Write-Journal"]
        scripts = {n: script_text(n) for n in names}
        calls = [
            {"script": "Get-ExtensionState", "parameters": {"Handler": HANDLER}},
            {"script": "Get-ExtensionState", "parameters": {"Handler": "..\\..\\Windows"}},  # ValidatePattern
            {"script": "Write-Journal", "parameters": {"Handler": HANDLER, "ContentJson": "{}"}},
        ]
        out = json.loads(str(run_batch(host, json.dumps(calls), scripts)[-1]))
        assert len(out["outputs"]) == 1 and len(out["errors"]) == 1, out
        assert "Handler" in out["errors"][0]
        assert host.machine.scripts_run() == ["Invoke-AgentBatch", "Get-ExtensionState"], "Write-Journal never ran"
        assert host.machine.journal(HANDLER) is None

        forged = {"Get-ExtensionState": script_text("Get-ExtensionState") + "\nRemove-Item C:\\ -Recurse\n"}
        out = json.loads(str(run_batch(host, json.dumps(calls[:1]), forged)[-1]))
        assert out["outputs"] == [] and "not one of arcext's own agent scripts" in out["errors"][0]
        runner = {"Invoke-HandlerRunner": script_text("Invoke-HandlerRunner")}
        out = json.loads(str(run_batch(host, json.dumps([{"script": "Invoke-HandlerRunner"}]), runner)[-1]))
        assert out["outputs"] == [] and "cannot run in a batch" in out["errors"][0]


def test_the_driver_raises_the_batch_error(tmp_path: Path, host: FakeHost) -> None:
    d = make_driver(tmp_path, host)
    try:
        with pytest.raises(RemoteScriptError, match="No journal"):
            d._scripts(
                [
                    ("Get-ExtensionState", {"Handler": HANDLER}),
                    ("Invoke-HandlerCommand", d.step_params(NO_OPERATION, "x", HANDLER, "1.0.0", "enable")),
                    ("Write-Journal", {"Handler": HANDLER, "ContentJson": "{}"}),
                ]
            )
    finally:
        d.close()
    assert "Write-Journal" not in host.machine.scripts_run(), "nothing after the failed script ran"
    assert host.machine.journal(HANDLER) is None
