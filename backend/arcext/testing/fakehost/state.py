"""The state of a fake Windows machine: its disk under a real directory (paths confined as the
scripts confine them, the ACLs they set), the model's own record of what ran (``fakehost-model.json``,
so the state survives the process), what tests read back, and the dispatch of a script by name to
its Python implementation (:mod:`.package_scripts`, :mod:`.handler_commands`)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path, PureWindowsPath
from typing import Any

from .disk import (
    PLAIN_NAME,
    PLUGINS,
    PROTECTED_ACL,
    SCRIPT_NAME,
    STATE,
    TASK_GRACE_S,
    ScriptFailure,
    to_json,
    utc_now,
    write_text,
)


class MachineState:
    """A machine's disk, its record and what tests read back; the scripts are its subclasses' ``op_*``."""

    def __init__(self, root: Path, name: str = "FAKEHOST", edition: str = "Desktop") -> None:
        if edition not in ("Desktop", "Core"):
            raise ValueError("edition is Desktop (Windows PowerShell 5.1) or Core (PowerShell 7)")
        self.root = root
        self.name = name
        #: the endpoint's PowerShell: Desktop (5.1, .NET Framework) or Core (7, .NET)
        self.edition = edition
        #: handler tasks run until this is set (the machine "shuts down")
        self.stopping = threading.Event()
        self.tasks: dict[str, threading.Thread] = {}
        self.task_grace_s = TASK_GRACE_S
        #: how often Invoke-HandlerCommand's WaitSeconds loop looks at the journal (the script: every
        #: second; the model faster, as its tasks take milliseconds: only the timing differs)
        self.host_poll_s = 0.05
        #: a slow host: seconds a script takes before it answers (exercises the Receive long-poll)
        self.slow_scripts: dict[str, float] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._meta_path = self.root / "fakehost-model.json"
        if not self._meta_path.exists():
            self._write_meta({"commands": [], "scripts": []})
        #: called with (command, version) when a handler command finishes (fault hooks use it)
        self.on_command_done: Callable[[str, str], None] | None = None

    # --- paths ---------------------------------------------------------------------------------
    def path(self, windows_path: str) -> Path:
        """Where a Windows path lives in the model; one that would leave the model's disk (``..``) is
        refused, as the scripts' Resolve-ConfinedPath refuses it."""
        p = PureWindowsPath(windows_path)
        drive = p.drive.rstrip(":") or "C"
        if any(part in ("..", ".") for part in p.parts[1:]) or ":" in "".join(p.parts[1:]):
            raise ScriptFailure(f"Refusing {windows_path}: it is not a plain path under its root.")
        return self.root.joinpath(drive, *p.parts[1:])

    def confined(self, root: str, *parts: str) -> Path:
        """Resolve-ConfinedPath: root\\part\\..., each part one plain name, no link on the way."""
        path = self.path(root)
        for part in parts:
            if not PLAIN_NAME.fullmatch(part) or len(part) > 128:
                raise ScriptFailure(f"Refusing the path component '{part}' under {root}: not a plain name.")
            path = path / part
            if path.is_symlink():
                raise ScriptFailure(f"Refusing {path.name}: it is a junction or symbolic link.")
        if len(root) + sum(len(p) + 1 for p in parts) >= 248:
            raise ScriptFailure("Refusing the path: longer than the 248 characters 5.1 allows a folder.")
        return path

    def protect(self, path: Path, inherit: bool = False) -> None:
        """New-ProtectedDirectory: create the folder; unless ``inherit``, record the ACL the scripts
        set (only SYSTEM and Administrators may write)."""
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise ScriptFailure(f"Refusing {path.name}: it is a link or not a folder.")
        path.mkdir(parents=True, exist_ok=True)
        if not inherit:
            rel = "\\".join(path.relative_to(self.root).parts)
            with self.lock:
                meta = self._read_meta()
                acls = meta.setdefault("acl", {})
                if acls.get(rel) != PROTECTED_ACL:
                    acls[rel] = PROTECTED_ACL
                    self._write_meta(meta)

    def acl(self, windows_path: str) -> str | None:
        """The ACL (SDDL) a script set on a folder, or None when it only inherits one."""
        p = PureWindowsPath(windows_path)
        rel = "\\".join([p.drive.rstrip(":") or "C", *p.parts[1:]])
        value = self._read_meta().get("acl", {}).get(rel)
        return str(value) if value is not None else None

    def shutdown(self) -> None:
        self.stopping.set()
        for thread in list(self.tasks.values()):
            thread.join(timeout=5)

    def plugin_dir(self, handler: str, version: str) -> Path:
        return self.path(rf"{PLUGINS}\{handler}\{version}")

    def cache_zip(self, handler: str, version: str) -> Path:
        return self.path(rf"{STATE}\packages\{handler}\{version}.zip")

    def journal_path(self, handler: str) -> Path:
        return self.path(rf"{STATE}\journal\{handler}.json")

    def agent_script_path(self, name: str) -> Path:
        """Where the WinRS bootstrap keeps an uploaded agent script (%ProgramData%\\arcext\\scripts)."""
        return self.path(rf"{STATE}\scripts\{name}.ps1")

    def agent_script(self, name: str) -> bytes | None:
        """The bytes of an uploaded agent script, or None when it is not on disk."""
        if not SCRIPT_NAME.fullmatch(name):
            return None
        path = self.agent_script_path(name)
        return path.read_bytes() if path.is_file() else None

    # --- the model's own record (commands run, scripts seen) --------------------------------------
    def _read_meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._meta_path.read_text())
        return data

    def _write_meta(self, meta: dict[str, Any]) -> None:
        tmp = self._meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self._meta_path)

    def _log(self, key: str, entry: dict[str, Any]) -> None:
        with self.lock:
            meta = self._read_meta()
            meta.setdefault(key, []).append(entry)
            self._write_meta(meta)

    # --- inspection (tests read the model, not the driver's answers) -----------------------------
    def commands(self, handler: str | None = None) -> list[tuple[str, str]]:
        """(version, command) of every handler command started, in order."""
        with self.lock:
            return [
                (c["version"], c["command"])
                for c in self._read_meta()["commands"]
                if handler is None or c["handler"].lower() == handler.lower()
            ]

    def command_log(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self._read_meta()["commands"])

    def scripts_run(self) -> list[str]:
        with self.lock:
            return [s["script"] for s in self._read_meta().get("scripts", [])]

    def versions(self, handler: str) -> dict[str, str]:
        """version -> handler state, for every version directory on disk."""
        base = self.path(rf"{PLUGINS}\{handler}")
        out: dict[str, str] = {}
        if base.is_dir():
            for d in sorted(base.iterdir()):
                state = d / "HandlerState"
                out[d.name] = state.read_text().strip() if state.exists() else "NotInstalled"
        return out

    def settings_files(self, handler: str, version: str) -> dict[str, bytes]:
        d = self.plugin_dir(handler, version) / "RuntimeSettings"
        return {f.name: f.read_bytes() for f in sorted(d.glob("*.settings"))} if d.is_dir() else {}

    def cached(self, handler: str) -> list[str]:
        d = self.path(rf"{STATE}\packages\{handler}")
        return sorted(p.stem for p in d.glob("*.zip")) if d.is_dir() else []

    def journal(self, handler: str) -> dict[str, Any] | None:
        p = self.journal_path(handler)
        return json.loads(p.read_text()) if p.exists() else None

    # --- script dispatch -------------------------------------------------------------------------
    def run_script(self, script: str, params: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        self._log("scripts", {"script": script, "at": utc_now()})
        delay = self.slow_scripts.get(script, 0.0)
        if delay and cancel.wait(delay):
            raise ScriptFailure("The pipeline was stopped.")
        op = getattr(self, "op_" + script.replace("-", "_"))
        result: str = op(params, inputs, cancel)
        return result

    def failures(self) -> list[str]:
        """Errors the model's scripts hit where PowerShell would have thrown (and nobody saw)."""
        with self.lock:
            return [str(f["error"]) for f in self._read_meta().get("failures", [])]

    def _save_journal(self, path: Path, journal: dict[str, Any]) -> None:
        write_text(path, to_json(journal))
