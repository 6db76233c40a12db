"""The agent scripts that stage and inspect a handler on the fake machine, each with the same
contract as its .ps1 file (same parameters, same JSON answer, same side effects on disk): the WinRS
bootstrap (Install-AgentScripts), the PSRP batch (Invoke-AgentBatch), Get-ExtensionState,
Receive-Package, Expand-Package, Write-/Copy-RuntimeSettings, Write-Journal, Remove-HandlerVersion
and Get-HandlerStatus."""

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
from pathlib import Path
from typing import Any

from .disk import (
    PLUGINS,
    SCRIPT_NAME,
    SETTINGS_NAME,
    STATE,
    VERSION,
    ScriptFailure,
    entry_path,
    first,
    handler_state,
    installed_state,
    read_json,
    read_text,
    to_json,
    write_text,
)
from .state import MachineState


class PackageScripts(MachineState):
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
        return to_json({"written": written, "unchanged": unchanged})

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
        return to_json({"outputs": outputs, "errors": errors})

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
                    state = installed_state(state_file)
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
            journal = read_json(journal_path) if journal_path.exists() else None
            return to_json({"handler": handler, "versions": versions, "cached": cached, "journal": journal})

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
        return to_json({"sha256": actual, "size": len(data), "verified": verified})

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
            if marker.exists() and read_text(marker).strip() == actual:
                self._test_tree(d, files, exact=False, what=f"{handler} {version}")
            else:
                if d.exists():
                    state_file = d / "HandlerState"
                    if marker.exists() and handler_state(state_file) not in ("NotInstalled", "Removed"):
                        raise ScriptFailure(
                            f"{handler} {version} is installed from another package "
                            f"(SHA-256 {read_text(marker).strip()}); remove it first."
                        )
                    shutil.rmtree(d)
                self.protect(d, inherit=True)
                try:
                    with zipfile.ZipFile(io.BytesIO(data)) as zf:
                        for info in zf.infolist():
                            target = entry_path(d, info.filename.rstrip("/\\"))
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
                write_text(d / "HandlerEnvironment.json", json.dumps(env, indent=2))
                write_text(d / "HandlerState", "NotInstalled")
                write_text(marker, actual)
                expanded = True
            manifest_path = d / "HandlerManifest.json"
            if not manifest_path.exists():
                raise ScriptFailure(f"Could not find file '{PLUGINS}\\{handler}\\{version}\\HandlerManifest.json'.")
            manifest = first(read_json(manifest_path))
            return to_json(
                {
                    "path": rf"{PLUGINS}\{handler}\{version}",
                    "expanded": expanded,
                    "handlerManifest": (manifest or {}).get("handlerManifest"),
                }
            )

    @staticmethod
    def _test_tree(d: Path, files: dict[str, str], exact: bool, what: str) -> None:
        for name, digest in files.items():
            path = entry_path(d, name)
            if not path.is_file():
                raise ScriptFailure(f"The extracted {what} lacks '{name}'.")
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != digest:
                raise ScriptFailure(f"The extracted '{name}' of {what} has SHA-256 {actual}, not {digest}.")
        if exact:
            expected = {entry_path(d, name) for name in files}
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
        return to_json(
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
        return to_json({"copied": copied})

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
            current = read_json(path) if path.exists() else None
            if current and current.get("operationId") == incoming.get("operationId"):
                incoming["steps"] = current.get("steps", {})
            self._save_journal(path, incoming)
        return to_json({"operationId": incoming.get("operationId"), "written": True})

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
        return to_json({"removed": removed, "purged": purged})

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
                    parsed = first(read_json(status_path))
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
            env = (first(read_json(d / "HandlerEnvironment.json")) or {}).get("handlerEnvironment") or {}
            hb_name = str(env.get("heartbeatFile") or "")
            if hb_name:
                if not hb_name.lower().startswith((rf"{PLUGINS}\{p['Handler']}\{p['Version']}" + "\\").lower()):
                    raise ScriptFailure(f"Refusing the heartbeat file {hb_name}: it is not under its version folder.")
                hb = self.path(hb_name)
                if hb.exists():
                    try:
                        beat = (first(read_json(hb)) or {}).get("heartbeat")
                    except ValueError:
                        beat = None
                    if beat is not None:
                        heartbeat = {
                            "status": str(beat.get("status")),
                            "code": int(beat.get("code") or 0),
                            "ageSeconds": int(time.time() - hb.stat().st_mtime),
                        }
            state_file = d / "HandlerState"
            state = installed_state(state_file)
        return to_json(
            {
                "status": status,
                "statusError": status_error,
                "statusPending": status_pending,
                "statusAgeSeconds": age,
                "heartbeat": heartbeat,
                "state": state,
            }
        )
