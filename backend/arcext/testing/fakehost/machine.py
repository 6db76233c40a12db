"""A Python model of a Windows machine as the VM-extension handler protocol sees it.

Files live under a real directory (``<root>/C/Packages/Plugins/...``, ``<root>/C/ProgramData/arcext/...``)
so the state survives the process; every agent script the backend sends has a Python implementation
here with the same contract as the .ps1 file (same parameters, same JSON answer, same side effects on
disk). Handler commands do not run programs: their behaviour (exit code, a hang, the status file and
heartbeat they leave) comes from ``fakehost-behaviour.json`` inside the package the backend pushed.

Where PowerShell's behaviour is known and matters, the model is as strict as Windows: every path an
agent script builds is confined to its root (a name that would leave it fails as the script's
``Resolve-ConfinedPath`` does); handler commands run in a "scheduled task" (a thread that outlives
the remoting session, as LocalSystem), whose runner is Windows PowerShell 5.1 whatever the endpoint's
edition, so a ``Kill(bool)`` in it throws on the timeout path as it would on .NET Framework; a
handler on a 5.1 host writes its status file with a UTF-8 BOM; a status file may be empty for a
while; folders the scripts create are recorded with the ACL the scripts give them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PureWindowsPath
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


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class WindowsMachine:
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
        self._log("scripts", {"script": script, "at": _now()})
        delay = self.slow_scripts.get(script, 0.0)
        if delay and cancel.wait(delay):
            raise ScriptFailure("The pipeline was stopped.")
        op = getattr(self, "op_" + script.replace("-", "_"))
        result: str = op(params, inputs, cancel)
        return result

    # Install-AgentScripts.ps1 (the WinRS bootstrap; ``inputs`` are its stdin lines)
    def op_Install_AgentScripts(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        try:
            files = json.loads("".join(str(line) for line in inputs))
        except ValueError as exc:
            raise ScriptFailure(f"Invalid JSON primitive: {exc}") from None
        written: list[str] = []
        unchanged: list[str] = []
        with self.lock:
            for entry in files if isinstance(files, list) else [files]:
                name = str(entry.get("name", ""))
                if not SCRIPT_NAME.fullmatch(name):
                    raise ScriptFailure(f"Invalid agent script name '{name}'.")
                data = base64.b64decode(str(entry.get("contentBase64", "")))
                actual = hashlib.sha256(data).hexdigest()
                if actual != str(entry.get("sha256", "")).lower():
                    raise ScriptFailure(
                        f"Agent script {name} arrived with SHA-256 {actual}, not {entry.get('sha256')}."
                    )
                path = self.agent_script_path(name)
                if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == actual:
                    unchanged.append(name)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
                written.append(name)
        return _json({"written": written, "unchanged": unchanged})

    # Invoke-AgentBatch.ps1 (psrp): several agent scripts, sent as text with it, in order
    def op_Invoke_AgentBatch(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        """Each call's script must be one of the project's own (by content, as a pipeline's is), bound
        against its real param() block from the JSON parameters, run in its own scope; the first
        error ends the batch. One document: every script's output, and the errors."""
        from .scripts import BindingError, bind, known_scripts, script_hash

        outputs: list[list[str]] = []
        errors: list[str] = []
        scripts = {str(k): str(v) for k, v in dict(p["Scripts"]).items()}
        try:
            try:
                calls = json.loads(str(p["CallsJson"]))
            except ValueError as exc:
                raise ScriptFailure(f"Invalid JSON primitive: {exc}") from None
            for call in calls if isinstance(calls, list) else [calls]:
                name = str(call.get("script", ""))
                if not SCRIPT_NAME.fullmatch(name) or name not in scripts:
                    raise ScriptFailure(f"The batch has no agent script '{name}'.")
                if name in ("Invoke-AgentBatch", "Invoke-HandlerRunner"):
                    raise ScriptFailure(f"{name} cannot run in a batch.")
                info = known_scripts().get(script_hash(scripts[name]))
                if info is None or info.name != name:
                    raise ScriptFailure(f"{name} is not one of arcext's own agent scripts (the fake runs only those).")
                parameters = call.get("parameters") or {}
                if not isinstance(parameters, dict):
                    raise ScriptFailure("The parameters are not an object.")
                params = bind(info, list(parameters.items()))
                if cancel.is_set():
                    raise ScriptFailure("The pipeline was stopped.")
                outputs.append([self.run_script(info.name, params, [], cancel)])
        except (ScriptFailure, BindingError) as exc:
            errors.append(str(exc))
        return _json({"outputs": outputs, "errors": errors})

    # Get-ExtensionState.ps1
    def op_Get_ExtensionState(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        handler = p["Handler"]
        with self.lock:
            plugin_dir = self.confined(PLUGINS, handler)
            cache_dir = self.confined(STATE, "packages", handler)
            journal_path = self.confined(STATE, "journal", f"{handler}.json")
            versions = []
            if plugin_dir.is_dir():
                for d in sorted(plugin_dir.iterdir()):
                    if not d.is_dir() or not VERSION.fullmatch(d.name):
                        continue  # only version-shaped folders
                    state_file = d / "HandlerState"
                    state = (
                        (_read_text(state_file).strip() or "NotInstalled") if state_file.exists() else "NotInstalled"
                    )
                    seqs = []
                    if (d / "RuntimeSettings").is_dir():
                        for f in (d / "RuntimeSettings").iterdir():
                            m = SETTINGS_NAME.fullmatch(f.name)
                            if m and f.is_file():
                                seqs.append(int(m.group(1)))
                    versions.append({"version": d.name, "state": state, "sequenceNumber": max(seqs) if seqs else None})
            cached = (
                sorted(z.stem for z in cache_dir.glob("*.zip") if VERSION.fullmatch(z.stem))
                if cache_dir.is_dir()
                else []
            )
            journal = _read_json(journal_path) if journal_path.exists() else None
            return _json({"handler": handler, "versions": versions, "cached": cached, "journal": journal})

    # Receive-Package.ps1
    def op_Receive_Package(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        data = b"".join(base64.b64decode(str(chunk)) for chunk in inputs if chunk)
        actual = hashlib.sha256(data).hexdigest()
        verified = actual == p["Sha256"].lower()
        with self.lock:
            self.protect(self.path(STATE))
            self.protect(self.confined(STATE, "packages"), inherit=True)
            self.protect(self.confined(STATE, "packages", p["Handler"]), inherit=True)
            target = self.confined(STATE, "packages", p["Handler"], f"{p['Version']}.zip")
            if verified:
                partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
                partial.write_bytes(data)
                os.replace(partial, target)
        return _json({"sha256": actual, "size": len(data), "verified": verified})

    # Expand-Package.ps1
    def op_Expand_Package(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        handler, version = p["Handler"], p["Version"]
        try:
            listed = json.loads(p["FilesJson"])
        except ValueError as exc:
            raise ScriptFailure(f"Invalid JSON primitive: {exc}") from None
        if not isinstance(listed, dict):
            raise ScriptFailure("The file list is not an object.")
        files: dict[str, str] = {}
        for name, digest in listed.items():
            if not re.fullmatch(r"[0-9a-f]{64}", str(digest)):
                raise ScriptFailure(f"The file list gives '{name}' no SHA-256.")
            files[str(name)] = str(digest)
        with self.lock:
            zpath = self.confined(STATE, "packages", handler, f"{version}.zip")
            if not zpath.exists():
                raise ScriptFailure(f"The package {handler} {version} is not in the package cache.")
            self.protect(self.path(PLUGINS), inherit=True)
            self.protect(self.confined(PLUGINS, handler))
            d = self.confined(PLUGINS, handler, version)
            data = zpath.read_bytes()  # opened once: the bytes hashed are the bytes extracted
            actual = hashlib.sha256(data).hexdigest()
            if actual != p["Sha256"].lower():
                raise ScriptFailure(
                    f"The cached package {handler} {version} has SHA-256 {actual}, expected {p['Sha256']}."
                )
            marker = d / "arcext.package.sha256"
            expanded = False
            if marker.exists() and _read_text(marker).strip() == actual:
                self._test_tree(d, files, exact=False, what=f"{handler} {version}")
            else:
                if d.exists():
                    state_file = d / "HandlerState"
                    if marker.exists() and self._state(state_file) not in ("NotInstalled", "Removed"):
                        raise ScriptFailure(
                            f"{handler} {version} is installed from another package "
                            f"(SHA-256 {_read_text(marker).strip()}); remove it first."
                        )
                    shutil.rmtree(d)
                self.protect(d, inherit=True)
                try:
                    with zipfile.ZipFile(io.BytesIO(data)) as zf:
                        for info in zf.infolist():
                            target = _entry_path(d, info.filename.rstrip("/\\"))
                            if info.is_dir():
                                target.mkdir(parents=True, exist_ok=True)
                                continue
                            if info.filename not in files:
                                raise ScriptFailure(
                                    f"The package entry '{info.filename}' is not in the package's file list."
                                )
                            target.parent.mkdir(parents=True, exist_ok=True)
                            with zf.open(info) as src, open(target, "xb") as out:
                                shutil.copyfileobj(src, out)
                except zipfile.BadZipFile as exc:
                    raise ScriptFailure(f'Exception calling ".ctor": {exc}') from None
                self._test_tree(d, files, exact=True, what=f"{handler} {version}")
                (d / "RuntimeSettings").mkdir(exist_ok=True)
                (d / "Status").mkdir(exist_ok=True)
                base = rf"{PLUGINS}\{handler}\{version}"
                env = [
                    {
                        "version": "1.0",
                        "handlerEnvironment": {
                            "logFolder": rf"C:\WindowsAzure\Logs\Plugins\{handler}\{version}",
                            "configFolder": rf"{base}\RuntimeSettings",
                            "statusFolder": rf"{base}\Status",
                            "heartbeatFile": rf"{base}\heartbeat.json",
                        },
                    }
                ]
                _write_text(d / "HandlerEnvironment.json", json.dumps(env, indent=2))
                _write_text(d / "HandlerState", "NotInstalled")
                _write_text(marker, actual)
                expanded = True
            manifest_path = d / "HandlerManifest.json"
            if not manifest_path.exists():
                raise ScriptFailure(f"Could not find file '{PLUGINS}\\{handler}\\{version}\\HandlerManifest.json'.")
            manifest = _first(_read_json(manifest_path))
            return _json(
                {
                    "path": rf"{PLUGINS}\{handler}\{version}",
                    "expanded": expanded,
                    "handlerManifest": (manifest or {}).get("handlerManifest"),
                }
            )

    @staticmethod
    def _test_tree(d: Path, files: dict[str, str], exact: bool, what: str) -> None:
        for name, digest in files.items():
            path = _entry_path(d, name)
            if not path.is_file():
                raise ScriptFailure(f"The extracted {what} lacks '{name}'.")
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != digest:
                raise ScriptFailure(f"The extracted '{name}' of {what} has SHA-256 {actual}, not {digest}.")
        if exact:
            expected = {_entry_path(d, name) for name in files}
            for path in d.rglob("*"):
                if path.is_file() and path not in expected:
                    raise ScriptFailure(
                        f"The extracted {what} holds '{path.relative_to(d)}', which is not in the package."
                    )

    # Write-RuntimeSettings.ps1
    def op_Write_RuntimeSettings(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        data = base64.b64decode(p["ContentBase64"])
        with self.lock:
            if not self.confined(PLUGINS, p["Handler"], p["Version"]).is_dir():
                raise ScriptFailure(f"{p['Handler']} {p['Version']} is not staged.")
            d = self.confined(PLUGINS, p["Handler"], p["Version"], "RuntimeSettings")
            self.protect(d, inherit=True)
            path = self.confined(
                PLUGINS, p["Handler"], p["Version"], "RuntimeSettings", f"{p['SequenceNumber']}.settings"
            )
            path.write_bytes(data)
        return _json(
            {"sequenceNumber": p["SequenceNumber"], "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        )

    # Copy-RuntimeSettings.ps1
    def op_Copy_RuntimeSettings(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        with self.lock:
            source = self.confined(PLUGINS, p["Handler"], p["FromVersion"], "RuntimeSettings")
            target = self.confined(PLUGINS, p["Handler"], p["ToVersion"], "RuntimeSettings")
            if not source.is_dir():
                raise ScriptFailure(f"No settings to copy: {source.name} does not exist.")
            if not target.parent.is_dir():
                raise ScriptFailure(f"{p['Handler']} {p['ToVersion']} is not staged.")
            self.protect(target, inherit=True)
            copied = []
            for f in sorted(source.glob("*.settings")):
                if not SETTINGS_NAME.fullmatch(f.name) or not f.is_file():
                    continue
                data = f.read_bytes()
                (target / f.name).write_bytes(data)
                copied.append({"name": f.name, "sha256": hashlib.sha256(data).hexdigest()})
        return _json({"copied": copied})

    # Write-Journal.ps1
    def op_Write_Journal(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        try:
            incoming = json.loads(p["ContentJson"])
        except ValueError as exc:
            raise ScriptFailure(f"Invalid JSON primitive: {exc}") from None
        if not re.fullmatch(r"[0-9a-fA-F-]{36}", str(incoming.get("operationId", ""))):
            raise ScriptFailure("The journal has no valid operationId.")
        with self.lock:
            self.protect(self.path(STATE))
            self.protect(self.confined(STATE, "journal"), inherit=True)
            path = self.confined(STATE, "journal", f"{p['Handler']}.json")
            current = _read_json(path) if path.exists() else None
            if current and current.get("operationId") == incoming.get("operationId"):
                incoming["steps"] = current.get("steps", {})
            self._save_journal(path, incoming)
        return _json({"operationId": incoming.get("operationId"), "written": True})

    # Remove-HandlerVersion.ps1
    def op_Remove_HandlerVersion(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        with self.lock:
            d = self.confined(PLUGINS, p["Handler"], p["Version"])
            removed = d.exists()
            if removed:
                shutil.rmtree(d)  # like Remove-Tree: links inside are unlinked, never followed
            purged = False
            if p.get("PurgeCache"):
                z = self.confined(STATE, "packages", p["Handler"], f"{p['Version']}.zip")
                if z.exists():
                    z.unlink()
                    purged = True
        return _json({"removed": removed, "purged": purged})

    # Get-HandlerStatus.ps1
    def op_Get_HandlerStatus(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        with self.lock:
            d = self.confined(PLUGINS, p["Handler"], p["Version"])
            status_path = self.confined(PLUGINS, p["Handler"], p["Version"], "Status", f"{p['SequenceNumber']}.status")
            if not (d / "HandlerEnvironment.json").exists():
                raise ScriptFailure(f"Could not find file '{d.name}\\HandlerEnvironment.json'.")
            status = status_error = status_pending = age = None
            if status_path.exists():
                age = int(time.time() - status_path.stat().st_mtime)
                try:
                    parsed = _first(_read_json(status_path))
                    if parsed is None:
                        status_pending = "the status file is empty"
                    else:
                        inner = parsed.get("status") or {}
                        status = {
                            "status": str(inner.get("status") or ""),
                            "code": int(inner.get("code") or 0),
                            "message": str((inner.get("formattedMessage") or {}).get("message") or ""),
                        }
                except (ValueError, AttributeError, TypeError) as exc:
                    status_error = f"Status file {status_path.name} is not valid JSON: {exc}"
            heartbeat = None
            env = (_first(_read_json(d / "HandlerEnvironment.json")) or {}).get("handlerEnvironment") or {}
            hb_name = str(env.get("heartbeatFile") or "")
            if hb_name:
                if not hb_name.lower().startswith((rf"{PLUGINS}\{p['Handler']}\{p['Version']}" + "\\").lower()):
                    raise ScriptFailure(f"Refusing the heartbeat file {hb_name}: it is not under its version folder.")
                hb = self.path(hb_name)
                if hb.exists():
                    try:
                        beat = (_first(_read_json(hb)) or {}).get("heartbeat")
                    except ValueError:
                        beat = None
                    if beat is not None:
                        heartbeat = {
                            "status": str(beat.get("status")),
                            "code": int(beat.get("code") or 0),
                            "ageSeconds": int(time.time() - hb.stat().st_mtime),
                        }
            state_file = d / "HandlerState"
            state = (_read_text(state_file).strip() or "NotInstalled") if state_file.exists() else "NotInstalled"
        return _json(
            {
                "status": status,
                "statusError": status_error,
                "statusPending": status_pending,
                "statusAgeSeconds": age,
                "heartbeat": heartbeat,
                "state": state,
            }
        )

    # Invoke-HandlerCommand.ps1 (+ the scheduled task that runs Invoke-HandlerRunner.ps1)
    def op_Invoke_HandlerCommand(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        """One step (start it, or report on it); with WaitSeconds, polled on the host every second until
        it is no longer pending or the wait is over, as the script's loop does."""
        wait_until = time.time() + int(p.get("WaitSeconds") or 0)
        while True:
            answer = self._handler_step(p)
            if not json.loads(answer).get("pending") or time.time() >= wait_until:
                return answer
            if cancel.wait(self.host_poll_s):
                raise ScriptFailure("The pipeline was stopped.")

    def _skipped(self, p: dict[str, Any], reason: str, blocked: bool, state_file: Path) -> str:
        return _json(
            {
                "step": p["Step"],
                "command": p["Command"].lower(),
                "version": p["Version"],
                "pending": False,
                "skipped": True,
                "blocked": blocked,
                "reason": reason,
                "state": self._state(state_file),
            }
        )

    def _handler_step(self, p: dict[str, Any]) -> str:
        from .scripts import known_scripts, script_hash

        handler, version, command, step = p["Handler"], p["Version"], p["Command"].lower(), p["Step"]
        runner = known_scripts().get(script_hash(str(p["RunnerScript"])))
        if runner is None or runner.name != "Invoke-HandlerRunner":
            raise ScriptFailure("The RunnerScript is not arcext's Invoke-HandlerRunner.ps1 (the fake runs only that).")
        with self.lock:
            d = self.confined(PLUGINS, handler, version)
            self.protect(self.path(STATE))
            for sub in ("journal", "tasks", "scripts"):
                self.protect(self.confined(STATE, sub), inherit=True)
            jpath = self.confined(STATE, "journal", f"{handler}.json")
            state_file = d / "HandlerState"
            if not jpath.exists():
                raise ScriptFailure(f"No journal for {handler}; the operation {p['OperationId']} was not started.")
            journal = _read_json(jpath)
            if journal.get("operationId") != p["OperationId"]:
                raise ScriptFailure(
                    f"The active operation on {handler} is {journal.get('operationId')}, not {p['OperationId']}."
                )
            steps = journal.setdefault("steps", {})
            recorded = steps.get(step)
            if recorded and recorded.get("state") == "skipped":
                return self._skipped(p, str(recorded.get("reason") or ""), False, state_file)
            if recorded and recorded.get("state") == "done":
                replayed = bool(recorded.get("reported"))
                if not replayed:
                    recorded["reported"] = True
                    self._save_journal(jpath, journal)
                    self.tasks.pop(f"{handler}.{step}", None)
                return self._outcome(step, command, version, recorded, replayed, state_file)
            if recorded:
                elapsed = time.time() - float(recorded.get("startedAtUnix", 0))
                task = self.tasks.get(f"{handler}.{step}")
                if elapsed <= int(recorded.get("timeoutSeconds", 0)) + self.task_grace_s:
                    return _json(
                        {
                            "step": step,
                            "command": command,
                            "version": version,
                            "pending": True,
                            "state": self._state(state_file),
                        }
                    )
                # the task never reported (its runner died): stop it, record a timeout
                record = {
                    "state": "done",
                    "command": command,
                    "version": version,
                    "exitCode": 1011,
                    "timedOut": True,
                    "durationMs": int(elapsed * 1000),
                    "stdoutTail": "",
                    "stderrTail": "the handler task did not report; it was stopped",
                    "reported": True,
                    "taskAlive": bool(task and task.is_alive()),
                }
                steps[step] = record
                self._save_journal(jpath, journal)
                self.tasks.pop(f"{handler}.{step}", None)
                return self._outcome(step, command, version, record, False, state_file)
            after = p.get("After")
            if after:
                previous = steps.get(after)
                if not previous or (
                    previous.get("state") != "skipped"
                    and (
                        previous.get("state") != "done"
                        or int(previous.get("exitCode", -1)) != 0
                        or bool(previous.get("timedOut"))
                    )
                ):
                    return self._skipped(p, f"the step {after} before it has not succeeded", True, state_file)
            only = p.get("OnlyInState")
            if only and self._state(state_file) != only:
                reason = f"{handler} {version} is {self._state(state_file)}, not {only}"
                steps[step] = {"state": "skipped", "command": command, "version": version, "reason": reason}
                self._save_journal(jpath, journal)
                return self._skipped(p, reason, False, state_file)
            if not state_file.exists():
                raise ScriptFailure(f"Cannot run {command} on {handler} {version} in handler state Removed.")
            state = self._state(state_file)
            if state not in ALLOWED[command]:
                raise ScriptFailure(f"Cannot run {command} on {handler} {version} in handler state {state}.")
            manifest = (_first(_read_json(d / "HandlerManifest.json")) or {}).get("handlerManifest") or {}
            if not str(manifest.get(f"{command}Command") or "").strip():
                raise ScriptFailure(f"HandlerManifest.json of {handler} {version} has no {command}Command.")
            env = {str(k): str(v) for k, v in (p.get("Environment") or {}).items()}
            for key in env:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                    raise ScriptFailure(f"Invalid environment variable name '{key}'.")
            request = {
                "handler": handler,
                "version": version,
                "command": command,
                "step": step,
                "operationId": p["OperationId"],
                "commandLine": manifest[f"{command}Command"],
                "timeoutSeconds": int(p["TimeoutSeconds"]),
                "stateBefore": state,
                "updateMode": str(manifest.get("updateMode") or ""),
                "environment": env,
            }
            _write_text(self.confined(STATE, "tasks", f"{handler}.{step}.json"), _json(request))
            _write_text(self.confined(STATE, "scripts", "Invoke-HandlerRunner.ps1"), runner.text)
            steps[step] = {
                "state": "started",
                "command": command,
                "version": version,
                "timeoutSeconds": int(p["TimeoutSeconds"]),
                "startedAtUnix": int(time.time()),
            }
            self._save_journal(jpath, journal)
            self._log(
                "commands",
                {
                    "handler": handler,
                    "version": version,
                    "command": command,
                    "step": step,
                    "at": _now(),
                    "runAs": "SYSTEM",
                    "task": rf"\arcext\{handler}.{step}",
                    "env": env,
                },
            )
            behaviour_path = d / BEHAVIOUR_FILE
            behaviour = _read_json(behaviour_path) if behaviour_path.exists() else {}
            thread = threading.Thread(
                target=self._task,
                args=(request, behaviour, manifest, runner.text),
                name=f"fakehost-task-{handler}.{step}",
                daemon=True,
            )
            self.tasks[f"{handler}.{step}"] = thread
            thread.start()
        return _json({"step": step, "command": command, "version": version, "pending": True, "state": state})

    @staticmethod
    def _state(state_file: Path) -> str:
        if not state_file.exists():
            return "Removed"
        return _read_text(state_file).strip() or "NotInstalled"

    def _outcome(
        self, step: str, command: str, version: str, record: dict[str, Any], replayed: bool, state_file: Path
    ) -> str:
        return _json(
            {
                "step": step,
                "command": command,
                "version": version,
                "pending": False,
                "exitCode": record["exitCode"],
                "timedOut": record["timedOut"],
                "durationMs": record["durationMs"],
                "replayed": replayed,
                "state": self._state(state_file),
                "runAs": "SYSTEM",
                "stdoutTail": record.get("stdoutTail", ""),
                "stderrTail": record.get("stderrTail", ""),
            }
        )

    def _task(self, request: dict[str, Any], behaviour: dict[str, Any], manifest: dict[str, Any], runner: str) -> None:
        """The scheduled task: Invoke-HandlerRunner.ps1 under Windows PowerShell 5.1 as LocalSystem.
        It outlives the remoting session that started it; it enforces the timeout itself."""
        handler, version, command, step = request["handler"], request["version"], request["command"], request["step"]
        started = time.monotonic()
        exit_code, timed_out, stdout, stderr = self._run_handler(
            handler, version, command, behaviour, manifest, int(request["timeoutSeconds"]), self.stopping
        )
        if timed_out and not self._kill(runner, "Desktop"):
            return  # the runner threw on the timeout path: no state, no journal (the handler runs on)
        duration = int((time.monotonic() - started) * 1000)
        state = request["stateBefore"]
        if exit_code == 0:
            nxt = {
                "install": "Installed",
                "enable": "Enabled",
                "disable": "Installed",
                "uninstall": "NotInstalled",
            }.get(command, state)
            if command == "update" and request.get("updateMode") == "UpdateWithoutInstall":
                nxt = "Installed"
        elif command == "update":
            nxt = "FailedUpgrade"
        else:
            nxt = state
        with self.lock:
            d = self.plugin_dir(handler, version)
            if d.exists():
                _write_text(d / "HandlerState", nxt)
            jpath = self.journal_path(handler)
            journal = _read_json(jpath)
            if journal.get("operationId") == request["operationId"]:
                journal.setdefault("steps", {})[step] = {
                    "state": "done",
                    "command": command,
                    "version": version,
                    "exitCode": exit_code,
                    "timedOut": timed_out,
                    "durationMs": duration,
                    "stdoutTail": stdout[-2048:],
                    "stderrTail": stderr[-2048:],
                }
                self._save_journal(jpath, journal)
            meta = self._read_meta()
            for entry in reversed(meta["commands"]):
                if entry["step"] == step and entry["version"] == version and "exitCode" not in entry:
                    entry.update(exitCode=exit_code, timedOut=timed_out)
                    break
            self._write_meta(meta)
        if self.on_command_done is not None:
            self.on_command_done(command, version)

    def _kill(self, script_text: str, edition: str) -> bool:
        """What the script's kill on the timeout path does on ``edition``: .NET Framework has only
        ``Process.Kill()``; ``Kill($true)`` throws MethodException there ("Cannot find an overload
        for "Kill" and the argument count: "1"") and the script stops before recording anything.
        Returns whether the kill succeeded (the script went on to record the timeout)."""
        from .pscheck import kill_overloads

        overloads = kill_overloads(script_text)
        if edition == "Desktop" and any(n >= 1 for n in overloads):
            self._log(
                "failures", {"at": _now(), "error": 'Cannot find an overload for "Kill" and the argument count: "1".'}
            )
            return False
        return True

    def failures(self) -> list[str]:
        """Errors the model's scripts hit where PowerShell would have thrown (and nobody saw)."""
        with self.lock:
            return [str(f["error"]) for f in self._read_meta().get("failures", [])]

    def _save_journal(self, path: Path, journal: dict[str, Any]) -> None:
        _write_text(path, _json(journal))

    def _run_handler(
        self,
        handler: str,
        version: str,
        command: str,
        behaviour: dict[str, Any],
        manifest: dict[str, Any],
        timeout_s: int,
        cancel: threading.Event,
    ) -> tuple[int, bool, str, str]:
        """What the handler's program would do: exit code, hang, files it writes."""
        spec = dict(behaviour.get(command, {}))
        runs = sum(
            1
            for c in self._read_meta()["commands"]
            if c["handler"] == handler and c["version"] == version and c["command"] == command
        )
        if runs <= int(spec.pop("fromRun", 1)) - 1:
            spec = {}  # the behaviour applies from the n-th run of this command on ("fromRun": n)
        if spec.get("hang"):
            cancel.wait(timeout_s)
            return 1011, True, "", f"{command} did not exit within {timeout_s} s and was killed\n"
        sleep = float(spec.get("sleepSeconds", 0))
        if sleep:
            if cancel.wait(min(sleep, timeout_s)) or sleep >= timeout_s:
                return 1011, True, "", f"{command} did not exit within {timeout_s} s and was killed\n"
        exit_code = int(spec.get("exitCode", 0))
        if exit_code:
            return exit_code, False, "", f"{command} failed with exit code {exit_code}\n"
        d = self.plugin_dir(handler, version)
        if command == "enable":
            with self.lock:
                seqs = sorted(
                    int(m.group(1))
                    for f in (d / "RuntimeSettings").glob("*.settings")
                    if (m := SETTINGS_NAME.fullmatch(f.name))
                )
                if not seqs:
                    return 1, False, "", "enable: no RuntimeSettings\\<N>.settings file; nothing to configure\n"
                seq = seqs[-1]
                status = behaviour.get("status", "success")
                status_path = d / "Status" / f"{seq}.status"
                status_path.parent.mkdir(exist_ok=True)
                # a handler on a 5.1 host writes UTF-8 with a BOM (Set-Content -Encoding UTF8)
                bom = "\ufeff" if self.edition == "Desktop" else ""
                message = str(behaviour.get("message", f"Enable {status}"))
                document = json.dumps(
                    [
                        {
                            "version": "1.0",
                            "timestampUTC": _now(),
                            "status": {
                                "name": handler,
                                "operation": "Enable",
                                "status": status,
                                "code": 0 if status != "error" else 1,
                                "formattedMessage": {"lang": "en-US", "message": message},
                            },
                        }
                    ],
                    ensure_ascii=False,
                )
                delay = float(behaviour.get("statusDelaySeconds", 0))
                if status == "corrupt":
                    status_path.write_text("{not json")
                    if behaviour.get("statusOld"):
                        old = time.time() - 600
                        os.utime(status_path, (old, old))
                elif delay:
                    status_path.write_bytes(b"")  # the handler created the file and writes it later

                    def later() -> None:
                        if not cancel.wait(delay):
                            with self.lock:
                                status_path.write_text(bom + document, encoding="utf-8")

                    threading.Thread(target=later, daemon=True).start()
                else:
                    status_path.write_text(bom + document, encoding="utf-8")
                if manifest.get("reportHeartbeat") in (True, "true"):
                    beat = behaviour.get("heartbeat", "ready")
                    hb = d / "heartbeat.json"
                    if beat != "none":
                        hb.write_text(
                            bom
                            + json.dumps(
                                [
                                    {
                                        "version": 1.0,
                                        "heartbeat": {
                                            "status": "notready" if beat == "notready" else "ready",
                                            "code": 0,
                                            "formattedMessage": {"lang": "en-US", "message": beat},
                                        },
                                    }
                                ]
                            ),
                            encoding="utf-8",
                        )
                        if beat == "stale":
                            old = time.time() - 1200
                            os.utime(hb, (old, old))
        return 0, False, f"{command} completed\n", ""


# --- how the scripts read and write files (Read-TextFile / Write-TextFile / Read-JsonFile) --------
def _read_text(path: Path) -> str:
    """[System.IO.File]::ReadAllText($path, UTF8): a BOM is recognised and dropped, on 5.1 and 7."""
    return path.read_bytes().decode("utf-8-sig", "replace")


def _write_text(path: Path, text: str) -> None:
    """Write-TextFile: UTF-8 without a BOM, through a uniquely named temporary file and a replace."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(text.encode("utf-8"))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    """Read-JsonFile: None for an empty file (5.1's Get-Content -Raw gives $null there)."""
    text = _read_text(path)
    if not text.strip():
        return None
    return json.loads(text)


def _first(value: Any) -> Any:
    """Read-JsonFile -First: the first element of a JSON list (5.1 returns the list as one object)."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _entry_path(root: Path, name: str) -> Path:
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
