"""Issue 17 on the stricter fake Windows host: what Windows PowerShell 5.1 / 7 do that the old scripts
got wrong, each through the real driver and pypsrp over HTTP where the behaviour shows there, and
through the model directly where it needs the old script text (tests/windows/before-issue-17/)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from arcext.crypto import SecretBox
from arcext.hosts import connections
from arcext.hosts.base import ExtensionSpec
from arcext.hosts.packages import PackageStore
from arcext.hosts.psrp import DriverTuning, HandlerCommandFailed, PsrpDriver, script_text
from arcext.testing.fakehost import FakeHost, make_package
from arcext.testing.fakehost.machine import PROTECTED_ACL, ScriptFailure
from arcext.versions import version_key

HANDLER = "Contoso.Fake.Agent"
BEFORE = Path(__file__).parent / "windows" / "before-issue-17"
SPEC = ExtensionSpec("agent", "Contoso.Fake", "Agent", {"w": 1})


@pytest.fixture(params=["Desktop", "Core"])
def host(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "host", auth="basic", tls=True, edition=request.param) as h:
        yield h


def driver(tmp: Path, host: FakeHost, behaviour: dict[str, Any] | None = None, **conn: Any) -> PsrpDriver:
    body = host.connection(operationTimeoutSeconds=3, statusDeadlineSeconds=3, **conn)
    public, secrets = connections.validate(body)
    box = SecretBox.from_data_dir(tmp / "data")
    c = connections.load({**public, "credentials": box.seal(secrets)}, box)
    store = PackageStore(tmp / "data" / "packages")
    store.put("Contoso.Fake", "Agent", "1.0.0", make_package(HANDLER, "1.0.0", behaviour), datetime.now(UTC))
    return PsrpDriver("m1", c, store, {"agent": HANDLER}, DriverTuning(status_poll_s=0.05, status_settle_s=1))


# --- item 2: Kill() on 5.1 -------------------------------------------------------------------------
def test_a_hanging_handler_is_killed_and_recorded_on_51(tmp_path: Path, host: FakeHost) -> None:
    """The handler task runs under powershell.exe (5.1) on every host: the timeout path must work
    there, record 1011 in the journal and the state, and leave nothing running."""
    d = driver(tmp_path, host, {"install": {"hang": True}}, handlerTimeoutSeconds={"install": 1})
    try:
        with pytest.raises(HandlerCommandFailed) as caught:
            d.install(SPEC, "1.0.0")
    finally:
        d.close()
    assert caught.value.wala_code == 1011
    journal = host.machine.journal(HANDLER)
    assert journal is not None and journal["steps"]["install.install"]["timedOut"] is True
    assert journal["steps"]["install.install"]["exitCode"] == 1011
    assert host.machine.failures() == [], "the runner's kill worked on .NET Framework"
    assert host.machine.versions(HANDLER) == {"1.0.0": "NotInstalled"}


def test_the_old_kill_would_throw_on_51_and_record_nothing(tmp_path: Path) -> None:
    """Old Invoke-HandlerCommand.ps1 called $process.Kill($true): on .NET Framework there is no such
    overload, the timeout path throws, and neither HandlerState nor the journal is written."""
    from arcext.testing.fakehost.machine import WindowsMachine

    machine = WindowsMachine(tmp_path / "disk")
    old = (BEFORE / "Invoke-HandlerCommand.ps1").read_text()
    assert machine._kill(old, "Desktop") is False
    assert machine.failures() == ['Cannot find an overload for "Kill" and the argument count: "1".']
    assert machine._kill(old, "Core") is True, "PowerShell 7 (.NET Core 3.0+) has Kill(bool)"
    assert machine._kill(script_text("Invoke-HandlerRunner"), "Desktop") is True


def test_a_runner_with_the_old_kill_leaves_the_step_unrecorded(tmp_path: Path) -> None:
    from arcext.testing.fakehost.machine import WindowsMachine

    machine = WindowsMachine(tmp_path / "disk")
    jpath = machine.journal_path(HANDLER)
    jpath.parent.mkdir(parents=True)
    jpath.write_text(json.dumps({"operationId": "op", "steps": {"s": {"state": "started"}}}))
    request = {"handler": HANDLER, "version": "1.0.0", "command": "install", "step": "s", "operationId": "op"}
    request |= {"timeoutSeconds": 1, "stateBefore": "NotInstalled", "updateMode": ""}
    machine._log("commands", {"handler": HANDLER, "version": "1.0.0", "command": "install", "step": "s"})
    machine._task(request, {"install": {"hang": True}}, {}, (BEFORE / "Invoke-HandlerCommand.ps1").read_text())
    assert machine.journal(HANDLER) == {"operationId": "op", "steps": {"s": {"state": "started"}}}
    machine._task(request, {"install": {"hang": True}}, {}, script_text("Invoke-HandlerRunner"))
    assert machine.journal(HANDLER)["steps"]["s"]["timedOut"] is True  # type: ignore[index]


# --- item 4: LocalSystem, detached from the session -------------------------------------------------
def test_the_handler_runs_as_system_and_outlives_the_session(tmp_path: Path, host: FakeHost) -> None:
    d = driver(tmp_path, host, {"enable": {"sleepSeconds": 1.0}})
    d.install(SPEC, "1.0.0")  # install + enable, each polled until its task reported
    log = host.machine.command_log()
    assert [(c["command"], c["runAs"], c["task"]) for c in log] == [
        ("install", "SYSTEM", r"\arcext\Contoso.Fake.Agent.install.install"),
        ("enable", "SYSTEM", r"\arcext\Contoso.Fake.Agent.install.enable"),
    ]
    # start a disable, then drop the session at once: the task runs on and records its outcome
    state = d.host_state(HANDLER)
    op = d._start(HANDLER, "remove", state)
    params = {"Handler": HANDLER, "Version": "1.0.0", "Command": "disable", "TimeoutSeconds": 30}
    params |= {"OperationId": op, "Step": "x.disable", "RunnerScript": script_text("Invoke-HandlerRunner")}
    first = d._script("Invoke-HandlerCommand", params)
    assert first["pending"] is True
    d.close()
    deadline = time.monotonic() + 10
    while (host.machine.journal(HANDLER) or {})["steps"]["x.disable"]["state"] != "done":
        assert time.monotonic() < deadline, "the detached task never finished"
        time.sleep(0.05)
    again = driver(tmp_path, host)
    try:
        outcome = again._script("Invoke-HandlerCommand", params)
        replay = again._script("Invoke-HandlerCommand", params)
    finally:
        again.close()
    assert (outcome["pending"], outcome["exitCode"], outcome["replayed"], outcome["state"]) == (
        False,
        0,
        False,
        "Installed",
    )
    assert replay["replayed"] is True, "a step already reported is never run again"
    assert [c["command"] for c in host.machine.command_log()] == ["install", "enable", "disable"]


# --- item 6: ACLs -----------------------------------------------------------------------------------
def test_the_folders_the_scripts_create_get_a_protected_acl(tmp_path: Path, host: FakeHost) -> None:
    d = driver(tmp_path, host)
    try:
        d.install(SPEC, "1.0.0")
    finally:
        d.close()
    assert host.machine.acl(r"C:\ProgramData\arcext") == PROTECTED_ACL
    assert host.machine.acl(rf"C:\Packages\Plugins\{HANDLER}") == PROTECTED_ACL
    assert "(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)" in PROTECTED_ACL and "D:P" in PROTECTED_ACL


# --- items 7 and 8: BOM per edition, empty status files ----------------------------------------------
def test_status_with_a_bom_and_non_ascii_is_read_on_both_editions(tmp_path: Path, host: FakeHost) -> None:
    d = driver(tmp_path, host, {"message": "Bereit – läuft ✓"})
    try:
        d.install(SPEC, "1.0.0")
        status = d._script("Get-HandlerStatus", {"Handler": HANDLER, "Version": "1.0.0", "SequenceNumber": 0})
    finally:
        d.close()
    raw = host.machine.plugin_dir(HANDLER, "1.0.0").joinpath("Status", "0.status").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == (host.machine.edition == "Desktop"), "a 5.1 handler writes a BOM"
    assert status["status"]["message"] == "Bereit – läuft ✓"
    env = host.machine.plugin_dir(HANDLER, "1.0.0").joinpath("HandlerEnvironment.json").read_bytes()
    assert not env.startswith(b"\xef\xbb\xbf"), "the scripts write UTF-8 without a BOM on 5.1 and 7 alike"


def test_an_empty_status_file_is_polled_again_not_failed(tmp_path: Path, host: FakeHost) -> None:
    """The handler creates Status\\0.status empty and writes it 0.5 s later; the old script answered
    'not valid JSON' at once (5.1: Get-Content -Raw of an empty file is $null) and the driver failed 1012."""
    d = driver(tmp_path, host, {"statusDelaySeconds": 0.5})
    try:
        d.install(SPEC, "1.0.0")
    finally:
        d.close()
    assert host.machine.versions(HANDLER) == {"1.0.0": "Enabled"}
    assert host.machine.scripts_run().count("Get-HandlerStatus") >= 2, "polled while the file was empty"


def test_a_status_file_that_stays_invalid_fails_1012(tmp_path: Path, host: FakeHost) -> None:
    d = driver(tmp_path, host, {"status": "corrupt", "statusOld": True})
    try:
        with pytest.raises(HandlerCommandFailed) as caught:
            d.install(SPEC, "1.0.0")
    finally:
        d.close()
    assert caught.value.wala_code == 1012 and "not valid JSON" in caught.value.message


# --- item 13: odd files do not break the state read ---------------------------------------------------
def test_non_numeric_settings_and_an_empty_state_file_do_not_break_the_state_read(
    tmp_path: Path, host: FakeHost
) -> None:
    d = driver(tmp_path, host)
    try:
        d.install(SPEC, "1.0.0")
        settings = host.machine.plugin_dir(HANDLER, "1.0.0") / "RuntimeSettings"
        (settings / "backup.settings").write_text("{}")
        (settings / "agent.7.settings").write_text("{}")
        (host.machine.plugin_dir(HANDLER, "1.0.0") / "HandlerState").write_text("")
        (host.machine.path(rf"C:\Packages\Plugins\{HANDLER}") / "not-a-version").mkdir()
        state = d.host_state(HANDLER)
    finally:
        d.close()
    assert state["versions"] == [{"version": "1.0.0", "state": "NotInstalled", "sequenceNumber": 7}]


# --- item 15: long paths -------------------------------------------------------------------------------
def test_a_path_longer_than_51_allows_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    from arcext.testing.fakehost.machine import PLUGINS, WindowsMachine

    machine = WindowsMachine(tmp_path / "disk")
    with pytest.raises(ScriptFailure, match="longer than"):
        machine.confined(PLUGINS, "A." + "b" * 120, "1" * 9 + ".1", "c" * 120)


# --- item 16: versions sort as versions -----------------------------------------------------------------
def test_versions_sort_numerically(tmp_path: Path, host: FakeHost) -> None:
    assert sorted(["1.10.0", "1.9.0", "1.2.0"], key=version_key) == ["1.2.0", "1.9.0", "1.10.0"]
    for version in ("1.9.0", "1.10.0"):
        d = host.machine.plugin_dir(HANDLER, version)
        d.mkdir(parents=True)
        (d / "HandlerState").write_text("Installed")
    dr = driver(tmp_path, host)
    try:
        installed = dr.installed("agent")
    finally:
        dr.close()
    assert installed is not None and installed.version == "1.10.0", "as strings, 1.9.0 would sort last"
