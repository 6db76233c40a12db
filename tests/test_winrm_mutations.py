"""Deliberate breakages of the winrm driver must be caught: the same model assertions as
test_psrp_mutations (its scenario, run with WinrmDriver), against breakages only WinRS can have —
skipping the script upload, interpolating parameter values into the script text, sending an agent
script inline, trusting stdout without the envelope's errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from arcext.hosts.base import HostDriverError
from arcext.hosts.psrp import script_text
from arcext.hosts.winrm import WinrmDriver
from test_psrp_mutations import scenario


def skip_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WinrmDriver, "_install_scripts", lambda self: None)


def interpolate_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The classic mistake: build the script text with the values in it and send it inline."""

    def run(self: WinrmDriver, name: str, params: dict[str, Any], deadline: float, input_: Any) -> list[Any]:
        values = "; ".join(f"${k} = '{v}'" for k, v in params.items())
        text = f"{values}\n{script_text(name)}"
        encoded = base64.b64encode(text.encode("utf-16-le")).decode()
        command = self._protocol.run_command(self._shell_id, "powershell.exe", ["-EncodedCommand", encoded])
        self._protocol.send_command_input(self._shell_id, command, b"", end=True)
        out, _, _ = self._protocol.get_command_output(self._shell_id, command)
        return [out.decode()]

    monkeypatch.setattr(WinrmDriver, "_invoke", run)


def trust_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ignore the envelope's errors and the exit code: take whatever output there is."""

    def invoke(self: WinrmDriver, name: str, params: dict[str, Any], deadline: float, input_: Any) -> list[Any]:
        header = json.dumps([{"script": name, "parameters": params}])  # ... and forget the expected hash
        out, _, _ = self._run(
            "Invoke-AgentScript",
            [header.encode() + b"\n", *(f"{c}\n".encode() for c in (input_() if input_ is not None else ()))],
        )
        envelope = json.loads(out)
        return [o for output in envelope["outputs"] for o in output] or ["{}"]

    monkeypatch.setattr(WinrmDriver, "_invoke", invoke)


def test_the_honest_winrm_driver_passes_both_scenarios(tmp_path: Path) -> None:
    scenario(tmp_path / "ok", {}, WinrmDriver)
    scenario(tmp_path / "fails", {"enable": {"exitCode": 3}}, WinrmDriver)


@pytest.mark.parametrize("breakage", [skip_upload, interpolate_parameters, trust_stdout], ids=lambda b: b.__name__)
def test_each_breakage_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breakage: Callable[[pytest.MonkeyPatch], None]
) -> None:
    breakage(monkeypatch)
    with pytest.raises((AssertionError, HostDriverError)):
        scenario(tmp_path, {}, WinrmDriver)
