"""Invoke-HandlerCommand.ps1 on the fake machine: one step of a handler operation (start it, or
report on it, from the journal), and the scheduled task that runs the handler's command through
Invoke-HandlerRunner.ps1 under Windows PowerShell 5.1 as LocalSystem. Handler commands do not run
programs: their behaviour (exit code, a hang, the status file and heartbeat they leave) comes from
``fakehost-behaviour.json`` inside the package the backend pushed."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from .disk import (
    ALLOWED,
    BEHAVIOUR_FILE,
    NEXT_STATE,
    PLUGINS,
    SETTINGS_NAME,
    STATE,
    ScriptFailure,
    first,
    handler_state,
    read_json,
    to_json,
    utc_now,
    write_text,
)
from .state import MachineState


class HandlerCommands(MachineState):
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
        return to_json(
            {
                "step": p["Step"],
                "command": p["Command"].lower(),
                "version": p["Version"],
                "pending": False,
                "skipped": True,
                "blocked": blocked,
                "reason": reason,
                "state": handler_state(state_file),
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
            journal = read_json(jpath)
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
                    return to_json(
                        {
                            "step": step,
                            "command": command,
                            "version": version,
                            "pending": True,
                            "state": handler_state(state_file),
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
            if only and handler_state(state_file) != only:
                reason = f"{handler} {version} is {handler_state(state_file)}, not {only}"
                steps[step] = {"state": "skipped", "command": command, "version": version, "reason": reason}
                self._save_journal(jpath, journal)
                return self._skipped(p, reason, False, state_file)
            if not state_file.exists():
                raise ScriptFailure(f"Cannot run {command} on {handler} {version} in handler state Removed.")
            state = handler_state(state_file)
            if state not in ALLOWED[command]:
                raise ScriptFailure(f"Cannot run {command} on {handler} {version} in handler state {state}.")
            manifest = (first(read_json(d / "HandlerManifest.json")) or {}).get("handlerManifest") or {}
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
            write_text(self.confined(STATE, "tasks", f"{handler}.{step}.json"), to_json(request))
            write_text(self.confined(STATE, "scripts", "Invoke-HandlerRunner.ps1"), runner.text)
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
                    "at": utc_now(),
                    "runAs": "SYSTEM",
                    "task": rf"\arcext\{handler}.{step}",
                    "env": env,
                },
            )
            behaviour_path = d / BEHAVIOUR_FILE
            behaviour = read_json(behaviour_path) if behaviour_path.exists() else {}
            thread = threading.Thread(
                target=self._task,
                args=(request, behaviour, manifest, runner.text),
                name=f"fakehost-task-{handler}.{step}",
                daemon=True,
            )
            self.tasks[f"{handler}.{step}"] = thread
            thread.start()
        return to_json({"step": step, "command": command, "version": version, "pending": True, "state": state})

    def _outcome(
        self, step: str, command: str, version: str, record: dict[str, Any], replayed: bool, state_file: Path
    ) -> str:
        return to_json(
            {
                "step": step,
                "command": command,
                "version": version,
                "pending": False,
                "exitCode": record["exitCode"],
                "timedOut": record["timedOut"],
                "durationMs": record["durationMs"],
                "replayed": replayed,
                "state": handler_state(state_file),
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
            nxt = NEXT_STATE.get(command, state)
            if command == "update" and request.get("updateMode") == "UpdateWithoutInstall":
                nxt = "Installed"
        elif command == "update":
            nxt = "FailedUpgrade"
        else:
            nxt = state
        with self.lock:
            d = self.plugin_dir(handler, version)
            if d.exists():
                write_text(d / "HandlerState", nxt)
            jpath = self.journal_path(handler)
            journal = read_json(jpath)
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
                "failures",
                {"at": utc_now(), "error": 'Cannot find an overload for "Kill" and the argument count: "1".'},
            )
            return False
        return True

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
                            "timestampUTC": utc_now(),
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
