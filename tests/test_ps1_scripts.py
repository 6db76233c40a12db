"""Static checks of the agent scripts (the only PowerShell the backend sends): tree-sitter parses
each without errors, the first statement is $ErrorActionPreference='Stop', each ends with one JSON
document, and the parameters the driver sends are exactly ones the script's param() block declares
(every Mandatory one included)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from arcext.hosts.agent_scripts import script_names
from arcext.hosts.psrp import HOST_SCRIPTS, PSRP_SCRIPTS, script_text
from arcext.hosts.psrp import SCRIPT_PARAMETERS as AGENT_SCRIPT_PARAMETERS
from arcext.hosts.winrm import WINRS_SCRIPTS
from arcext.testing.fakehost.scripts import extract_parameters, parse_errors

SCRIPTS = script_names()
#: the agent scripts, plus the winrm driver's bootstrap and wrapper (all their input is stdin), plus
#: the handler task's runner (run by a scheduled task with -RequestPath)
SCRIPT_PARAMETERS = {**AGENT_SCRIPT_PARAMETERS, **WINRS_SCRIPTS, **HOST_SCRIPTS, **PSRP_SCRIPTS}


def test_the_driver_knows_every_script_and_only_those() -> None:
    assert SCRIPTS and set(SCRIPTS) == set(SCRIPT_PARAMETERS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_parses_without_errors(name: str) -> None:
    assert parse_errors(script_text(name)) == []


@pytest.mark.parametrize("name", SCRIPTS)
def test_param_block_matches_what_the_driver_sends(name: str) -> None:
    declared = {p.name: p for p in extract_parameters(script_text(name))}
    sent = SCRIPT_PARAMETERS[name]
    assert sent <= set(declared), f"the driver sends parameters {sent - set(declared)} that {name}.ps1 lacks"
    mandatory = {n for n, p in declared.items() if p.mandatory and not p.from_pipeline}
    assert mandatory <= sent, f"{name}.ps1 requires {mandatory - sent}, which the driver never sends"
    assert set(declared) - sent <= {n for n, p in declared.items() if p.from_pipeline}, "undeclared extras"


@pytest.mark.parametrize("name", SCRIPTS)
def test_stop_on_error_first_and_one_json_document_last(name: str) -> None:
    text = script_text(name)
    body = text[text.index("param(") :]
    body = body[body.index("\n)\n") + 3 :]
    first = next(line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#"))
    if first == "begin {":
        first = next(line.strip() for line in body.splitlines()[1:] if line.strip())
    assert re.fullmatch(r"\$ErrorActionPreference\s*=\s*'Stop'", first), first
    assert (
        "ConvertTo-Json -Compress" in text.strip().splitlines()[-1]
        or "ConvertTo-Json -Compress" in (text.strip().splitlines()[-2])
    ), "the last statement emits one compressed JSON document"
    assert "Invoke-Expression" not in text and "iex " not in text.lower()


def test_scripts_ship_as_package_data() -> None:
    root = Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert "hosts/scripts/*.ps1" in root.read_text()
