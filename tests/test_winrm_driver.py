"""The winrm driver's contract through unmodified pywinrm over real HTTP(S) against the fake host's
WinRS cmd shell: upload-then-run (only two small fixed command lines, parameters on stdin), hash
checks on the host, chunked uploads, the long-poll path, and the error taxonomy for injected faults;
plus its connection settings (transport mapping, refused combinations) and the resolver."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from arcext import errors
from arcext.crypto import SecretBox
from arcext.hosts import connections
from arcext.hosts.base import (
    ExtensionSpec,
    HostAuthError,
    HostTimeout,
    HostUnreachable,
    ProtocolError,
    RemoteScriptError,
    SessionLost,
)
from arcext.hosts.packages import PackageStore
from arcext.hosts.psrp import SCRIPT_PARAMETERS, script_text
from arcext.hosts.winrm import (
    CMD_LINE_LIMIT,
    WINRS_SCRIPTS,
    WinrmDriver,
    command_line_length,
    encoded_command,
    stderr_errors,
)
from arcext.testing.fakehost import FakeHost, make_package
from test_fakehost_protocol import (
    HANDLER,
    check_fault_mapping,
    check_late_failure_keeps_the_new_session,
    check_long_poll,
    driver,
)

SPEC = ExtensionSpec("agent", "Contoso.Fake", "Agent", {"x": 1})


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "host", auth="basic", tls=True, driver="winrm") as host:
        yield host


def winrm(tmp_path: Path, host: FakeHost, **overrides: object) -> WinrmDriver:
    d = driver(tmp_path, host, WinrmDriver, **overrides)
    assert isinstance(d, WinrmDriver)
    return d


def conn_of(body: dict[str, Any], tmp_path: Path) -> connections.HostConnection:
    public, secrets = connections.validate(body)
    box = SecretBox.from_data_dir(tmp_path / "data")
    return connections.load({**public, "credentials": box.seal(secrets)}, box)


# --- upload-then-run ------------------------------------------------------------------------------
def test_only_the_bootstrap_and_the_wrapper_fit_cmd_exe_inline() -> None:
    for name in WINRS_SCRIPTS:
        assert len(script_text(name).encode()) < 2600, f"{name}.ps1 must stay well under 3 KB"
        command, arguments = encoded_command(name)
        assert len(" ".join([command, *arguments])) == command_line_length(name) < CMD_LINE_LIMIT - 1000
    too_long = [n for n in SCRIPT_PARAMETERS if command_line_length(n) > CMD_LINE_LIMIT]
    assert "Invoke-HandlerCommand" in too_long, "run_ps alone breaks past ~3 KB: why the driver uploads first"
    with pytest.raises(ValueError, match="not sent inline"):
        encoded_command("Invoke-HandlerCommand")


def test_parameters_travel_on_stdin_never_on_a_command_line(fake: FakeHost, tmp_path: Path) -> None:
    d = winrm(tmp_path, fake)
    d.install(SPEC, "1.0.0")
    hostile = {
        "operationId": "0b6f3c1e-2d4a-4e8b-9c7d-1a2b3c4d5e6f",
        "note": "x'; Remove-Item -Recurse C:\\ ; $(calc) \"`n&| %PATH% ^",
        "steps": {},
    }
    d.write_journal(HANDLER, hostile)
    d.close()
    assert fake.machine.journal(HANDLER) == hostile, "the value arrived byte for byte"
    lines = {line for _, line in fake.server.winrs.commands}
    expected = {" ".join([c, *a]) for c, a in map(encoded_command, WINRS_SCRIPTS)}
    assert lines == expected, "exactly the two fixed command lines, whatever the parameters"
    assert fake.server.winrs.shells_opened == 1 and fake.server.open_shells() == [], "one shell, closed"
    assert d.scripts_run.count("Invoke-HandlerCommand") >= 2  # install and enable (each polled until done)


def test_bootstrap_writes_the_scripts_once(fake: FakeHost, tmp_path: Path) -> None:
    first = winrm(tmp_path, fake)
    assert first.installed("agent") is None
    first.close()
    assert first.scripts_installed == {"written": sorted(SCRIPT_PARAMETERS), "unchanged": []}
    second = winrm(tmp_path, fake)
    assert second.installed("agent") is None
    second.close()
    # the wrapper found every script it ran in place: no bootstrap (its round trips saved)
    assert second.scripts_installed is None
    assert [n for n, _ in fake.server.winrs.commands].count("Install-AgentScripts") == 1
    for name in SCRIPT_PARAMETERS:
        assert fake.machine.agent_script(name) == script_text(name).encode(), name


def test_a_tampered_or_missing_script_never_runs(
    fake: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = winrm(tmp_path, fake)
    assert d.installed("agent") is None
    path = fake.machine.agent_script_path("Get-ExtensionState")
    tampered = path.read_bytes() + b"\nRemove-Item -Recurse C:\\\n"
    path.write_bytes(tampered)
    # the wrapper refuses it (exit code 3, nothing ran); the bootstrap uploads the real one again
    assert d.installed("agent") is None
    assert d.scripts_installed == {
        "written": ["Get-ExtensionState"],
        "unchanged": sorted(set(SCRIPT_PARAMETERS) - {"Get-ExtensionState"}),
    }
    assert path.read_bytes() == script_text("Get-ExtensionState").encode()
    path.unlink()
    assert d.installed("agent") is None, "a missing script is uploaded again too"
    # a bootstrap that cannot put the real script in place: the tampered copy still never runs
    path.write_bytes(tampered)
    monkeypatch.setattr(WinrmDriver, "_bootstrap", lambda self: None)
    with pytest.raises(RemoteScriptError, match="Get-ExtensionState has SHA-256"):
        d.installed("agent")
    path.unlink()
    with pytest.raises(RemoteScriptError, match="Get-ExtensionState is not installed"):
        d.installed("agent")
    d.close()
    assert fake.machine.scripts_run().count("Get-ExtensionState") == 3, "only the verified runs reached the model"


def test_parameters_bind_against_the_real_param_block(fake: FakeHost, tmp_path: Path) -> None:
    d = winrm(tmp_path, fake)
    with pytest.raises(RemoteScriptError, match="missing mandatory parameters: SequenceNumber"):
        d._script("Get-HandlerStatus", {"Handler": HANDLER, "Version": "1"})
    d._ensure_session()
    with pytest.raises(RemoteScriptError, match="'Extra'"):  # the driver refuses these itself; the host too
        d._invoke("Get-ExtensionState", {"Handler": HANDLER, "Extra": 1}, 10, None)
    with pytest.raises(RemoteScriptError, match="not in the package cache"):
        d._script("Expand-Package", {"Handler": HANDLER, "Version": "9.9", "Sha256": "0" * 64, "FilesJson": "{}"})
    assert d._script("Get-ExtensionState", {"Handler": HANDLER})["versions"] == [], "the shell still works"
    d.close()


def test_a_large_package_is_uploaded_in_envelope_sized_sends(fake: FakeHost, tmp_path: Path) -> None:
    d = winrm(tmp_path, fake)
    data = make_package(HANDLER, "1.0.0", extra_files={"payload.bin": os.urandom(400_000)})
    ref = d.packages.put("Contoso.Fake", "Agent", "1.0.0", data, datetime.now(UTC))
    before = fake.server.actions.count("Send")
    d.install(SPEC, "1.0.0")
    d.close()
    assert fake.server.actions.count("Send") - before >= 4 + 10, "the package took several Sends"
    cached = fake.machine.cache_zip(HANDLER, "1.0.0").read_bytes()
    assert hashlib.sha256(cached).hexdigest() == ref["sha256"]
    assert fake.machine.versions(HANDLER) == {"1.0.0": "Enabled"}


def test_receive_long_polls_through_a_slow_handler(fake: FakeHost, tmp_path: Path) -> None:
    check_long_poll(winrm(tmp_path, fake, handlerTimeoutSeconds={"install": 30}), fake, "WinRS:Fault:w:TimedOut")


# --- the error boundary ---------------------------------------------------------------------------
def test_injected_faults_map_to_the_taxonomy(fake: FakeHost, tmp_path: Path) -> None:
    d = winrm(tmp_path, fake)

    def forget_shells() -> None:  # the service forgets the open shell (restart, idle timeout): 0x8033805B
        assert d.installed("agent") is None  # (the failed bootstrap above discarded the last one)
        with fake.server.winrs.lock:
            fake.server.winrs.shells.clear()

    check_fault_mapping(d, fake, forget_shells)
    fake.inject("Receive", "reset")
    with pytest.raises(SessionLost, match="connection dropped"):
        d.installed("agent")
    d.close()


def test_a_late_failure_of_an_abandoned_call_keeps_the_new_shell(fake: FakeHost, tmp_path: Path) -> None:
    check_late_failure_keeps_the_new_session(winrm(tmp_path, fake), fake)


def test_a_call_the_deadline_abandoned_stops_polling_and_deletes_its_shell(fake: FakeHost, tmp_path: Path) -> None:
    d = winrm(tmp_path, fake)
    d.install(SPEC, "1.0.0")
    fake.machine.slow_scripts["Get-ExtensionState"] = 4
    with pytest.raises(HostTimeout, match="deadline"):
        d._invoke("Get-ExtensionState", {"Handler": HANDLER}, 1.0, None)  # it takes 4 s: abandoned after 1 s
    fake.machine.slow_scripts.clear()
    waited = time.monotonic()
    while fake.server.open_shells() and time.monotonic() - waited < 3:
        time.sleep(0.1)
    assert fake.server.open_shells() == [], "the abandoned call noticed at its next long-poll and deleted the shell"
    receives = fake.server.actions.count("Receive")
    time.sleep(2.5)
    assert fake.server.actions.count("Receive") == receives, "nothing polls the host any more"
    assert d.installed("agent") is not None, "the driver opens a new shell"
    d.close()


def test_wrong_password_refused_port_and_unsupported_auth(fake: FakeHost, tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HostAuthError):
        winrm(tmp_path, fake, password="wrong-Secret-1").installed("agent")
    assert "wrong-Secret-1" not in caplog.text and fake.password not in caplog.text
    with pytest.raises(HostUnreachable):
        winrm(tmp_path, fake, port=1).installed("agent")


def test_kerberos_without_pykerberos_is_refused_before_sending(fake: FakeHost, tmp_path: Path) -> None:
    from winrm import transport

    if transport.HAVE_KERBEROS:
        pytest.skip("pykerberos is installed here; Kerberos is not exercised (no KDC)")
    before = len(fake.server.actions)
    with pytest.raises(HostAuthError, match="kerberos"):
        winrm(tmp_path, fake, auth="kerberos").installed("agent")
    assert len(fake.server.actions) == before, "nothing reached the host"


def test_wrong_password_over_ntlm(tmp_path: Path) -> None:
    with FakeHost(tmp_path / "ntlm", auth="ntlm", tls=False, username="ntlmuser", driver="winrm") as host:
        d = winrm(tmp_path, host)
        assert d.installed("agent") is None, "NTLM with message encryption over http works"
        d.close()
        with pytest.raises(HostAuthError):
            winrm(tmp_path, host, password="wrong").installed("agent")


def test_envelope_stderr_and_exit_code_checks(fake: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = winrm(tmp_path, fake)
    d._ensure_session()
    answers = {
        "not-json": ((b"Windows PowerShell\r\n", b"", 0), ProtocolError, "not a JSON envelope"),
        "errors": ((b'{"outputs":[["{}"]],"errors":["boom"]}', b"", 1), RemoteScriptError, "boom"),
        "exit-code": ((b'{"outputs":[["{}"]],"errors":[]}', b"", 2), RemoteScriptError, "exit code 2"),
        "stderr": ((b'{"outputs":[["{}"]],"errors":[]}', b"oops\r\n", 0), RemoteScriptError, "oops"),
        "no-output": ((b'{"outputs":[[]],"errors":[]}', b"", 0), ProtocolError, "no JSON document"),
        "not-run": ((b'{"outputs":[],"errors":[]}', b"", 0), ProtocolError, "ran 0 of 1"),
        "flat": ((b'{"outputs":["{}"],"errors":[]}', b"", 0), ProtocolError, "not a JSON envelope"),
    }
    for answer, error, message in answers.values():
        monkeypatch.setattr(WinrmDriver, "_run", lambda self, name, stdin, a=answer: a)
        with pytest.raises(error, match=message):
            d._script("Get-ExtensionState", {"Handler": HANDLER})
    progress = (
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        b'<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T></TN>'
        b'<MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV></PR></MS></Obj></Objs>'
    )
    monkeypatch.setattr(
        WinrmDriver, "_run", lambda self, name, stdin: (b'{"outputs":[["{\\"a\\":1}"]],"errors":[]}', progress, 0)
    )
    assert d._script("Get-ExtensionState", {"Handler": HANDLER}) == {"a": 1}, "progress records are not errors"
    monkeypatch.undo()
    d.close()


def test_stderr_errors_reads_clixml() -> None:
    error = (
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        b'<S S="Error">Cannot find path_x000D__x000A_</S><S S="Error">at line 1_x000D__x000A_</S></Objs>'
    )
    assert stderr_errors(error) == "Cannot find path\nat line 1"
    assert stderr_errors(b"  \r\n") == ""
    assert stderr_errors(b"'x' is not recognized\r\n") == "'x' is not recognized"


# --- settings and the resolver --------------------------------------------------------------------
def base_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"driver": "winrm", "address": "win1", "username": "u", "password": "p"}
    body.update(overrides)
    return body


def test_connection_settings_pywinrm_cannot_honour_are_refused() -> None:
    with pytest.raises(errors.ArmError, match="configurationName"):
        connections.validate(base_body(configurationName="JEA.Maintenance"))
    with pytest.raises(errors.ArmError, match="only over https"):
        connections.validate(base_body(transport="http", auth="basic"))
    with pytest.raises(errors.ArmError, match="encrypted certificate key"):
        connections.validate(
            base_body(auth="certificate", certificatePem="c", certificateKeyPem="k", certificateKeyPassword="pw")
        )
    public, _ = connections.validate(base_body(auth="negotiate"))
    assert public["auth"] == "ntlm", "pywinrm has no SPNEGO: negotiate is NTLM, and the API says so"
    public, _ = connections.validate(base_body(configurationName="JEA.Maintenance", driver="psrp"))
    assert public["configurationName"] == "JEA.Maintenance", "JEA stays a psrp feature"


def test_transport_mapping_and_certificate_files(tmp_path: Path) -> None:
    cases = {"basic": "ssl", "ntlm": "ntlm", "negotiate": "ntlm", "kerberos": "kerberos"}
    for auth, transport in cases.items():
        conn = conn_of(base_body(auth=auth, port=5986, caCertificatePath="/etc/ca.pem"), tmp_path)
        protocol = WinrmDriver("h", conn, PackageStore(tmp_path / "p"))._new_protocol()
        assert protocol.transport.auth_method == transport, auth
        assert protocol.transport.endpoint == "https://win1:5986/wsman"
        assert protocol.transport.ca_trust_path == "/etc/ca.pem" and protocol.transport.message_encryption == "auto"
        assert protocol.operation_timeout_sec == 20 and protocol.transport.read_timeout_sec == (10, 30)
    conn = conn_of(
        base_body(auth="certificate", certificatePem="CERT", certificateKeyPem="KEY", certValidation=False), tmp_path
    )
    d = WinrmDriver("h", conn, PackageStore(tmp_path / "p"))
    protocol = d._new_protocol()
    assert protocol.transport.auth_method == "certificate" and protocol.transport.server_cert_validation == "ignore"
    files = [protocol.transport.cert_pem, protocol.transport.cert_key_pem]
    assert [Path(f).read_text() for f in files] == ["CERT", "KEY"]
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in files)
    d.close()
    assert not any(Path(f).exists() for f in files), "the key file is removed when the driver closes"


def test_the_resolver_picks_the_winrm_driver(tmp_path: Path) -> None:
    from arcext.hosts.psrp import PsrpDriver
    from arcext.hosts.registry import HostResolver
    from arcext.hosts.simulated import SimulatedFleet
    from arcext.ids import MachineKey

    box = SecretBox.from_data_dir(tmp_path)
    resolver = HostResolver(SimulatedFleet(tmp_path / "simhosts"), False, box, PackageStore(tmp_path / "packages"))
    for name, cls in (("winrm", WinrmDriver), ("psrp", PsrpDriver)):
        public, secrets = connections.validate(base_body(driver=name))
        doc: Any = {"machine": {"hostConnection": {**public, "credentials": box.seal(secrets)}}, "extensions": {}}
        chosen = resolver(MachineKey("00000000-0000-0000-0000-000000000000", "rg1", "m1"), doc)
        assert type(chosen) is cls
