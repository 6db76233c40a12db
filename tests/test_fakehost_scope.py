"""Issue 17 item 1: every agent script runs in its own scope. The fake Windows host refuses a
pipeline that would dot-source a project script into the runspace pool's global scope, and (when
told to allow it) models the type-constrained variables such a script leaves behind, which is what
broke every health check after an upgrade on real hosts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from arcext.crypto import SecretBox
from arcext.hosts import connections
from arcext.hosts.agent_scripts import script_names
from arcext.hosts.base import ExtensionSpec, RemoteScriptError
from arcext.hosts.packages import PackageStore
from arcext.hosts.psrp import DriverTuning, PsrpDriver, script_text
from arcext.testing.fakehost import FakeHost, make_package
from arcext.testing.fakehost.pipelines import Terminating, scope_check
from arcext.testing.fakehost.runspace import Shell
from arcext.testing.fakehost.scripts import ScriptInfo, extract_parameters, script_hash

HANDLER = "Contoso.Fake.Agent"
BEFORE = Path(__file__).parent / "windows" / "before-issue-17"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "host", auth="basic", tls=True) as h:
        yield h


def run(host: FakeHost, use_local_scope: bool | None) -> tuple[list[Any], list[str]]:
    wsman = WSMan(**host.pypsrp_kwargs())
    with wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(script_text("Get-ExtensionState"), use_local_scope=use_local_scope)
        ps.add_parameters({"Handler": HANDLER})
        ps.invoke()
        return list(ps.output), [str(e) for e in ps.streams.error]


def test_a_dot_sourced_script_is_refused_and_a_local_scope_one_runs(host: FakeHost) -> None:
    output, errors = run(host, None)
    assert output == [] and errors and "useLocalScope=true" in errors[0]
    output, errors = run(host, False)
    assert output == [] and errors and "dot-sourced" in errors[0]
    output, errors = run(host, True)
    assert errors == [] and '"handler":"Contoso.Fake.Agent"' in output[-1]
    assert host.machine.scripts_run() == ["Get-ExtensionState"], "the refused pipelines never reached the model"


def driver(tmp: Path, host: FakeHost) -> tuple[PsrpDriver, ExtensionSpec]:
    public, secrets = connections.validate(host.connection(operationTimeoutSeconds=3, statusDeadlineSeconds=2))
    box = SecretBox.from_data_dir(tmp / "data")
    conn = connections.load({**public, "credentials": box.seal(secrets)}, box)
    store = PackageStore(tmp / "data" / "packages")
    for v in ("1.0.0", "1.1.0"):
        store.put("Contoso.Fake", "Agent", v, make_package(HANDLER, v), datetime.now(UTC))
    spec = ExtensionSpec("agent", "Contoso.Fake", "Agent", {"w": 1})
    return PsrpDriver("m1", conn, store, tuning=DriverTuning(status_poll_s=0.05)), spec


def test_the_driver_runs_every_script_in_its_own_scope(tmp_path: Path, host: FakeHost) -> None:
    d, spec = driver(tmp_path, host)
    try:
        d.install(spec, "1.0.0")
        d.upgrade(spec, "1.0.0", "1.1.0")  # new.update gets -Environment, then the health check runs
    finally:
        d.close()
    assert host.machine.versions(HANDLER) == {"1.1.0": "Enabled"}


def test_without_local_scope_the_driver_fails_on_the_fake_host(
    tmp_path: Path, host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The regression this guards against: psrp.py calling add_script(text) as it did before."""
    real = PowerShell.add_script

    def old_add_script(self: PowerShell, script: str, use_local_scope: bool | None = None) -> PowerShell:
        return real(self, script)

    monkeypatch.setattr(PowerShell, "add_script", old_add_script)
    d, spec = driver(tmp_path, host)
    try:
        with pytest.raises(RemoteScriptError, match="useLocalScope=true"):
            d.install(spec, "1.0.0")
    finally:
        d.close()
    assert host.machine.versions(HANDLER) == {}


def info(name: str, text: str) -> ScriptInfo:
    return ScriptInfo(name, script_hash(text), extract_parameters(text), text)


class _Server:
    allow_dot_sourcing = True


def test_the_model_of_leftovers_breaks_the_old_scripts_as_powershell_did() -> None:
    """Old Invoke-HandlerCommand.ps1 leaves [hashtable]$Environment; old Get-HandlerStatus.ps1 then
    assigns a PSCustomObject to $environment: "Cannot convert ... to Hashtable" on 5.1 and 7."""
    shell = Shell("S1", "uri")
    old_invoke = info("Invoke-HandlerCommand", (BEFORE / "Invoke-HandlerCommand.ps1").read_text())
    old_status = info("Get-HandlerStatus", (BEFORE / "Get-HandlerStatus.ps1").read_text())
    scope_check(_Server(), shell, old_invoke, None)
    assert shell.global_constraints["environment"] == ("hashtable", "Invoke-HandlerCommand")
    with pytest.raises(Terminating, match=r"Cannot convert .* to type \"hashtable\""):
        scope_check(_Server(), shell, old_status, None)


def test_the_current_scripts_would_not_collide_even_dot_sourced() -> None:
    """Defence in depth: no script assigns a variable another script leaves typed, in any order."""
    from arcext.testing.fakehost.pscheck import assigned_variables, converts_to, typed_variables

    texts = {name: script_text(name) for name in script_names()}
    assert texts
    clashes = [
        f"{a}.ps1 leaves ${name} [{type_}], {b}.ps1 assigns {rhs[:40]}"
        for a, ta in texts.items()
        for name, type_ in typed_variables(ta).items()
        for b, tb in texts.items()
        if b != a
        for n2, rhs in assigned_variables(tb).items()
        if n2 == name and not converts_to(type_, rhs)
    ]
    assert clashes == []


def test_with_dot_sourcing_allowed_the_host_tracks_leftovers_per_pool(host: FakeHost) -> None:
    host.server.allow_dot_sourcing = True
    output, errors = run(host, None)
    assert errors == [] and output
    shells = list(host.server.shells.values())
    assert shells == [] or all(isinstance(s.global_constraints, dict) for s in shells)


def test_a_no_language_jea_endpoint_refuses_the_scripts_with_powershells_message(tmp_path: Path) -> None:
    """Issue 17 item 9: a JEA endpoint (NoLanguage) refuses AddScript; arcext needs a FullLanguage
    endpoint (docs/hosts.md says which), and the driver reports the host's own reason."""
    with FakeHost(tmp_path / "jea", auth="basic", tls=True) as jea:
        jea.server.no_language_endpoints.add("arcext.jea")
        d, spec = driver(tmp_path, jea)
        d.conn = type(d.conn)(**{**d.conn.__dict__, "configuration_name": "arcext.jea"})
        try:
            with pytest.raises(RemoteScriptError, match="no-language mode"):
                d.install(spec, "1.0.0")
        finally:
            d.close()
        assert jea.machine.scripts_run() == []
