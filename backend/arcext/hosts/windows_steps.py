"""The Windows handler steps, each one agent script (or a few in one pipeline): read the host state,
stage a package (chunked upload sized from the transport's envelope, SHA-256 verified, kept in the
host cache as the last-known-good copy; then extracted and checked file by file), write the journal,
run one handler command to its outcome (in a scheduled task on the host, with WALA's timeouts), and
gate on the status file and the heartbeat. Names are checked here before any of them reaches a host.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import zipfile
from collections.abc import Iterator
from typing import Any

from .agent import (
    DEFAULT_TIMEOUTS,
    INVALID_STATUS_CODE,
    HandlerCommandFailed,
    PackageMissing,
)
from .agent_scripts import script_text
from .base import HostTimeout, IntegrityError, ProtocolError, UpgradeRefused
from .packages import PackageRef
from .windows_runner import AgentScriptRunner

#: What the host scripts accept as names (the same patterns as their ValidatePattern attributes):
#: a handler is Publisher.Type, each dotted part letters, digits, '-' or '_'; a version is 1-4
#: dotted numbers. Anything else never reaches a host (data stored before the API checked names).
HANDLER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+")
NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")
VERSION = re.compile(r"\d{1,9}(\.\d{1,9}){0,3}")
#: files the host writes into a version folder itself; a package may not ship them
OWN_FILES = {"handlerenvironment.json", "handlerstate", "arcext.package.sha256"}
#: how long past its timeout a handler task may stay silent before the host records it as timed out
#: (Invoke-HandlerCommand.ps1's $graceSeconds)
HOST_TASK_GRACE_S = 120


class InvalidExtensionName(UpgradeRefused):
    """A publisher, type or version the host scripts would refuse (or that could leave the handler's
    folders): stored before the API validated names, it is refused here, before any host call."""

    code = "InvalidExtensionName"


def check_names(host: str, op: str, publisher: str, type_: str, *versions: str) -> str:
    """The handler name ``Publisher.Type`` when every name is one the host accepts; else raise."""
    for field, value in (("publisher", publisher), ("type", type_)):
        if not NAME_PART.fullmatch(value or "") or len(value) > 100:
            raise InvalidExtensionName(
                host, op, f"the extension {field} {value!r} is not a plain name (letters, digits, '.', '-', '_')"
            )
    for version in versions:
        if not VERSION.fullmatch(version or ""):
            raise InvalidExtensionName(host, op, f"the typeHandlerVersion {version!r} is not a dotted numeric version")
    return f"{publisher}.{type_}"


def check_handler(host: str, op: str, handler: str) -> str:
    if not HANDLER_NAME.fullmatch(handler or "") or len(handler) > 128:
        raise InvalidExtensionName(host, op, f"the handler name {handler!r} is not Publisher.Type")
    return handler


def package_files(host: str, path: str) -> dict[str, str]:
    """Every file entry of a package zip with its SHA-256 (what the host verifies the extracted tree
    against). Entry names are checked again here: none may leave the version folder or replace a
    file the host writes itself."""
    files: dict[str, str] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename
                parts = name.replace("\\", "/").rstrip("/").split("/")
                if (
                    not name
                    or name[0] in "/\\"
                    or ":" in name
                    or any(p in ("", ".", "..") or p.endswith((".", " ")) for p in parts)
                    or any(ord(c) < 32 or c in '<>"|?*' for c in name)
                ):
                    raise IntegrityError(host, "stage", f"the package entry {name!r} could leave its folder")
                if len(parts) == 1 and parts[0].lower() in OWN_FILES:
                    raise IntegrityError(host, "stage", f"the package may not contain {name!r} (the host writes it)")
                if info.is_dir():
                    continue
                digest = hashlib.sha256()
                with zf.open(info) as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
                files[name] = digest.hexdigest()
    except zipfile.BadZipFile as exc:
        raise IntegrityError(host, "stage", f"the package is not a valid zip: {exc}") from None
    return files


class AgentSteps(AgentScriptRunner):
    """The handler steps on one Windows host (the operations that order them:
    :class:`arcext.hosts.windows_driver.AgentScriptDriver`)."""

    def host_state(self, handler: str) -> dict[str, Any]:
        return self._script("Get-ExtensionState", {"Handler": handler})

    @staticmethod
    def _versions(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {v["version"]: v for v in state.get("versions") or []}

    def stage(self, handler: str, version: str, ref: PackageRef | None, cached: list[str]) -> dict[str, Any]:
        """Upload (unless cached on the host) and extract one version; returns its handlerManifest."""
        if version not in cached:
            if ref is None:
                raise PackageMissing(self.name, "stage", f"{handler} {version} is neither published nor cached")
            self.upload(handler, version, ref)
        if ref is None:
            raise PackageMissing(self.name, "stage", f"the package hash of {handler} {version} is unknown")
        result = self._script(*self._expand_call(handler, version, ref))
        manifest: dict[str, Any] = result.get("handlerManifest") or {}
        return manifest

    def _expand_call(self, handler: str, version: str, ref: PackageRef) -> tuple[str, dict[str, Any]]:
        files = package_files(self.name, str(ref.path))
        return (
            "Expand-Package",
            {
                "Handler": handler,
                "Version": version,
                "Sha256": ref.sha256,
                "FilesJson": json.dumps(files, separators=(",", ":")),
            },
        )

    def upload(self, handler: str, version: str, ref: PackageRef) -> None:
        chunk = self._upload_chunk_size()

        def chunks() -> Iterator[str]:
            with open(ref.path, "rb") as fh:
                while True:
                    data = fh.read(chunk)
                    if not data:
                        return
                    yield base64.b64encode(data).decode()

        for attempt in (1, 2):
            deadline = 2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s + ref.size / 50_000
            result = self._script(
                "Receive-Package",
                {"Handler": handler, "Version": version, "Sha256": ref.sha256},
                deadline_s=deadline,
                input_=chunks,
            )
            if result.get("verified") and result.get("sha256") == ref.sha256:
                return
            if attempt == 2:
                raise IntegrityError(
                    self.name, "upload", f"{handler} {version}: the host computed SHA-256 {result.get('sha256')}"
                )

    def write_journal(self, handler: str, journal: dict[str, Any]) -> None:
        self._script("Write-Journal", {"Handler": handler, "ContentJson": json.dumps(journal)})

    def step_params(
        self,
        op_id: str,
        step: str,
        handler: str,
        version: str,
        command: str,
        env: dict[str, str] | None = None,
        after: str | None = None,
        only_in_state: str | None = None,
    ) -> dict[str, Any]:
        """Invoke-HandlerCommand's parameters for one step. ``after``: the step that must have
        succeeded first (the host answers ``blocked`` and starts nothing otherwise), so several steps
        can share one pipeline; ``only_in_state``: the host skips the step (journalled) unless the
        version is in that state when it would start."""
        timeout = self.conn.handler_timeouts.get(command, DEFAULT_TIMEOUTS[command])
        params: dict[str, Any] = {
            "Handler": handler,
            "Version": version,
            "Command": command,
            "TimeoutSeconds": timeout,
            "OperationId": op_id,
            "Step": step,
        }
        if env:
            params["Environment"] = env
        params["RunnerScript"] = script_text("Invoke-HandlerRunner")
        params["WaitSeconds"] = int(min(self.tuning.host_wait_s, timeout + HOST_TASK_GRACE_S))
        if after:
            params["After"] = after
        if only_in_state:
            params["OnlyInState"] = only_in_state
        return params

    def _step_deadline(self, params: dict[str, Any]) -> float:
        return float(params.get("WaitSeconds") or 0) + 2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s

    def handler_command(
        self,
        op_id: str,
        step: str,
        handler: str,
        version: str,
        command: str,
        env: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        first: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run one handler step to its outcome. ``params``/``first``: the step was already sent in a
        batch (its parameters and the answer it got there); it is polled on from that answer."""
        params = params or self.step_params(op_id, step, handler, version, command, env)
        timeout = int(params["TimeoutSeconds"])
        # the host runs the command in a scheduled task (LocalSystem, detached from this session) and
        # enforces the timeout itself; each call starts it or reports on it (waiting on the host up to
        # WaitSeconds), until it is not pending. Past the timeout and the host's grace for a silent
        # task, the host records a timeout.
        give_up = time.monotonic() + timeout + HOST_TASK_GRACE_S + 2 * self.conn.operation_timeout_s
        result = first
        if result is not None and result.get("blocked"):
            result = None  # it waited for a step that was still pending when the batch ran: ask again
        while True:
            if result is None:
                result = self._script("Invoke-HandlerCommand", params, deadline_s=self._step_deadline(params))
            if result.get("blocked"):
                raise ProtocolError(self.name, step, f"{step} is blocked: {result.get('reason')}")
            if not result.get("pending"):
                break
            if time.monotonic() >= give_up:
                raise HostTimeout(self.name, step, f"{command} of {handler} {version} never reported an outcome")
            time.sleep(self.tuning.status_poll_s)
            result = None
        if result.get("skipped"):
            return result
        code, stderr = str(int(result.get("exitCode", -1))), str(result.get("stderrTail") or "")
        self._command_outcome(step, handler, version, command, timeout, bool(result.get("timedOut")), code, stderr)
        return result

    def health_gate(
        self, handler: str, version: str, seq: int, manifest: dict[str, Any], first: dict[str, Any] | None = None
    ) -> None:
        """Wait for a terminal status (and a fresh ready heartbeat when the handler reports one).
        ``first``: Get-HandlerStatus's answer from a batch, the first look."""
        wants_heartbeat = self._wants_heartbeat(manifest)
        deadline = time.monotonic() + self.conn.status_deadline_s
        last = "no status file yet"
        while True:
            result = first or self._script(
                "Get-HandlerStatus", {"Handler": handler, "Version": version, "SequenceNumber": seq}
            )
            first = None
            status = result.get("status")
            if result.get("statusError"):
                # a handler may be writing it right now: only a file that stays unreadable is invalid
                age = result.get("statusAgeSeconds")
                if age is not None and float(age) >= self.tuning.status_settle_s:
                    raise HandlerCommandFailed(
                        self.name, "health", str(result["statusError"]), None, INVALID_STATUS_CODE
                    )
                last = str(result["statusError"])
            elif result.get("statusPending"):
                last = str(result["statusPending"])
            elif status is not None:
                raw_beat = result.get("heartbeat") if wants_heartbeat else None
                beat = (int(raw_beat.get("ageSeconds", 0)), str(raw_beat.get("status", ""))) if raw_beat else None
                not_yet = self._not_yet_healthy(handler, version, status, status.get("message"), beat, wants_heartbeat)
                if not_yet is None:
                    return
                last = not_yet
            if time.monotonic() >= deadline:
                if result.get("statusError"):
                    raise HandlerCommandFailed(
                        self.name, "health", str(result["statusError"]), None, INVALID_STATUS_CODE
                    )
                raise self._unhealthy(handler, version, last)
            time.sleep(self.tuning.status_poll_s)
