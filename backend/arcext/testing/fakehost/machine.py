"""A Python model of a Windows machine as the VM-extension handler protocol sees it.

Files live under a real directory (``<root>/C/Packages/Plugins/...``, ``<root>/C/ProgramData/arcext/...``)
so the state survives the process; every agent script the backend sends has a Python implementation
here with the same contract as the .ps1 file (same parameters, same JSON answer, same side effects on
disk). Handler commands do not run programs: their behaviour (exit code, a hang, the status file and
heartbeat they leave) comes from ``fakehost-behaviour.json`` inside the package the backend pushed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import threading
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PureWindowsPath
from typing import Any

PLUGINS = r"C:\Packages\Plugins"
STATE = r"C:\ProgramData\arcext"
BEHAVIOUR_FILE = "fakehost-behaviour.json"
SCRIPT_NAME = re.compile(r"[A-Za-z]+-[A-Za-z]+")

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
    def __init__(self, root: Path, name: str = "FAKEHOST") -> None:
        self.root = root
        self.name = name
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._meta_path = self.root / "fakehost-model.json"
        if not self._meta_path.exists():
            self._write_meta({"commands": [], "scripts": []})
        #: called with (command, version) when a handler command finishes (fault hooks use it)
        self.on_command_done: Callable[[str, str], None] | None = None

    # --- paths ---------------------------------------------------------------------------------
    def path(self, windows_path: str) -> Path:
        p = PureWindowsPath(windows_path)
        drive = p.drive.rstrip(":") or "C"
        return self.root.joinpath(drive, *p.parts[1:])

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

    # Get-ExtensionState.ps1
    def op_Get_ExtensionState(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        handler = p["Handler"]
        with self.lock:
            versions = []
            for version, state in self.versions(handler).items():
                seqs = [int(n.split(".")[0]) for n in self.settings_files(handler, version)]
                versions.append({"version": version, "state": state, "sequenceNumber": max(seqs) if seqs else None})
            return _json(
                {
                    "handler": handler,
                    "versions": versions,
                    "cached": self.cached(handler),
                    "journal": self.journal(handler),
                }
            )

    # Receive-Package.ps1
    def op_Receive_Package(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        data = b"".join(base64.b64decode(str(chunk)) for chunk in inputs if chunk)
        actual = hashlib.sha256(data).hexdigest()
        verified = actual == p["Sha256"].lower()
        with self.lock:
            target = self.cache_zip(p["Handler"], p["Version"])
            target.parent.mkdir(parents=True, exist_ok=True)
            if verified:
                partial = target.with_name(target.name + ".partial")
                partial.write_bytes(data)
                os.replace(partial, target)
        return _json({"sha256": actual, "size": len(data), "verified": verified})

    # Expand-Package.ps1
    def op_Expand_Package(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        handler, version = p["Handler"], p["Version"]
        with self.lock:
            zpath = self.cache_zip(handler, version)
            if not zpath.exists():
                raise ScriptFailure(f"The package {handler} {version} is not in the package cache.")
            actual = hashlib.sha256(zpath.read_bytes()).hexdigest()
            if actual != p["Sha256"].lower():
                raise ScriptFailure(
                    f"The cached package {handler} {version} has SHA-256 {actual}, expected {p['Sha256']}."
                )
            d = self.plugin_dir(handler, version)
            marker = d / "arcext.package.sha256"
            expanded = False
            if not (marker.exists() and marker.read_text().strip() == actual):
                d.mkdir(parents=True, exist_ok=True)
                try:
                    with zipfile.ZipFile(io.BytesIO(zpath.read_bytes())) as zf:
                        zf.extractall(d)
                except zipfile.BadZipFile as exc:
                    raise ScriptFailure(f"Expand-Archive: {exc}") from None
                (d / "RuntimeSettings").mkdir(exist_ok=True)
                (d / "Status").mkdir(exist_ok=True)
                env = [
                    {
                        "version": "1.0",
                        "handlerEnvironment": {
                            "logFolder": rf"C:\WindowsAzure\Logs\Plugins\{handler}\{version}",
                            "configFolder": rf"{PLUGINS}\{handler}\{version}\RuntimeSettings",
                            "statusFolder": rf"{PLUGINS}\{handler}\{version}\Status",
                            "heartbeatFile": rf"{PLUGINS}\{handler}\{version}\heartbeat.json",
                        },
                    }
                ]
                (d / "HandlerEnvironment.json").write_text(json.dumps(env, indent=2))
                (d / "HandlerState").write_text("NotInstalled")
                marker.write_text(actual)
                expanded = True
            manifest_path = d / "HandlerManifest.json"
            if not manifest_path.exists():
                raise ScriptFailure(f"Cannot find path '{PLUGINS}\\{handler}\\{version}\\HandlerManifest.json'.")
            manifest = json.loads(manifest_path.read_text())
            return _json(
                {
                    "path": rf"{PLUGINS}\{handler}\{version}",
                    "expanded": expanded,
                    "handlerManifest": manifest[0]["handlerManifest"],
                }
            )

    # Write-RuntimeSettings.ps1
    def op_Write_RuntimeSettings(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        data = base64.b64decode(p["ContentBase64"])
        with self.lock:
            d = self.plugin_dir(p["Handler"], p["Version"]) / "RuntimeSettings"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{p['SequenceNumber']}.settings").write_bytes(data)
        return _json(
            {"sequenceNumber": p["SequenceNumber"], "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        )

    # Copy-RuntimeSettings.ps1
    def op_Copy_RuntimeSettings(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        with self.lock:
            source = self.plugin_dir(p["Handler"], p["FromVersion"]) / "RuntimeSettings"
            target = self.plugin_dir(p["Handler"], p["ToVersion"]) / "RuntimeSettings"
            if not source.is_dir():
                raise ScriptFailure(f"No settings to copy: {source.name} does not exist.")
            target.mkdir(parents=True, exist_ok=True)
            copied = []
            for f in sorted(source.glob("*.settings")):
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
        with self.lock:
            path = self.journal_path(p["Handler"])
            path.parent.mkdir(parents=True, exist_ok=True)
            current = json.loads(path.read_text()) if path.exists() else None
            if current and current.get("operationId") == incoming.get("operationId"):
                incoming["steps"] = current.get("steps", {})
            tmp = path.with_suffix(".tmp")
            tmp.write_text(_json(incoming))
            os.replace(tmp, path)
        return _json({"operationId": incoming.get("operationId"), "written": True})

    # Remove-HandlerVersion.ps1
    def op_Remove_HandlerVersion(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        import shutil

        with self.lock:
            d = self.plugin_dir(p["Handler"], p["Version"])
            removed = d.exists()
            if removed:
                shutil.rmtree(d)
            purged = False
            if p.get("PurgeCache"):
                z = self.cache_zip(p["Handler"], p["Version"])
                if z.exists():
                    z.unlink()
                    purged = True
        return _json({"removed": removed, "purged": purged})

    # Get-HandlerStatus.ps1
    def op_Get_HandlerStatus(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        with self.lock:
            d = self.plugin_dir(p["Handler"], p["Version"])
            if not (d / "HandlerEnvironment.json").exists():
                raise ScriptFailure(f"Cannot find path '{d.name}\\HandlerEnvironment.json' because it does not exist.")
            status_path = d / "Status" / f"{p['SequenceNumber']}.status"
            status = None
            status_error = None
            if status_path.exists():
                try:
                    parsed = json.loads(status_path.read_text())[0]["status"]
                    status = {
                        "status": str(parsed["status"]),
                        "code": int(parsed.get("code", 0)),
                        "message": str(parsed.get("formattedMessage", {}).get("message", "")),
                    }
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    status_error = f"Status file {status_path.name} is not valid JSON: {exc}"
            heartbeat = None
            env = json.loads((d / "HandlerEnvironment.json").read_text())[0]["handlerEnvironment"]
            hb = self.path(env["heartbeatFile"])
            if hb.exists():
                beat = json.loads(hb.read_text())[0]["heartbeat"]
                heartbeat = {
                    "status": beat["status"],
                    "code": int(beat.get("code", 0)),
                    "ageSeconds": int(time.time() - hb.stat().st_mtime),
                }
            state = (d / "HandlerState").read_text().strip()
        return _json({"status": status, "statusError": status_error, "heartbeat": heartbeat, "state": state})

    # Invoke-HandlerCommand.ps1
    def op_Invoke_HandlerCommand(self, p: dict[str, Any], inputs: list[Any], cancel: threading.Event) -> str:
        handler, version, command, step = p["Handler"], p["Version"], p["Command"].lower(), p["Step"]
        d = self.plugin_dir(handler, version)
        jpath = self.journal_path(handler)
        with self.lock:
            if not jpath.exists():
                raise ScriptFailure(f"No journal for {handler}; the operation {p['OperationId']} was not started.")
            journal = json.loads(jpath.read_text())
            if journal.get("operationId") != p["OperationId"]:
                raise ScriptFailure(
                    f"The active operation on {handler} is {journal.get('operationId')}, not {p['OperationId']}."
                )
            recorded = journal.get("steps", {}).get(step)
            state_file = d / "HandlerState"
            if recorded and recorded.get("state") == "done":
                return _json(
                    {
                        "step": step,
                        "command": command,
                        "version": version,
                        "exitCode": recorded["exitCode"],
                        "timedOut": recorded["timedOut"],
                        "durationMs": recorded["durationMs"],
                        "replayed": True,
                        "state": state_file.read_text().strip() if state_file.exists() else "Removed",
                        "stdoutTail": "",
                        "stderrTail": "",
                    }
                )
            if not state_file.exists():
                raise ScriptFailure(
                    f"Cannot find path '{PLUGINS}\\{handler}\\{version}\\HandlerState' because it does not exist."
                )
            state = state_file.read_text().strip()
            if state not in ALLOWED[command]:
                raise ScriptFailure(f"Cannot run {command} on {handler} {version} in handler state {state}.")
            manifest = json.loads((d / "HandlerManifest.json").read_text())[0]["handlerManifest"]
            if not manifest.get(f"{command}Command"):
                raise ScriptFailure(f"HandlerManifest.json of {handler} {version} has no {command}Command.")
            journal.setdefault("steps", {})[step] = {"state": "started", "command": command, "version": version}
            self._save_journal(jpath, journal)
            self._log(
                "commands", {"handler": handler, "version": version, "command": command, "step": step, "at": _now()}
            )
            behaviour_path = d / BEHAVIOUR_FILE
            behaviour = json.loads(behaviour_path.read_text()) if behaviour_path.exists() else {}
        started = time.monotonic()
        exit_code, timed_out, stdout, stderr = self._run_handler(
            handler, version, command, behaviour, manifest, int(p["TimeoutSeconds"]), cancel
        )
        duration = int((time.monotonic() - started) * 1000)
        with self.lock:
            if exit_code == 0:
                nxt = {
                    "install": "Installed",
                    "enable": "Enabled",
                    "disable": "Installed",
                    "uninstall": "NotInstalled",
                    "update": state,
                }[command]
                if command == "update" and manifest.get("updateMode") == "UpdateWithoutInstall":
                    nxt = "Installed"
            elif command == "update":
                nxt = "FailedUpgrade"
            else:
                nxt = state
            if d.exists():
                state_file.write_text(nxt)
            journal = json.loads(jpath.read_text())
            journal.setdefault("steps", {})[step] = {
                "state": "done",
                "command": command,
                "version": version,
                "exitCode": exit_code,
                "timedOut": timed_out,
                "durationMs": duration,
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
        return _json(
            {
                "step": step,
                "command": command,
                "version": version,
                "exitCode": exit_code,
                "timedOut": timed_out,
                "durationMs": duration,
                "replayed": False,
                "state": nxt,
                "stdoutTail": stdout[-2048:],
                "stderrTail": stderr[-2048:],
            }
        )

    def _save_journal(self, path: Path, journal: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(_json(journal))
        os.replace(tmp, path)

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
                seqs = sorted(int(f.stem) for f in (d / "RuntimeSettings").glob("*.settings"))
                if not seqs:
                    return 1, False, "", "enable: no RuntimeSettings\\<N>.settings file; nothing to configure\n"
                seq = seqs[-1]
                status = behaviour.get("status", "success")
                status_path = d / "Status" / f"{seq}.status"
                status_path.parent.mkdir(exist_ok=True)
                if status == "corrupt":
                    status_path.write_text("{not json")
                else:
                    status_path.write_text(
                        json.dumps(
                            [
                                {
                                    "version": "1.0",
                                    "timestampUTC": _now(),
                                    "status": {
                                        "name": handler,
                                        "operation": "Enable",
                                        "status": status,
                                        "code": 0 if status != "error" else 1,
                                        "formattedMessage": {"lang": "en-US", "message": f"Enable {status}"},
                                    },
                                }
                            ]
                        )
                    )
                if manifest.get("reportHeartbeat") in (True, "true"):
                    beat = behaviour.get("heartbeat", "ready")
                    hb = d / "heartbeat.json"
                    if beat != "none":
                        hb.write_text(
                            json.dumps(
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
                            )
                        )
                        if beat == "stale":
                            old = time.time() - 1200
                            os.utime(hb, (old, old))
        return 0, False, f"{command} completed\n", ""
