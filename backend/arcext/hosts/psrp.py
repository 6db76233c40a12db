"""The ``psrp`` driver: drives a Windows host over PowerShell Remoting with pypsrp (>=0.9.1,<1.0).

The only PowerShell it sends is the project's own ``hosts/scripts/*.ps1`` files (composed with their
common block by :mod:`arcext.hosts.agent_scripts`), each as one
``add_script`` with ``add_parameters`` (values never enter the script text); every script ends with
one JSON document, and any error-stream entry is a failure. Library errors become the driver's error
taxonomy in exactly one place (:meth:`AgentScriptDriver._boundary`, with
:meth:`PsrpDriver._library_error` for pypsrp's own exceptions).

On the host it follows the VM-extension handler protocol (reference/remote-hosts.md §5):
stage the package (chunked upload sized from the max payload, SHA-256 verified, kept in a cache as
the last-known-good copy), copy the settings byte for byte, then old.disable → new.update →
old.uninstall → new.install → new.enable with per-command timeouts, and gate on the status file and
the heartbeat. Each handler step is journalled on the host, so after a dropped connection the driver
reconnects once and resumes from the journal. Rollback uses the same primitives.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from .agent_scripts import script_text
from .base import (
    ExtensionSpec,
    HandlerFailed,
    HostAuthError,
    HostDriverError,
    HostTimeout,
    HostUnreachable,
    InstalledExtension,
    IntegrityError,
    ProtocolError,
    RemoteScriptError,
    SessionLost,
    UpgradeRefused,
)
from .connections import HostConnection, extension_allowed
from .packages import PackageRef, PackageStore

log = logging.getLogger(__name__)
T = TypeVar("T")
#: a script's pipeline input: a function that makes the iterator of its items (called again when
#: the call is retried, so a package is read from disk again rather than held in memory)
Input = Callable[[], Iterator[str]] | None
#: how :meth:`AgentScriptDriver._boundary` discards the session after an error
FORGET = "forget"  # drop it without a word to the host (it stopped answering)
CLOSE = "close"  # best effort to close it on the host, then drop it
Mapped = tuple[HostDriverError, str | None]
#: the WS-Management fault for a shell (or command) the service no longer knows
SHELL_GONE = 0x8033805B

#: The agent scripts and the parameters the driver sends to each (tests check these against the
#: scripts' real param() blocks).
SCRIPT_PARAMETERS: dict[str, frozenset[str]] = {
    "Get-ExtensionState": frozenset({"Handler"}),
    "Receive-Package": frozenset({"Handler", "Version", "Sha256"}),
    "Expand-Package": frozenset({"Handler", "Version", "Sha256", "FilesJson"}),
    "Write-RuntimeSettings": frozenset({"Handler", "Version", "SequenceNumber", "ContentBase64"}),
    "Copy-RuntimeSettings": frozenset({"Handler", "FromVersion", "ToVersion"}),
    "Invoke-HandlerCommand": frozenset(
        {
            "Handler",
            "Version",
            "Command",
            "TimeoutSeconds",
            "OperationId",
            "Step",
            "Environment",
            "RunnerScript",
            "WaitSeconds",
            "After",
            "OnlyInState",
        }
    ),
    "Get-HandlerStatus": frozenset({"Handler", "Version", "SequenceNumber"}),
    "Remove-HandlerVersion": frozenset({"Handler", "Version", "PurgeCache"}),
    "Write-Journal": frozenset({"Handler", "ContentJson"}),
}

#: psrp only: the batch runner, which runs several agent scripts (their texts, sent with it) in one
#: pipeline, each in its own scope, stopping at the first error.
PSRP_SCRIPTS: dict[str, frozenset[str]] = {"Invoke-AgentBatch": frozenset({"Scripts", "CallsJson"})}

#: Scripts that run on the host but are never sent as a pipeline: Invoke-HandlerCommand.ps1 writes the
#: runner (its text is the RunnerScript parameter) and a scheduled task runs it as LocalSystem.
HOST_SCRIPTS: dict[str, frozenset[str]] = {"Invoke-HandlerRunner": frozenset({"RequestPath"})}

#: What the host scripts accept as names (the same patterns as their ValidatePattern attributes):
#: a handler is Publisher.Type, each dotted part letters, digits, '-' or '_'; a version is 1-4
#: dotted numbers. Anything else never reaches a host (data stored before the API checked names).
HANDLER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+")
NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")
VERSION = re.compile(r"\d{1,9}(\.\d{1,9}){0,3}")
#: files the host writes into a version folder itself; a package may not ship them
OWN_FILES = {"handlerenvironment.json", "handlerstate", "arcext.package.sha256"}

#: WALA's handler timeouts (seconds) and ExtensionErrorCodes per command.
DEFAULT_TIMEOUTS = {"install": 900, "update": 900, "disable": 900, "enable": 300, "uninstall": 300}
ERROR_CODES = {"install": 1007, "update": 1008, "enable": 1009, "disable": 1010, "uninstall": 1008}
TIMED_OUT_CODE = 1011
#: how long past its timeout a handler task may stay silent before the host records it as timed out
#: (Invoke-HandlerCommand.ps1's $graceSeconds)
HOST_TASK_GRACE_S = 120
INVALID_STATUS_CODE = INVALID = 1012
STATE_NAMES = {
    "Enabled": "enabled",
    "Installed": "disabled",
    "FailedUpgrade": "failed",
    "NotInstalled": "transitioning",
}


class PackageMissing(UpgradeRefused):
    """No package is published for the version the host needs."""

    code = "ExtensionPackageNotPublished"


class ExtensionBlocked(UpgradeRefused):
    """The machine's extensions allow/block list refuses this extension."""

    code = "ExtensionBlockedByHostPolicy"


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


