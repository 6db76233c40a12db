"""The fake Windows machine's disk as the agent scripts see it: the folders they use, the names
they accept (``ValidatePattern`` / ``Resolve-ConfinedPath``), how they read and write files
(AgentCommon.ps1's Read-TextFile / Write-TextFile / Read-JsonFile), and the terminating error a
script throws."""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PLUGINS = r"C:\Packages\Plugins"
STATE = r"C:\ProgramData\arcext"
BEHAVIOUR_FILE = "fakehost-behaviour.json"
SCRIPT_NAME = re.compile(r"[A-Za-z]+-[A-Za-z]+")

#: what the scripts' ValidatePattern / Resolve-ConfinedPath accept as one path component
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")
VERSION = re.compile(r"\d{1,9}(\.\d{1,9}){0,3}")
SETTINGS_NAME = re.compile(r"(?:[A-Za-z0-9_-]+\.)?(\d{1,9})\.settings")
OWN_FILES = ("HandlerEnvironment.json", "HandlerState", "arcext.package.sha256")
PROTECTED_ACL = "O:BA D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"  # SYSTEM and Administrators only
#: Invoke-HandlerCommand.ps1's $graceSeconds: a task silent this long past its timeout is lost
TASK_GRACE_S = 120

NEXT_STATE = {"install": "Installed", "enable": "Enabled", "disable": "Installed", "uninstall": "NotInstalled"}
ALLOWED = {
    "install": ("NotInstalled",),
    "enable": ("Installed", "Enabled"),
    "disable": ("Enabled", "Installed"),
    "update": ("NotInstalled",),
    "uninstall": ("Installed", "FailedUpgrade", "NotInstalled"),
}


class ScriptFailure(Exception):
    """A terminating error inside a script (what ``throw`` produces)."""


def to_json(value: Any) -> str:
    """ConvertTo-Json -Compress."""
    return json.dumps(value, separators=(",", ":"))


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def handler_state(state_file: Path) -> str:
    """A version's HandlerState: Removed when the file is gone, NotInstalled when it is empty."""
    if not state_file.exists():
        return "Removed"
    return read_text(state_file).strip() or "NotInstalled"


def installed_state(state_file: Path) -> str:
    """A version's HandlerState as Get-ExtensionState / Get-HandlerStatus report it (NotInstalled
    when the file is gone or empty)."""
    return (read_text(state_file).strip() or "NotInstalled") if state_file.exists() else "NotInstalled"


def read_text(path: Path) -> str:
    """[System.IO.File]::ReadAllText($path, UTF8): a BOM is recognised and dropped, on 5.1 and 7."""
    return path.read_bytes().decode("utf-8-sig", "replace")


def write_text(path: Path, text: str) -> None:
    """Write-TextFile: UTF-8 without a BOM, through a uniquely named temporary file and a replace."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(text.encode("utf-8"))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Read-JsonFile: None for an empty file (5.1's Get-Content -Raw gives $null there)."""
    text = read_text(path)
    if not text.strip():
        return None
    return json.loads(text)


def first(value: Any) -> Any:
    """Read-JsonFile -First: the first element of a JSON list (5.1 returns the list as one object)."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def entry_path(root: Path, name: str) -> Path:
    """Expand-Package's Resolve-EntryPath: where a zip entry lands, refusing one that could leave."""
    parts = name.replace("/", "\\").split("\\")
    if name.startswith(("/", "\\")) or ":" in name or any(ord(c) < 32 or c in '<>"|?*' for c in name):
        raise ScriptFailure(f"Refusing the package entry '{name}': rooted, a drive, a stream or a reserved character.")
    for part in parts:
        if part in ("", ".", "..") or part.endswith((".", " ")):
            raise ScriptFailure(f"Refusing the package entry '{name}': the component '{part}' is not a plain name.")
    if len(parts) == 1 and parts[0] in OWN_FILES:
        raise ScriptFailure(f"Refusing the package entry '{name}': arcext writes it.")
    return root.joinpath(*parts)
