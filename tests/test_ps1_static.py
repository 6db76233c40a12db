"""Static checks of the agent scripts for what the fake host cannot model (issue 17): tree-sitter-
powershell over every script, each rule also run on a bad snippet so that it can be seen to fail,
and on the scripts as they were before issue 17 (tests/windows/before-issue-17/), which they catch."""

from __future__ import annotations

from pathlib import Path

import pytest

from arcext.hosts import agent_scripts
from arcext.hosts.agent_scripts import script_names, source_text
from arcext.hosts.psrp import HOST_SCRIPTS, SCRIPT_PARAMETERS, script_text
from arcext.testing.fakehost.pscheck import RULES, check
from arcext.testing.fakehost.scripts import known_scripts, script_hash

SCRIPTS = script_names()
BEFORE = Path(__file__).parent / "windows" / "before-issue-17"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_passes_every_rule(name: str) -> None:
    assert [str(f) for f in check(script_text(name))] == []


#: per rule: (a snippet that must be flagged, a corrected one that must not be)
BAD_AND_GOOD: dict[str, tuple[str, str]] = {
    "framework-api": (
        "$p = [System.Diagnostics.Process]::Start($i)\n$p.Kill($true)\n$x = $a ?? 'b'\n"
        "$h = [System.Convert]::ToHexString($b)\n$j = $t | ConvertFrom-Json -AsHashtable\n",
        "$p = [System.Diagnostics.Process]::Start($i)\n$p.Kill()\n$h = [System.BitConverter]::ToString($b)\n",
    ),
    "encoding": (
        "Set-Content -LiteralPath $p -Value $v\n$t = Get-Content -LiteralPath $p -Raw\n",
        "Set-Content -LiteralPath $p -Value $v -Encoding ASCII\n$t = Get-Content -LiteralPath $p -Raw -Encoding UTF8\n",
    ),
    "bom": (
        "$j | Set-Content -LiteralPath $p -Encoding UTF8\n",
        "[System.IO.File]::WriteAllText($p, $j, (New-Object System.Text.UTF8Encoding($false)))\n",
    ),
    "cmd-autorun": (
        "$i = New-Object System.Diagnostics.ProcessStartInfo('cmd.exe', \"/c $line\")\ncmd.exe /c $line\n",
        "$i.Arguments = '/d /s /c \"' + $line + '\"'\ncmd.exe /d /s /c $line\n",
    ),
    "recursive-removal": (
        "$dir = Join-Path 'C:\\Packages\\Plugins' $Handler\nRemove-Item -LiteralPath $dir -Recurse -Force\n"
        "Expand-Archive -LiteralPath $zip -DestinationPath $dir\n",
        "$dir = Resolve-ConfinedPath $root @($Handler, $Version)\nRemove-Item -LiteralPath $dir -Recurse -Force\n",
    ),
    "task-result": (
        "$task = $p.StandardOutput.ReadToEndAsync()\n$out = $task.Result\n",
        "$task = $p.StandardOutput.ReadToEndAsync()\nif ($task.Wait(5000)) { $out = $task.Result }\n",
    ),
    "json-first": (
        "$m = @(Get-Content -LiteralPath $p -Raw -Encoding UTF8 | ConvertFrom-Json)[0]\n",
        "$m = Read-JsonFile $p -First\n",
    ),
    "hardcoded-path": ("$d = 'C:\\ProgramData\\arcext'\n", "$d = Join-Path $env:ProgramData 'arcext'\n"),
    "atomic-replace": (
        "Move-Item -LiteralPath $tmp -Destination $path -Force\n",
        "[System.IO.File]::Replace($tmp, $path, [NullString]::Value)\n",
    ),
    "progress": ("$ErrorActionPreference = 'Stop'\n", "$ProgressPreference = 'SilentlyContinue'\n"),
    "folder-acl": (
        "New-Item -ItemType Directory -Path $d -Force | Out-Null\n",
        "$null = New-Item -ItemType Directory -Path $d\n$acl.SetAccessRuleProtection($true, $false)\n"
        "Set-Acl -LiteralPath $d -AclObject $acl\n",
    ),
    "native-stderr": (
        "$null = & (Join-Path $env:SystemRoot 'System32\\taskkill.exe') /T /F /PID $id 2>&1\n",
        "Stop-ProcessTree $id\n",
    ),
    "stream-dispose": (
        "$stream = [System.IO.File]::Create($partial)\n$stream.Write($b, 0, 1)\n$stream.Dispose()\n",
        "$stream = [System.IO.File]::Create($partial)\ntry {\n    $stream.Write($b, 0, 1)\n} finally {\n"
        "    $stream.Dispose()\n}\n",
    ),
}