def version_key(version: str) -> tuple[int, ...]:
    """Sort versions numerically ("1.10.0" after "1.9.0"); a non-numeric one sorts first."""
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (-1,)


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


class HandlerCommandFailed(HandlerFailed):
    """A handler command failed; ``wala_code`` is the VM-extension error code (1007-1012)."""

    def __init__(self, host: str, op: str, message: str, exit_code: int | None, wala_code: int) -> None:
        super().__init__(host, op, f"[{wala_code}] {message}", exit_code)
        self.wala_code = wala_code


@dataclass(frozen=True)
class DriverTuning:
    """Timing knobs; the defaults suit real hosts, tests shrink them."""

    status_poll_s: float = 2.0
    deadline_margin_s: float = 15.0
    reconnection_backoff: float = 0.1
    reconnect_attempts: int = 1
    # check the pool with is_alive() before reuse only when it sat idle this long: a pipeline reveals a
    # broken pool anyway (SessionLost, and the operation resumes from the host journal), so a check
    # before every pipeline only costs a round trip
    alive_check_after_s: float = 60.0
    host_wait_s: float = 30.0  # how long Invoke-HandlerCommand waits on the host for a step's outcome
    status_settle_s: float = 10.0  # a status file unreadable for this long (by its age) is invalid (1012)


def settings_document(spec: ExtensionSpec, conn: HostConnection) -> bytes:
    """RuntimeSettings\\<N>.settings for a fresh install. protectedSettings are encrypted to the host's
    certificate (CMS EnvelopedData) when the connection names one."""
    handler_settings: dict[str, Any] = {"publicSettings": spec.settings or {}}
    protected = spec.protected()
    if protected:
        raw = json.dumps(protected, separators=(",", ":")).encode()
        if conn.protected_settings_certificate_pem:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.serialization import pkcs7

            cert = x509.load_pem_x509_certificate(conn.protected_settings_certificate_pem.encode())
            envelope = (
                pkcs7.PKCS7EnvelopeBuilder().set_data(raw).add_recipient(cert).encrypt(serialization.Encoding.DER, [])
            )
            handler_settings["protectedSettings"] = base64.b64encode(envelope).decode()
            handler_settings["protectedSettingsCertThumbprint"] = cert.fingerprint(hashes.SHA1()).hex().upper()
        else:
            handler_settings["protectedSettings"] = base64.b64encode(raw).decode()
            handler_settings["protectedSettingsCertThumbprint"] = None
    document = {"runtimeSettings": [{"handlerSettings": handler_settings}]}
    return json.dumps(document, separators=(",", ":")).encode()


