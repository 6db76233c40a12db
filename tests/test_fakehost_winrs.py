"""The fake Windows host's WinRS cmd shell at the protocol level, through unmodified pywinrm: what it
runs (only the project's two inline scripts), what cmd.exe / powershell.exe would say to anything
else, and its envelopes compared with the WinRS transcripts recorded from real Windows hosts."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from winrm.exceptions import WSManFaultError
from winrm.protocol import Protocol

from arcext.hosts.psrp import script_text
from arcext.hosts.winrm import encoded_command
from arcext.testing.fakehost import FakeHost
from test_fakehost_protocol import HANDLER, RESPONSES, _recorded, compare_envelopes


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "host", auth="basic", tls=True, driver="winrm") as host:
        yield host


@pytest.fixture
def protocol(fake: FakeHost) -> Protocol:
    return Protocol(
        f"https://127.0.0.1:{fake.port}/wsman",
        transport="ssl",
        username=fake.username,
        password=fake.password,
        ca_trust_path=str(fake.cert_path),
        operation_timeout_sec=1,
        read_timeout_sec=5,
        proxy=None,
    )


def run(protocol: Protocol, shell: str, command: str, args: list[str], stdin: bytes = b"") -> tuple[str, str, int]:
    command_id = protocol.run_command(shell, command, args)
    protocol.send_command_input(shell, command_id, stdin, end=True)
    out, err, code = protocol.get_command_output(shell, command_id)
    protocol.cleanup_command(shell, command_id)
    return out.decode(), err.decode(), code


def powershell(text: str) -> tuple[str, list[str]]:
    return "powershell.exe", ["-NoProfile", "-EncodedCommand", base64.b64encode(text.encode("utf-16-le")).decode()]


def test_only_the_projects_inline_scripts_run(fake: FakeHost, protocol: Protocol) -> None:
    shell = protocol.open_shell(codepage=65001, noprofile=True)
    out, err, code = run(protocol, shell, "cmd.exe", ["/c", "echo", "hi"])
    assert (out, code) == ("", 1) and "'cmd.exe' is not recognized as an internal or external command" in err
    out, err, code = run(protocol, shell, *powershell("Get-ChildItem C:\\"))
    assert code == 1 and "only arcext's own scripts" in err
    out, err, code = run(protocol, shell, *powershell(script_text("Get-ExtensionState")))
    assert code == 1 and err.strip() == "The command line is too long.", "an agent script never runs inline"
    too_long = powershell(script_text("Invoke-HandlerCommand"))
    out, err, code = run(protocol, shell, *too_long)
    assert code == 1 and err.strip() == "The command line is too long."
    out, err, code = run(
        protocol, shell, *encoded_command("Invoke-AgentScript"), b'[{"script": "Get-ExtensionState"}]\n'
    )
    # exit code 3: a script is missing (the driver then runs the bootstrap); nothing ran
    assert code == 3 and '"errors":["The agent script Get-ExtensionState is not installed."]' in out
    assert fake.machine.scripts_run() == [], "nothing reached the model"
    protocol.close_shell(shell)
    assert fake.server.open_shells() == []


def test_faults_for_unknown_shells_and_commands(fake: FakeHost, protocol: Protocol) -> None:
    shell = protocol.open_shell()
    with pytest.raises(WSManFaultError) as fault:
        protocol.get_command_output_raw(shell, "87E77BEB-6761-4C48-9D70-A00266B8459A")
    assert fault.value.wsman_fault_code == 0x8033805B
    with pytest.raises(WSManFaultError) as fault:
        protocol.run_command("00000000-0000-0000-0000-000000000000", "cmd.exe")
    assert fault.value.wsman_fault_code == 0x8033805B
    protocol.close_shell(shell)


# --- fidelity: the fake's WinRS envelopes have the structure real Windows sends --------------------
def test_winrs_envelopes_match_real_windows_transcripts(fake: FakeHost, protocol: Protocol) -> None:
    shell = protocol.open_shell(codepage=65001, noprofile=True)
    command_id = protocol.run_command(shell, *encoded_command("Invoke-AgentScript"))
    header = b'[{"script": "Get-ExtensionState", "sha256": "0", "parameters": {"Handler": "%s"}}]\n' % HANDLER.encode()
    protocol.send_command_input(shell, command_id, header)
    with pytest.raises(Exception):  # noqa: B017 - stdin still open: the 1 s long-poll ends in TimedOut
        protocol.get_command_output_raw(shell, command_id)
    protocol.send_command_input(shell, command_id, b"", end=True)
    out, _, code = protocol.get_command_output(shell, command_id)
    assert code == 3 and b"not installed" in out
    protocol.cleanup_command(shell, command_id)
    with pytest.raises(WSManFaultError):
        protocol.get_command_output_raw(shell, command_id)  # InvalidSelectors: the command is gone
    protocol.close_shell(shell)
    mine = {k.removeprefix("WinRS:"): v for k, v in fake.server.last_envelopes.items() if k.startswith("WinRS:")}
    compared = compare_envelopes(
        mine,
        _recorded("test_winrs_*.yml"),
        RESPONSES,
        # one recorded host sends p:ActivityId in every response, the other in none; the fake never does
        optional=frozenset({"/Envelope/Header/ActivityId"}),
    )
    assert len(compared) == 8, compared