def test_every_rule_has_a_bad_snippet() -> None:
    assert set(BAD_AND_GOOD) == set(RULES)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_flags_its_bad_snippet_and_not_the_fix(rule: str) -> None:
    bad, good = BAD_AND_GOOD[rule]
    found = check(bad, [rule])
    assert found and all(f.rule == rule for f in found), f"{rule} did not flag: {bad!r}"
    assert check(good, [rule]) == [], f"{rule} flagged the corrected snippet {good!r}: {check(good, [rule])}"


#: what each rule finds in the scripts as they were before issue 17 (the review's items)
OLD_FINDINGS = {
    ("Invoke-HandlerCommand", "framework-api"),  # item 2: Kill($true)
    ("Invoke-HandlerCommand", "task-result"),  # item 3: .Result without a timeout
    ("Expand-Package", "recursive-removal"),  # item 5: Expand-Archive
    ("Remove-HandlerVersion", "recursive-removal"),  # item 6: Remove-Item -Recurse follows junctions
    ("Receive-Package", "folder-acl"),  # item 6: inherited ACLs
    ("Expand-Package", "bom"),  # item 7: -Encoding UTF8 writes a BOM on 5.1 only
    ("Get-HandlerStatus", "encoding"),  # item 7: Get-Content without -Encoding
    ("Write-Journal", "atomic-replace"),  # item 10: delete-then-rename
    ("Get-HandlerStatus", "json-first"),  # item 11
    ("Invoke-HandlerCommand", "cmd-autorun"),  # item 12: cmd.exe /c without /d /s
    ("Receive-Package", "stream-dispose"),  # item 14
    ("Get-ExtensionState", "hardcoded-path"),  # item 15
    ("Expand-Package", "progress"),  # item 15: Expand-Archive's progress not silenced
}


def test_the_rules_catch_the_reviews_findings_in_the_old_scripts() -> None:
    found = {(p.stem, f.rule) for p in sorted(BEFORE.glob("*.ps1")) for f in check(p.read_text())}
    assert OLD_FINDINGS <= found, OLD_FINDINGS - found


def common_block(text: str) -> str:
    start = text.index("# --- arcext common block")
    end = text.index("# --- end of the arcext common block ---")
    return "\n".join(line.strip() for line in text[start:end].splitlines() if line.strip())


def test_every_composed_script_contains_the_one_common_block() -> None:
    """The helpers have one source (AgentCommon.ps1); each script that needs them holds one include
    line, and what reaches the host (the composed text) carries the block once, in the script's own
    scope. The wrappers (bootstrap, Invoke-AgentScript, the batch) take no helpers."""
    reference = common_block(agent_scripts.common_block())
    assert "function Resolve-ConfinedPath" in reference and "function New-ProtectedDirectory" in reference
    users = {*SCRIPT_PARAMETERS, *HOST_SCRIPTS}
    for name in SCRIPTS:
        source, text = source_text(name), script_text(name)
        includes = [line for line in source.splitlines() if line.strip() == agent_scripts.INCLUDE]
        if name not in users:
            assert includes == [] and agent_scripts.BLOCK_START not in text, name
            continue
        assert len(includes) == 1, f"{name}.ps1 includes the common block {len(includes)} times"
        assert "function Resolve-ConfinedPath" not in source, f"{name}.ps1 keeps its own copy of the helpers"
        assert text.count(agent_scripts.BLOCK_START) == text.count(agent_scripts.BLOCK_END) == 1, name
        assert common_block(text) == reference, name
        assert agent_scripts.INCLUDE not in text, name


def test_the_fake_host_knows_only_the_composed_scripts() -> None:
    """A script file as it stands in the repository (include line, no helpers) and the common block
    alone are not the project's scripts: the fake host refuses them as it refuses any other text."""
    known = known_scripts()
    assert {info.name for info in known.values()} == set(SCRIPTS)
    assert all(known[script_hash(script_text(name))].name == name for name in SCRIPTS)
    for name in {*SCRIPT_PARAMETERS, *HOST_SCRIPTS}:
        assert script_hash(source_text(name)) not in known, name
    assert script_hash(source_text(agent_scripts.COMMON)) not in known


@pytest.mark.parametrize("name", [*SCRIPT_PARAMETERS, *HOST_SCRIPTS])
def test_every_path_a_script_builds_goes_through_resolve_confinedpath(name: str) -> None:
    """No Join-Path onto a root with a caller-supplied name outside the helpers (defence in depth for
    issue 10: a handler or version from the caller never reaches a path unchecked)."""
    text = script_text(name)
    body = text[text.index("# --- end of the arcext common block ---") :]
    for parameter in ("$Handler", "$Version", "$FromVersion", "$ToVersion", "$Step"):
        for line in body.splitlines():
            if "Join-Path" in line and parameter in line and not line.strip().startswith("#"):
                assert "$logDir" in line, f"{name}.ps1 joins {parameter} into a path: {line.strip()}"