class AgentScriptDriver:
    """The VM-extension handler protocol on one Windows host, over one transport-neutral primitive:
    run one of the agent scripts with named parameters (and optional pipeline input) and get its one
    JSON document back. A subclass supplies the transport: :class:`PsrpDriver` (a PSRP runspace pool)
    or :class:`arcext.hosts.winrm.WinrmDriver` (a WinRS cmd shell); it implements ``_ensure_session``,
    ``_session``, ``_invoke``, ``_discard``, ``_upload_chunk_size`` and ``_library_error`` (its
    library's exceptions in the driver taxonomy; :meth:`_boundary` is the one place they are mapped)."""

    kind = "agent"  # the hostConnection driver name; also names the deadline threads

    def __init__(
        self,
        host: str,
        conn: HostConnection,
        packages: PackageStore,
        handlers: dict[str, str] | None = None,
        tuning: DriverTuning | None = None,
    ) -> None:
        self.name = host
        self.conn = conn
        self.packages = packages
        self.handlers = {k.lower(): v for k, v in (handlers or {}).items()}
        self.tuning = tuning or DriverTuning()
        self.scripts_run: list[str] = []

    def _with_deadline(self, op: str, seconds: float, fn: Callable[[], T]) -> T:
        """Run ``fn`` but give up after ``seconds``: a silent host cannot stall a job beyond it."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"{self.kind}-{self.name}-{op}", daemon=True)
        worker.start()
        worker.join(seconds)
        if worker.is_alive():
            self._discard(close=False)
            raise HostTimeout(self.name, op, f"no answer within the driver's deadline of {seconds:.0f} s")
        if "error" in box:
            raise box["error"]
        value: T = box["value"]
        return value

    # ============================================================================================
    # The one boundary where a library's errors become the driver's taxonomy
    # ============================================================================================
    def _boundary(self, op: str, fn: Callable[[], T], opened: bool) -> T:
        """Run ``fn`` (one library call); map what it raises to the taxonomy. The session is
        discarded only if it is still the one ``fn`` used: a late failure of a call the deadline
        abandoned must not discard the session its successor opened."""
        session = self._session()
        try:
            return fn()
        except HostDriverError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped below; anything unmapped is re-raised as is
            mapped = self._library_error(op, exc, opened) or self._requests_error(op, exc, opened)
            if mapped is None:
                raise
            error, discard = mapped
            if discard is not None and session is not None:  # (a failed connect cleans up itself)
                self._discard(close=discard == CLOSE, only=session)
            raise error from None

    def _requests_error(self, op: str, exc: Exception, opened: bool) -> Mapped | None:
        """The HTTP layer (requests), the same under both libraries."""
        import requests

        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return HostUnreachable(self.name, op, "connection timed out"), None
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return HostTimeout(self.name, op, "the host stopped answering (read timeout)"), FORGET
        if isinstance(exc, requests.exceptions.SSLError):
            return HostUnreachable(self.name, op, f"TLS failed: {exc}"), None
        if isinstance(exc, requests.exceptions.RequestException):  # ConnectionError, a reset mid-body, ...
            if opened:
                return SessionLost(self.name, op, f"the connection dropped ({type(exc).__name__})"), CLOSE
            return HostUnreachable(self.name, op, f"cannot connect ({type(exc).__name__})"), CLOSE
        return None

    # ============================================================================================
    # The transport (a subclass provides it)
    # ============================================================================================
    def _ensure_session(self) -> None:
        """Open the host session unless it is open (and usable)."""
        raise NotImplementedError

    def _session(self) -> object | None:
        """The open session (its identity is what :meth:`_boundary` compares), or None."""
        raise NotImplementedError

    def _library_error(self, op: str, exc: Exception, opened: bool) -> Mapped | None:
        """The driver error for one of the library's own exceptions (and how to discard the
        session: None, FORGET or CLOSE); None for anything else."""
        raise NotImplementedError

    def _discard(self, close: bool = True, only: object | None = None) -> None:
        """Forget the session; with ``close``, best effort to close it on the host first. With
        ``only``, do nothing unless ``only`` is still the open session."""
        raise NotImplementedError

    def _invoke(self, name: str, params: dict[str, Any], deadline: float, input_: Input) -> list[Any]:
        """Run one agent script on the open session within ``deadline`` seconds; its output items.
        Raises RemoteScriptError when the script reported any error."""
        return self._invoke_many([(name, params)], deadline, input_)[0]

    def _invoke_many(self, calls: list[tuple[str, dict[str, Any]]], deadline: float, input_: Input) -> list[list[Any]]:
        """Run several agent scripts in order in ONE pipeline (one command on the transport), each in
        its own scope with its own parameters, stopping at the first that fails; ``input_`` is the
        first script's pipeline input. The output items of each. Raises RemoteScriptError when any
        script reported an error (the later ones did not run)."""
        raise NotImplementedError

    def _upload_chunk_size(self) -> int:
        """Package bytes per pipeline-input chunk (sized from the transport's envelope)."""
        raise NotImplementedError

    def close(self) -> None:
        self._discard()

    # ============================================================================================
    # Running one agent script
    # ============================================================================================
    def _script(
        self, name: str, params: dict[str, Any], deadline_s: float | None = None, input_: Input = None
    ) -> dict[str, Any]:
        return self._scripts([(name, params)], deadline_s, input_)[0]

    def _scripts(
        self,
        calls: list[tuple[str, dict[str, Any]]],
        deadline_s: float | None = None,
        input_: Input = None,
    ) -> list[dict[str, Any]]:
        """Run the scripts in order in one pipeline; each one's JSON document."""
        for name, params in calls:
            if set(params) - SCRIPT_PARAMETERS[name]:
                raise ValueError(f"{name}.ps1 takes no parameter(s) {sorted(set(params) - SCRIPT_PARAMETERS[name])}")
        self._ensure_session()
        self.scripts_run.extend(name for name, _ in calls)
        deadline = deadline_s or (2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s)
        if len(calls) == 1:
            outputs = [self._invoke(calls[0][0], calls[0][1], deadline, input_)]
        else:
            outputs = self._invoke_many(calls, deadline, input_)
        return [self._document(name, output) for (name, _), output in zip(calls, outputs, strict=True)]

    def _document(self, name: str, output: list[Any]) -> dict[str, Any]:
        if not output:
            raise ProtocolError(self.name, name, "the script returned no JSON document")
        try:
            result = json.loads(str(output[-1]))
        except ValueError:
            raise ProtocolError(self.name, name, "the script's last output is not JSON") from None
        if not isinstance(result, dict):
            raise ProtocolError(self.name, name, "the script's JSON document is not an object")
        return result

    # ============================================================================================
    # Primitives
    # ============================================================================================
    def host_state(self, handler: str) -> dict[str, Any]:
        return self._script("Get-ExtensionState", {"Handler": handler})

    @staticmethod
    def _versions(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {v["version"]: v for v in state.get("versions") or []}

    def _package(self, spec: ExtensionSpec, version: str) -> PackageRef:
        ref = self.packages.get(spec.publisher, spec.type, version)
        if ref is None:
            raise PackageMissing(
                self.name, "stage", f"no package is attached to {spec.publisher}/{spec.type} {version}"
            )
        return ref

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
        if result.get("timedOut"):
            raise HandlerCommandFailed(
                self.name, step, f"{command} of {handler} {version} timed out after {timeout} s", None, TIMED_OUT_CODE
            )
        exit_code = int(result.get("exitCode", -1))
        if exit_code != 0:
            tail = (result.get("stderrTail") or "").strip().splitlines()
            raise HandlerCommandFailed(
                self.name,
                step,
                f"{command} of {handler} {version} exited with {exit_code}" + (f": {tail[-1]}" if tail else ""),
                exit_code,
                ERROR_CODES[command],
            )
        return result

    def health_gate(
        self, handler: str, version: str, seq: int, manifest: dict[str, Any], first: dict[str, Any] | None = None
    ) -> None:
        """Wait for a terminal status (and a fresh ready heartbeat when the handler reports one).
        ``first``: Get-HandlerStatus's answer from a batch, the first look."""
        wants_heartbeat = manifest.get("reportHeartbeat") in (True, "true", "True")
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
                    raise HandlerCommandFailed(self.name, "health", str(result["statusError"]), None, INVALID)
                last = str(result["statusError"])
            elif result.get("statusPending"):
                last = str(result["statusPending"])
            elif status is not None:
                value = str(status.get("status", "")).lower()
                if value == "error":
                    raise HandlerCommandFailed(
                        self.name, "health", f"{handler} {version} reports error: {status.get('message')}", None, 1009
                    )
                if value in ("success", "warning"):
                    if not wants_heartbeat:
                        return
                    beat = result.get("heartbeat")
                    if beat is None:
                        last = "status success but no heartbeat yet"
                    elif int(beat.get("ageSeconds", 0)) > self.conn.heartbeat_max_age_s:
                        last = f"heartbeat is stale ({beat.get('ageSeconds')} s old; the handler is unresponsive)"
                    elif str(beat.get("status", "")).lower() != "ready":
                        last = f"heartbeat says {beat.get('status')}"
                    else:
                        return
                else:
                    last = f"status is {value or 'empty'}"
            if time.monotonic() >= deadline:
                if result.get("statusError"):
                    raise HandlerCommandFailed(self.name, "health", str(result["statusError"]), None, INVALID)
                raise HandlerCommandFailed(
                    self.name,
                    "health",
                    f"{handler} {version} not healthy after {self.conn.status_deadline_s} s: {last}",
                    None,
                    1009,
                )
            time.sleep(self.tuning.status_poll_s)

    # ============================================================================================
    # HostDriver
    # ============================================================================================
    def _handler_of(self, name: str) -> str | None:
        return self.handlers.get(name.lower())

    def _check_policy(self, spec: ExtensionSpec, op: str) -> None:
        reason = extension_allowed(self.conn, spec.publisher, spec.type)
        if reason is not None:
            raise ExtensionBlocked(self.name, op, reason)

    def _resumable(self, op: str, fn: Callable[[], None]) -> None:
        """Run a journalled operation; after a dropped session reconnect and resume from the journal."""
        attempts = 0
        while True:
            try:
                fn()
                return
            except SessionLost as exc:
                attempts += 1
                if attempts > self.tuning.reconnect_attempts:
                    raise
                log.warning(
                    "%s on %s lost its session (%s); reconnecting to resume from the journal",
                    op,
                    self.name,
                    exc.message,
                )
                self._discard()

    def installed(self, name: str) -> InstalledExtension | None:
        handler = self._handler_of(name)
        if handler is None:
            return None
        check_handler(self.name, "installed", handler)
        state = self.host_state(handler)
        versions = self._versions(state)
        if not versions:
            return None
        enabled = [v for v in versions.values() if v["state"] == "Enabled"]
        chosen = enabled[0] if enabled else max(versions.values(), key=lambda v: version_key(str(v["version"])))
        return InstalledExtension(name, chosen["version"], STATE_NAMES.get(chosen["state"], "transitioning"))

    def _start(self, handler: str, kind: str, state: dict[str, Any], **fields: Any) -> str:
        op_id, call = self._start_call(handler, kind, state, **fields)
        if call is not None:
            self._script(*call)
        return op_id

    def _start_call(
        self, handler: str, kind: str, state: dict[str, Any], **fields: Any
    ) -> tuple[str, tuple[str, dict[str, Any]] | None]:
        """The operation id, and the Write-Journal call that starts it (None when it resumes the
        unfinished operation the host journal records)."""
        journal = state.get("journal")
        if (
            journal
            and not journal.get("finished")
            and journal.get("kind") == kind
            and all(journal.get(k) == v for k, v in fields.items())
        ):
            log.info(
                "Resuming %s of %s on %s from the host journal %s", kind, handler, self.name, journal["operationId"]
            )
            return str(journal["operationId"]), None
        op_id = str(uuid.uuid4())
        document = {
            "operationId": op_id,
            "kind": kind,
            **fields,
            "startedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "finished": False,
            "steps": {},
        }
        return op_id, ("Write-Journal", {"Handler": handler, "ContentJson": json.dumps(document)})

    def _finish(self, handler: str, op_id: str, kind: str, outcome: str, **fields: Any) -> None:
        self._script(*self._finish_call(handler, op_id, kind, outcome, **fields))

    @staticmethod
    def _finish_call(handler: str, op_id: str, kind: str, outcome: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        document = {"operationId": op_id, "kind": kind, **fields, "finished": True, "outcome": outcome, "steps": {}}
        return "Write-Journal", {"Handler": handler, "ContentJson": json.dumps(document)}

    @staticmethod
    def _done(state: dict[str, Any], op_id: str, step: str) -> bool:
        journal = state.get("journal") or {}
        return journal.get("operationId") == op_id and step in (journal.get("steps") or {})

    def _settings_seq(self, handler: str, version: str) -> int:
        versions = self._versions(self.host_state(handler))
        seq = versions.get(version, {}).get("sequenceNumber")
        if seq is None:
            raise HandlerCommandFailed(self.name, "settings", f"{handler} {version} has no settings file", None, 1009)
        return int(seq)

    # --- install (extension create / reconfigure) ----------------------------------------------
    def install(self, spec: ExtensionSpec, version: str) -> None:
        check_names(self.name, "install", spec.publisher, spec.type, version)
        self._check_policy(spec, "install")
        self._ensure_session()
        self._resumable("install", lambda: self._install_once(spec, version))

    def _install_once(self, spec: ExtensionSpec, version: str) -> None:
        handler = spec.handler
        self.handlers[spec.name.lower()] = handler
        state = self.host_state(handler)
        settings = settings_document(spec, self.conn)
        op_id = self._start(handler, "install", state, version=version)
        ref = self._package(spec, version)
        manifest = self.stage(handler, version, ref, state.get("cached") or [])
        state = self.host_state(handler)
        current = self._versions(state).get(version)
        seq = current.get("sequenceNumber") if current else None
        if current and current["state"] == "Enabled" and not self._done(state, op_id, "install.enable"):
            seq = (seq or 0) + 1  # a new goal state for a running extension: next sequence number
            self._script(
                "Write-RuntimeSettings",
                {
                    "Handler": handler,
                    "Version": version,
                    "SequenceNumber": seq,
                    "ContentBase64": base64.b64encode(settings).decode(),
                },
            )
        elif seq is None:
            seq = 0
            self._script(
                "Write-RuntimeSettings",
                {
                    "Handler": handler,
                    "Version": version,
                    "SequenceNumber": seq,
                    "ContentBase64": base64.b64encode(settings).decode(),
                },
            )
        if (current and current["state"] == "NotInstalled") or self._done(state, op_id, "install.install"):
            self.handler_command(op_id, "install.install", handler, version, "install")
        self.handler_command(op_id, "install.enable", handler, version, "enable")
        self.health_gate(handler, version, int(seq), manifest)
        self._finish(handler, op_id, "install", "succeeded", version=version)

    # --- upgrade -----------------------------------------------------------------------------------
    def upgrade(self, spec: ExtensionSpec, from_version: str, to_version: str) -> None:
        check_names(self.name, "upgrade", spec.publisher, spec.type, from_version, to_version)
        self._check_policy(spec, "upgrade")
        ref = self._package(spec, to_version)
        self._ensure_session()
        self._resumable("upgrade", lambda: self._upgrade_once(spec, from_version, to_version, ref))

    def _upgrade_once(self, spec: ExtensionSpec, old: str, new: str, ref: PackageRef) -> None:
        """The upgrade in four pipelines (plus the upload when the host does not cache the package):
        the host state; [start the journal, extract, settings, old.disable → new.update →
        old.uninstall]; [remove the old folder, new.install → new.enable, the first status look];
        [purge the old package, finish the journal]. The handler steps of one pipeline are chained on
        the host (each starts only after the one before succeeded, each journalled before it is
        taken, each waited for on the host); the driver reads every answer in order and stops at the
        first failure, so nothing after a failed step runs."""
        handler = spec.handler
        self.handlers[spec.name.lower()] = handler
        state = self.host_state(handler)
        versions = self._versions(state)
        old_v, new_v = versions.get(old), versions.get(new)
        op_id, start = self._start_call(handler, "upgrade", state, fromVersion=old, toVersion=new)
        if new not in (state.get("cached") or []):
            self.upload(handler, new, ref)
        calls: list[tuple[str, dict[str, Any]]] = [start] if start is not None else []
        expand = len(calls)
        calls.append(self._expand_call(handler, new, ref))
        # settings: the old version's files, byte for byte (same N); a fresh file only if the old is gone
        # (staging does not touch either version's settings, so the state read before it decides)
        seqs = [int(v["sequenceNumber"]) for v in (old_v, new_v) if v and v.get("sequenceNumber") is not None]
        if old_v is not None and old_v.get("sequenceNumber") is not None:
            calls.append(("Copy-RuntimeSettings", {"Handler": handler, "FromVersion": old, "ToVersion": new}))
        elif new_v is None or new_v.get("sequenceNumber") is None:
            calls.append(
                (
                    "Write-RuntimeSettings",
                    {
                        "Handler": handler,
                        "Version": new,
                        "SequenceNumber": 0,
                        "ContentBase64": base64.b64encode(settings_document(spec, self.conn)).decode(),
                    },
                )
            )
            seqs.append(0)
        seq = max(seqs)
        env = {"AZURE_GUEST_AGENT_UPDATING_FROM_VERSION": old, "VERSION": new}
        steps: list[tuple[str, str, str, dict[str, Any]]] = []  # (step, version, command, params)

        def chain(step: str, version: str, command: str, **kw: Any) -> None:
            after = steps[-1][0] if steps else None
            steps.append(
                (step, version, command, self.step_params(op_id, step, handler, version, command, after=after, **kw))
            )

        if (old_v is not None and old_v["state"] == "Enabled") or self._done(state, op_id, "old.disable"):
            chain("old.disable", old, "disable")
        chain("new.update", new, "update", env=env)
        if old_v is not None or self._done(state, op_id, "old.uninstall"):
            chain("old.uninstall", old, "uninstall")
        results = self._scripts(
            calls + [("Invoke-HandlerCommand", p) for *_, p in steps],
            deadline_s=self._batch_deadline([p for *_, p in steps]),
        )
        manifest: dict[str, Any] = results[expand].get("handlerManifest") or {}
        self._outcomes(op_id, handler, steps, results[len(calls) :])

        # WALA removes the old directory here; its package stays in the host cache (the LKG copy)
        calls = [("Remove-HandlerVersion", {"Handler": handler, "Version": old})]
        steps = []
        if manifest.get("updateMode", "UpdateWithInstall") != "UpdateWithoutInstall":
            # the host decides: only a version update left NotInstalled (or a journalled step) is installed
            chain("new.install", new, "install", only_in_state="NotInstalled")
        chain("new.enable", new, "enable")
        status_call = ("Get-HandlerStatus", {"Handler": handler, "Version": new, "SequenceNumber": seq})
        results = self._scripts(
            calls + [("Invoke-HandlerCommand", p) for *_, p in steps] + [status_call],
            deadline_s=self._batch_deadline([p for *_, p in steps]),
        )
        self._outcomes(op_id, handler, steps, results[1:-1])
        # the status look in the batch counts only if enable had finished when it was taken
        enable = results[-2]
        enabled_in_batch = not enable.get("pending") and not enable.get("blocked")
        self.health_gate(handler, new, seq, manifest, first=results[-1] if enabled_in_batch else None)
        # healthy: the new version is now the last known good; the old cached package can go
        self._scripts(
            [
                ("Remove-HandlerVersion", {"Handler": handler, "Version": old, "PurgeCache": True}),
                self._finish_call(handler, op_id, "upgrade", "succeeded", fromVersion=old, toVersion=new),
            ]
        )

    def _batch_deadline(self, steps: list[dict[str, Any]]) -> float:
        waits = sum(float(p.get("WaitSeconds") or 0) for p in steps)
        return waits + 2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s

    def _outcomes(
        self, op_id: str, handler: str, steps: list[tuple[str, str, str, dict[str, Any]]], results: list[dict[str, Any]]
    ) -> None:
        """The answers of chained steps, in order: each polled to its outcome (a step the host
        blocked because the one before was still pending is asked again), the first failure raised."""
        for (step, version, command, params), result in zip(steps, results, strict=True):
            self.handler_command(op_id, step, handler, version, command, params=params, first=result)

    # --- rollback ----------------------------------------------------------------------------------
    def rollback(self, spec: ExtensionSpec, failed_version: str, good_version: str) -> None:
        check_names(self.name, "rollback", spec.publisher, spec.type, failed_version, good_version)
        self._ensure_session()
        self._resumable("rollback", lambda: self._rollback_once(spec, failed_version, good_version))

    def _step_fn(self, op_id: str, step: str, handler: str, version: str, command: str) -> Callable[[], Any]:
        return lambda: self.handler_command(op_id, step, handler, version, command)

    def _ignore(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except (HandlerFailed, RemoteScriptError) as exc:
            log.info("Rollback on %s: ignoring %s", self.name, exc.message)

    def _rollback_once(self, spec: ExtensionSpec, bad: str, good: str) -> None:
        handler = spec.handler
        state = self.host_state(handler)
        op_id = self._start(handler, "rollback", state, fromVersion=bad, toVersion=good)
        versions = self._versions(state)
        bad_v = versions.get(bad)
        if bad != good and bad_v is not None:
            if bad_v["state"] == "Enabled" or self._done(state, op_id, "rollback.new.disable"):
                self._ignore(lambda: self.handler_command(op_id, "rollback.new.disable", handler, bad, "disable"))
            state = self.host_state(handler)
            bad_v = self._versions(state).get(bad) or {}
            if bad_v.get("state") in ("Installed", "FailedUpgrade") or self._done(
                state, op_id, "rollback.new.uninstall"
            ):
                self._ignore(lambda: self.handler_command(op_id, "rollback.new.uninstall", handler, bad, "uninstall"))
        state = self.host_state(handler)
        good_v = self._versions(state).get(good)
        ref = self.packages.get(spec.publisher, spec.type, good)
        manifest: dict[str, Any] = dict(ref.manifest) if ref is not None else {}
        if good_v is None:
            if ref is None:
                raise PackageMissing(self.name, "rollback", f"no package is attached to {handler} {good}")
            manifest = self.stage(handler, good, ref, state.get("cached") or [])  # from the host cache if there
        state = self.host_state(handler)
        versions = self._versions(state)
        good_v = versions.get(good) or {}
        if good_v.get("sequenceNumber") is None:
            if bad in versions and versions[bad].get("sequenceNumber") is not None:
                self._script("Copy-RuntimeSettings", {"Handler": handler, "FromVersion": bad, "ToVersion": good})
            else:
                self._script(
                    "Write-RuntimeSettings",
                    {
                        "Handler": handler,
                        "Version": good,
                        "SequenceNumber": 0,
                        "ContentBase64": base64.b64encode(settings_document(spec, self.conn)).decode(),
                    },
                )
        if bad != good:
            self._script("Remove-HandlerVersion", {"Handler": handler, "Version": bad, "PurgeCache": True})
        if good_v.get("state") == "NotInstalled" or self._done(state, op_id, "rollback.lkg.install"):
            self.handler_command(op_id, "rollback.lkg.install", handler, good, "install")
        if good_v.get("state") != "Enabled" or self._done(state, op_id, "rollback.lkg.enable"):
            self.handler_command(op_id, "rollback.lkg.enable", handler, good, "enable")
        self.health_gate(handler, good, self._settings_seq(handler, good), manifest)
        self._finish(handler, op_id, "rollback", "succeeded", fromVersion=bad, toVersion=good)

    # --- remove ------------------------------------------------------------------------------------
    def remove(self, name: str) -> None:
        handler = self._handler_of(name)
        if handler is None:
            return
        check_handler(self.name, "remove", handler)
        self._ensure_session()
        self._resumable("remove", lambda: self._remove_once(handler))

    def _remove_once(self, handler: str) -> None:
        state = self.host_state(handler)
        versions = self._versions(state)
        if not versions and not state.get("cached"):
            return
        op_id = self._start(handler, "remove", state)
        for version, v in versions.items():
            if v["state"] == "Enabled" or self._done(state, op_id, f"remove.{version}.disable"):
                self._ignore(self._step_fn(op_id, f"remove.{version}.disable", handler, version, "disable"))
            state = self.host_state(handler)
            current = self._versions(state).get(version) or {}
            if current.get("state") in ("Installed", "FailedUpgrade") or self._done(
                state, op_id, f"remove.{version}.uninstall"
            ):
                self.handler_command(op_id, f"remove.{version}.uninstall", handler, version, "uninstall")
            self._script("Remove-HandlerVersion", {"Handler": handler, "Version": version, "PurgeCache": True})
        for version in state.get("cached") or []:
            self._script("Remove-HandlerVersion", {"Handler": handler, "Version": version, "PurgeCache": True})
        self._finish(handler, op_id, "remove", "succeeded")


class PsrpDriver(AgentScriptDriver):
    """HostDriver over one Windows host; one runspace pool per driver (= per host per job)."""

    kind = "psrp"
    # per instance once assigned; these are the values before the first connection
    _wsman: Any = None
    _pool: Any = None
    _last_used = 0.0
    pools_opened = 0

    # ============================================================================================
    # pypsrp's errors in the driver's taxonomy (AgentScriptDriver._boundary is the one place)
    # ============================================================================================
    def _session(self) -> object | None:
        session: object | None = self._pool
        return session

    def _library_error(self, op: str, exc: Exception, opened: bool) -> Mapped | None:
        from pypsrp.exceptions import (
            AuthenticationError,
            InvalidPipelineStateError,
            InvalidPSRPOperation,
            InvalidRunspacePoolStateError,
            WinRMError,
            WinRMTransportError,
            WSManFaultError,
        )

        if isinstance(exc, AuthenticationError):
            return HostAuthError(self.name, op, f"credentials were refused ({exc})"), None
        if isinstance(exc, WSManFaultError):
            if exc.code == SHELL_GONE:
                return SessionLost(self.name, op, "the remote shell is gone (0x8033805B)"), FORGET
            return ProtocolError(self.name, op, f"WSManFault {exc.code}: {exc.reason}"), None
        if isinstance(exc, InvalidPSRPOperation):
            return SessionLost(self.name, op, f"the runspace pool broke: {exc}"), CLOSE
        if isinstance(exc, (InvalidRunspacePoolStateError, InvalidPipelineStateError)):
            return SessionLost(self.name, op, f"the runspace pool is not usable: {exc}"), CLOSE
        if isinstance(exc, WinRMTransportError):
            if exc.code == 401:
                return HostAuthError(self.name, op, "credentials were refused (HTTP 401)"), None
            return ProtocolError(self.name, op, f"HTTP {exc.code} from the WinRM service"), None
        if isinstance(exc, WinRMError):
            return ProtocolError(self.name, op, str(exc)), None
        if isinstance(exc, ValueError):  # pypsrp refuses an auth/encryption combination before sending anything
            if not opened:
                return HostAuthError(self.name, op, f"invalid connection settings: {exc}"), None
            return ProtocolError(self.name, op, f"unexpected answer: {exc}"), None
        return None

    # ============================================================================================
    # Connection and runspace pool
    # ============================================================================================
    def _new_wsman(self) -> Any:
        from pypsrp.wsman import WSMan

        c = self.conn
        kwargs: dict[str, Any] = {
            "port": c.port,
            "ssl": c.ssl,
            "auth": c.auth,
            "username": c.username,
            "password": c.password,
            "cert_validation": c.ca_certificate_path or c.cert_validation,
            "connection_timeout": c.connection_timeout_s,
            "operation_timeout": c.operation_timeout_s,
            "read_timeout": c.operation_timeout_s + 10,
            "reconnection_retries": 0,
            "reconnection_backoff": self.tuning.reconnection_backoff,
            "encryption": "auto",
        }
        if c.auth == "certificate":
            kwargs.pop("username")
            kwargs.pop("password")
            kwargs["certificate_pem"] = c.certificate_pem
            kwargs["certificate_key_pem"] = c.certificate_key_pem
            if c.certificate_key_password:
                kwargs["certificate_key_password"] = c.certificate_key_password
        return WSMan(c.address, **kwargs)

    def _open_pool(self) -> Any:
        from pypsrp.powershell import RunspacePool

        def opening() -> tuple[Any, Any]:
            wsman = self._new_wsman()
            try:
                wsman.update_max_payload_size()
                pool = RunspacePool(wsman, configuration_name=self.conn.configuration_name)
                pool.open()
            except BaseException:
                quietly(wsman.transport.close)
                raise
            return wsman, pool

        deadline = self.conn.connection_timeout_s + 2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s
        wsman, pool = self._with_deadline("connect", deadline, lambda: self._boundary("connect", opening, opened=False))
        self._wsman = wsman
        self.pools_opened += 1
        return pool

    def _ensure_pool(self) -> Any:
        if self._pool is not None:
            idle = time.monotonic() - self._last_used
            if idle >= self.tuning.alive_check_after_s:
                pool = self._pool
                alive = False
                try:
                    alive = bool(
                        self._with_deadline(
                            "is_alive",
                            self.conn.operation_timeout_s + self.tuning.deadline_margin_s,
                            lambda: self._boundary("is_alive", lambda: pool.is_alive(timeout=5), opened=True),
                        )
                    )
                except HostDriverError:
                    alive = False
                if not alive:
                    log.info("Runspace pool on %s is gone; opening a new one", self.name)
                    self._discard()
        if self._pool is None:
            self._pool = self._open_pool()
        self._last_used = time.monotonic()
        return self._pool

    def _discard(self, close: bool = True, only: object | None = None) -> None:
        """Forget the pool (and its HTTP session); best effort to close it on the host."""
        if only is not None and only is not self._pool:
            return  # an abandoned call failed late: its pool is already gone, keep the current one
        pool, wsman = self._pool, self._wsman
        self._pool = None
        self._wsman = None
        if close and pool is not None:
            quietly(pool.close)  # the session may already be broken; closing is courtesy
        if wsman is not None:
            quietly(wsman.transport.close)

    def _ensure_session(self) -> None:
        self._ensure_pool()

    def _upload_chunk_size(self) -> int:
        max_payload = int(getattr(self._wsman, "max_payload_size", 153600) or 153600)
        return max(3, (max_payload - 82) // 4 * 3)

    # ============================================================================================
    # Running one agent script
    # ============================================================================================
    def _invoke_many(self, calls: list[tuple[str, dict[str, Any]]], deadline: float, input_: Input) -> list[list[Any]]:
        if len(calls) == 1:
            return [self._pipeline(calls[0][0], calls[0][1], deadline, input_)]
        if input_ is not None:
            raise ValueError("a batch takes no pipeline input")
        # several scripts: one pipeline of Invoke-AgentBatch.ps1, which runs them in order (each in its
        # own scope) and stops at the first error; its one document holds every script's output
        label = "+".join(name for name, _ in calls)
        batch = self._pipeline(
            "Invoke-AgentBatch",
            {
                "Scripts": {name: script_text(name) for name, _ in calls},
                "CallsJson": json.dumps([{"script": name, "parameters": params} for name, params in calls]),
            },
            deadline,
            None,
        )
        try:
            envelope = json.loads(str(batch[-1])) if batch else None
        except ValueError:
            envelope = None
        if (
            not isinstance(envelope, dict)
            or not isinstance(envelope.get("outputs"), list)
            or not isinstance(envelope.get("errors"), list)
        ):
            raise ProtocolError(self.name, label, "the batch's output is not its JSON document")
        if envelope["errors"]:
            raise RemoteScriptError(self.name, label, "; ".join(str(e) for e in envelope["errors"]))
        outputs = [list(o) if isinstance(o, list) else [o] for o in envelope["outputs"]]
        if len(outputs) != len(calls):
            raise ProtocolError(self.name, label, f"the batch ran {len(outputs)} of {len(calls)} scripts")
        return outputs

    def _pipeline(self, name: str, params: dict[str, Any], deadline: float, input_: Input) -> list[Any]:
        from pypsrp.powershell import PowerShell

        pool = self._pool
        text = script_text(name)

        def run() -> tuple[list[Any], bool, list[Any]]:
            with PowerShell(pool) as ps:
                # its own scope: a dot-sourced script would leave its (typed) variables in the
                # pool's global scope for every later script of the job (issue 17, item 1)
                ps.add_script(text, use_local_scope=True)
                ps.add_parameters(params)
                # a generator: pypsrp sends one PipelineInput per chunk
                ps.invoke(input=input_() if input_ is not None else None)
                return list(ps.output), bool(ps.had_errors), list(ps.streams.error)

        output, had_errors, error_stream = self._with_deadline(
            name, deadline, lambda: self._boundary(name, run, opened=True)
        )
        self._last_used = time.monotonic()
        if had_errors or error_stream:
            detail = "; ".join(str(e) for e in error_stream) or "the pipeline failed"
            raise RemoteScriptError(self.name, name, detail)
        return output


def quietly(fn: Callable[[], Any]) -> None:
    """Call ``fn`` and ignore what it raises (closing a session that may already be broken)."""
    try:
        fn()
    except Exception:  # noqa: BLE001 - closing is courtesy
        pass


def package_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
