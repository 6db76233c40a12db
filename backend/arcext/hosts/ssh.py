"""The ``ssh`` driver: drives a Linux host over SSH with paramiko, as the Azure Linux guest agent would.

On the host it follows WALinuxAgent's handler layout (reference/remote-hosts.md §5):
``<root>/var/lib/waagent/<Publisher>.<Type>-<version>/`` with HandlerManifest.json,
HandlerEnvironment.json, ``config/<N>.settings``, ``config/HandlerState``, ``status/<N>.status`` and
``heartbeat.log``, and WALA's upgrade order old.disable → new.update → old.uninstall → new.install
(unless ``updateMode`` is UpdateWithoutInstall) → new.enable, gated on the status file and the heartbeat.
The last-known-good package stays in a host cache until the new version is healthy; every handler
command is journalled on the host and runs detached from the SSH session, so after a dropped
connection the driver reconnects once and resumes from the journal (a command still running is
waited for, one that finished is not run again). Rollback uses the same primitives.

The only code it runs on the host is ``hosts/sh/agent.sh`` (POSIX sh), sent as the ``sh -c``
script text with every value as a separate, shell-quoted argument or on stdin; nothing a user
supplies is ever put into the script. A non-root user reaches root with ``sudo -n``. The host key is
pinned (``hostKeyFingerprint``, OpenSSH's ``SHA256:...``) or, only with ``trustOnFirstUse``,
recorded on first contact in the data directory's ``ssh_known_hosts``; a mismatch is refused.

Only :mod:`arcext.hosts.base` is assumed of the rest of the driver package, plus the connection
settings, the package store and the allow/block list check.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import io
import json
import logging
import re
import shlex
import socket
import stat
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

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
from .ssh_settings import load_private_key

log = logging.getLogger(__name__)

#: WALA's handler timeouts (seconds) and ExtensionErrorCodes per command.
DEFAULT_TIMEOUTS = {"install": 900, "update": 900, "disable": 900, "enable": 300, "uninstall": 300}
ERROR_CODES = {"install": 1007, "update": 1008, "enable": 1009, "disable": 1010, "uninstall": 1008}
TIMED_OUT_CODE = 1011
INVALID_STATUS_CODE = 1012
STATE_NAMES = {
    "Enabled": "enabled",
    "Installed": "disabled",
    "FailedUpgrade": "failed",
    "NotInstalled": "transitioning",
}
_KNOWN_HOSTS_LOCK = threading.Lock()
#: process-wide counters (connections, channels, per agent operation) for scripts/bench_hosts.py --driver ssh
STATS: collections.Counter[str] = collections.Counter()
_STATS_LOCK = threading.Lock()
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")  # no leading "." or "-"
VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,3}$")
ROOT_RE = re.compile(r"^/[A-Za-z0-9/._-]*$")
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024


def agent_text() -> str:
    return (resources.files("arcext.hosts") / "sh" / "agent.sh").read_text(encoding="utf-8")


def fingerprint(key_bytes: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob (``ssh-keygen -lf`` prints the same)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_bytes).digest()).decode().rstrip("=")


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value) or ".." in value:
        raise UpgradeRefused("", "validate", f"invalid {what} '{value}': letters, digits, '.', '-', '_' only")
    return value


def check_version(value: str) -> str:
    if not VERSION_RE.match(value):
        raise UpgradeRefused("", "validate", f"invalid version '{value}': dotted numbers only")
    return value


class PackageMissing(UpgradeRefused):
    code = "ExtensionPackageNotPublished"


class ExtensionBlocked(UpgradeRefused):
    code = "ExtensionBlockedByHostPolicy"


class HostKeyMismatch(HostAuthError):
    """The host presented a key other than the pinned one: possibly someone in the middle."""

    code = "HostKeyMismatch"


class SudoRefused(HostAuthError):
    code = "HostSudoRefused"


class HandlerCommandFailed(HandlerFailed):
    """A handler command failed; ``wala_code`` is the VM-extension error code (1007-1012)."""

    def __init__(self, host: str, op: str, message: str, exit_code: int | None, wala_code: int) -> None:
        super().__init__(host, op, f"[{wala_code}] {message}", exit_code)
        self.wala_code = wala_code


@dataclass(frozen=True)
class SshTuning:
    """Timing knobs; the defaults suit real hosts, tests shrink them."""

    status_poll_s: float = 2.0
    deadline_margin_s: float = 15.0
    reconnect_attempts: int = 1


def package_tar(ref: PackageRef) -> bytes:
    """The package zip as a deterministic tar for ``tar -x`` on the host (minimal hosts have no unzip).
    Refuses members that would leave the handler directory (absolute, '..', links, devices)."""
    out = io.BytesIO()
    total = 0
    with zipfile.ZipFile(ref.path) as zf, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            name = info.filename
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if name.startswith("/") or "\\" in name or ".." in parts or not parts:
                raise UpgradeRefused("", "stage", f"the package has an unsafe member name '{name}'")
            mode = (info.external_attr >> 16) & 0o177777
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # symlinks, devices, fifos
                raise UpgradeRefused("", "stage", f"the package member '{name}' is not a plain file or folder")
            ti = tarfile.TarInfo("/".join(parts))
            ti.mtime = 0
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if info.is_dir():
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
                continue
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise UpgradeRefused("", "stage", "the package unpacks to more than 1 GiB")
            data = zf.read(info)
            ti.size = len(data)
            ti.mode = (stat.S_IMODE(mode) | 0o644) & 0o755 if mode else 0o755
            tf.addfile(ti, io.BytesIO(data))
    return out.getvalue()


def settings_document(spec: ExtensionSpec, certificate_pem: str | None) -> bytes:
    """``config/<N>.settings`` for a fresh install. protectedSettings are encrypted to the host's
    certificate (CMS EnvelopedData, DER, base64) when the connection names one, as Azure does; the
    handler decrypts them with ``openssl smime -decrypt -inform DER -recip <thumb>.crt -inkey <thumb>.prv``."""
    handler_settings: dict[str, Any] = {"publicSettings": spec.settings or {}}
    protected = spec.protected()
    if protected:
        raw = json.dumps(protected, separators=(",", ":")).encode()
        if certificate_pem:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.serialization import pkcs7

            cert = x509.load_pem_x509_certificate(certificate_pem.encode())
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


class SshDriver:
    """HostDriver over one Linux host; one SSH connection per driver (= per host per job)."""

    kind = "ssh"

    def __init__(
        self,
        host: str,
        conn: HostConnection,
        packages: PackageStore,
        handlers: dict[str, str] | None = None,
        tuning: SshTuning | None = None,
        known_hosts: Path | None = None,
    ) -> None:
        self.name = host
        self.conn = conn
        self.packages = packages
        self.handlers = {k.lower(): v for k, v in (handlers or {}).items()}
        self.tuning = tuning or SshTuning()
        self.known_hosts = known_hosts
        self.root = conn.handler_root or "/"
        if not ROOT_RE.match(self.root) or ".." in self.root:
            raise UpgradeRefused(host, "connect", f"invalid handler root '{self.root}'")
        self._transport: Any = None
        self.channels_opened = 0
        self.connections_opened = 0
        self.agent_ops: list[str] = []
        self._script = agent_text()

    # ============================================================================================
    # Connection (the one place paramiko's errors become the driver's taxonomy)
    # ============================================================================================
    def _check_host_key(self, key: Any) -> None:
        seen = fingerprint(key.asbytes())
        pinned = self.conn.host_key_fingerprint
        if pinned:
            if seen != pinned.strip():
                raise HostKeyMismatch(
                    self.name,
                    "connect",
                    f"the host key {seen} does not match the pinned fingerprint {pinned}; refusing to connect "
                    "(if the host was reinstalled, update hostKeyFingerprint)",
                )
            return
        if not self.conn.trust_on_first_use or self.known_hosts is None:
            raise HostKeyMismatch(
                self.name,
                "connect",
                f"no host key is pinned (the host offers {seen}); set hostKeyFingerprint, or trustOnFirstUse "
                "to record the first key seen",
            )
        import paramiko

        entry = self.conn.address if self.conn.port == 22 else f"[{self.conn.address}]:{self.conn.port}"
        with _KNOWN_HOSTS_LOCK:
            known = paramiko.HostKeys()
            if self.known_hosts.exists():
                known.load(str(self.known_hosts))
            recorded = known.lookup(entry)
            if recorded:
                if key.get_name() in recorded and recorded[key.get_name()] == key:
                    return
                raise HostKeyMismatch(
                    self.name,
                    "connect",
                    f"the host key {seen} differs from the one recorded on first use in {self.known_hosts.name}; "
                    "refusing to connect",
                )
            known.add(entry, key.get_name(), key)
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            known.save(str(self.known_hosts))
            log.warning("Trusting %s's host key %s on first use", self.name, seen)

    def _connect(self) -> Any:
        import paramiko

        c = self.conn
        try:
            sock = socket.create_connection((c.address, c.port), timeout=c.connection_timeout_s)
        except OSError as exc:
            raise HostUnreachable(self.name, "connect", f"cannot connect to {c.address}:{c.port} ({exc})") from None
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = c.connection_timeout_s
            transport.start_client(timeout=c.connection_timeout_s)
            self._check_host_key(transport.get_remote_server_key())
            if c.private_key_pem and c.auth != "password":
                try:
                    pkey = load_private_key(c.private_key_pem, c.private_key_passphrase)
                except ValueError as exc:
                    raise HostAuthError(self.name, "connect", str(exc)) from None
                transport.auth_publickey(c.username or "", pkey)
            else:
                transport.auth_password(c.username or "", c.password or "")
            transport.set_keepalive(max(1, c.operation_timeout_s // 2))
        except HostDriverError:
            transport.close()
            raise
        except paramiko.AuthenticationException:
            transport.close()
            raise HostAuthError(self.name, "connect", f"the host refused the credentials of '{c.username}'") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport.close()
            raise HostUnreachable(self.name, "connect", f"SSH handshake failed ({type(exc).__name__})") from None
        self.connections_opened += 1
        with _STATS_LOCK:
            STATS["connections"] += 1
        return transport

    def _ensure(self) -> Any:
        if self._transport is None or not self._transport.is_active():
            self._discard()
            self._transport = self._connect()
        return self._transport

    def _discard(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                transport.close()
            except Exception:  # noqa: BLE001 - closing a broken connection is courtesy
                pass

    def close(self) -> None:
        self._discard()

    # ============================================================================================
    # Running the agent: one SSH channel per call
    # ============================================================================================
    def command_line(self, op: str, args: list[str]) -> str:
        argv = ["/bin/sh", "-c", self._script, "arcext-agent", self.root, op, *args]
        if self.conn.sudo:
            argv = ["sudo", "-n", "--", *argv]
        return " ".join(shlex.quote(a) for a in argv)

    def agent(
        self, op: str, args: list[str], stdin: bytes | None = None, deadline_s: float | None = None
    ) -> dict[str, Any]:
        """Run one agent operation; its output lines as {key: [values...]} (repeated keys: a list of lists)."""
        transport = self._ensure()
        deadline = time.monotonic() + (
            deadline_s or (2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s)
        )
        self.agent_ops.append(op)
        import paramiko

        out, err = bytearray(), bytearray()
        exited = 0.0
        try:
            channel = transport.open_session(timeout=self.conn.operation_timeout_s)
            self.channels_opened += 1
            with _STATS_LOCK:
                STATS["channels"] += 1
                STATS[f"op:{op}"] += 1
            try:
                channel.settimeout(0.2)
                channel.exec_command(self.command_line(op, args))
                if stdin is not None:
                    view = memoryview(stdin)
                    for offset in range(0, len(view), 32768):
                        channel.sendall(view[offset : offset + 32768])
                channel.shutdown_write()
                while True:
                    got = False
                    if channel.recv_ready():
                        data = channel.recv(65536)
                        out.extend(data)
                        got = bool(data)
                    if channel.recv_stderr_ready():
                        data = channel.recv_stderr(65536)
                        err.extend(data)
                        got = got or bool(data)
                    # sshd may send the exit status before the last output: done only at EOF (or, should
                    # something on the host keep the pipe open, a short grace after the exit status)
                    if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                        if channel.eof_received or channel.closed:
                            break
                        exited = exited or time.monotonic()
                        if time.monotonic() - exited > 2.0:
                            break
                    if not transport.is_active():
                        raise SessionLost(self.name, op, "the SSH connection dropped")
                    if time.monotonic() > deadline:
                        self._discard()
                        raise HostTimeout(self.name, op, "no answer within the driver's deadline")
                    if not got:
                        channel.status_event.wait(0.05)
                rc = channel.recv_exit_status()
            finally:
                channel.close()
        except HostDriverError:
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._discard()
            raise SessionLost(self.name, op, f"the SSH connection dropped ({type(exc).__name__})") from None
        if rc == -1 or not transport.is_active():
            self._discard()
            raise SessionLost(self.name, op, "the SSH connection dropped before the agent finished")
        stderr = err.decode("utf-8", "replace").strip()
        if rc != 0:
            sudo_said = [line for line in stderr.splitlines() if line.startswith("sudo:")]
            if self.conn.sudo and sudo_said:
                raise SudoRefused(
                    self.name,
                    op,
                    f"sudo -n refused '{self.conn.username}' ({sudo_said[0]}); "
                    "see docs/hosts.md for the sudo rule it needs",
                )
            last = stderr.splitlines()[-1] if stderr else f"exit code {rc}"
            raise RemoteScriptError(self.name, op, last)
        lines = out.decode("utf-8", "replace").splitlines()
        if not lines or lines[-1] != "ok":
            raise ProtocolError(self.name, op, "the agent did not finish its answer")
        result: dict[str, Any] = {}
        for line in lines[:-1]:
            key, _, rest = line.partition(" ")
            result.setdefault(key, []).append(rest.split(" ") if rest else [])
        return result

    # ============================================================================================
    # Primitives
    # ============================================================================================
    @staticmethod
    def _b64(value: str) -> str:
        return base64.b64decode(value).decode("utf-8", "replace") if value else ""

    def host_state(self, handler: str) -> dict[str, Any]:
        return self._parse_state(self.agent("state", [handler]))

    def _parse_state(self, raw: dict[str, Any]) -> dict[str, Any]:
        versions = {
            v: {"version": v, "state": st, "sequenceNumber": None if seq == "-" else int(seq)}
            for v, st, seq in raw.get("version", [])
        }
        journal = None
        if raw.get("journal"):
            try:
                journal = json.loads(self._b64(_value(raw, "journal")))
            except ValueError:
                journal = None
        steps = {s[0]: s[1] for s in raw.get("step", [])}
        return {
            "versions": versions,
            "cached": [c[0] for c in raw.get("cached", [])],
            "journal": journal,
            "steps": steps,
        }

    def _package(self, spec: ExtensionSpec, version: str) -> PackageRef:
        ref = self.packages.get(spec.publisher, spec.type, version)
        if ref is None:
            raise PackageMissing(
                self.name, "stage", f"no package is attached to {spec.publisher}/{spec.type} {version}"
            )
        return ref

    def stage(
        self, handler: str, version: str, ref: PackageRef, cached: list[str]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Upload (unless cached on the host) and extract one version; returns its handlerManifest and
        the host state after staging (the agent reports it in the same call)."""
        try:
            data = package_tar(ref)
        except UpgradeRefused as exc:
            raise UpgradeRefused(self.name, "stage", exc.message) from None
        sha = hashlib.sha256(data).hexdigest()
        if version in cached:
            try:
                raw = self.agent("stage", [handler, version, sha, "cached"])
                return dict(ref.manifest), self._parse_state(raw)
            except RemoteScriptError as exc:
                log.info(
                    "Cached package of %s %s on %s unusable (%s); uploading", handler, version, self.name, exc.message
                )
        for attempt in (1, 2):
            result = self.agent(
                "stage",
                [handler, version, sha, "upload"],
                stdin=data,
                deadline_s=2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s + len(data) / 50_000,
            )
            if result.get("verified") == [["1"]]:
                return dict(ref.manifest), self._parse_state(result)
            if attempt == 2:
                got = _value(result, "sha256") or "?"
                raise IntegrityError(self.name, "upload", f"{handler} {version}: the host computed SHA-256 {got}")
        raise AssertionError("unreachable")

    def write_settings(self, handler: str, version: str, seq: int, content: bytes) -> None:
        self.agent("settings-write", [handler, version, str(seq)], stdin=content)

    def write_journal(self, handler: str, journal: dict[str, Any], purge: str | None = None) -> None:
        self.agent("journal", [handler, *([purge] if purge else [])], stdin=json.dumps(journal).encode())

    def handler_command(
        self,
        op_id: str,
        step: str,
        handler: str,
        version: str,
        command: str,
        manifest: dict[str, Any],
        env: dict[str, str] | None = None,
    ) -> None:
        timeout = self.conn.handler_timeouts.get(command, DEFAULT_TIMEOUTS[command])
        cmd = str(manifest.get(f"{command}Command") or "")
        if not cmd:
            if command in ("install", "enable"):
                raise HandlerCommandFailed(self.name, step, f"the manifest has no {command}Command", None, 1003)
            return  # WALA: a missing optional command is a no-op
        if cmd.startswith("/") or ".." in cmd:
            raise HandlerCommandFailed(self.name, step, f"{command}Command leaves the handler folder", None, 1003)
        args = [handler, version, command, cmd, str(timeout), op_id, step]
        args += [f"{k}={v}" for k, v in (env or {}).items()]
        result = self.agent(
            "run", args, deadline_s=timeout + 2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s
        )
        if result.get("resumed"):
            log.info("%s on %s: step %s %s", handler, self.name, step, _value(result, "resumed"))
        code = _value(result, "exit") or "?"
        if result.get("timedout") or code == "timeout":
            raise HandlerCommandFailed(
                self.name, step, f"{command} of {handler} {version} timed out after {timeout} s", None, TIMED_OUT_CODE
            )
        if code != "0":
            tail = self._b64(_value(result, "stderr")).strip().splitlines()
            exit_code = int(code) if code.isdigit() else None
            raise HandlerCommandFailed(
                self.name,
                step,
                f"{command} of {handler} {version} exited with {code}" + (f": {tail[-1]}" if tail else ""),
                exit_code,
                ERROR_CODES[command],
            )

    def health_gate(self, handler: str, version: str, seq: int, manifest: dict[str, Any]) -> None:
        """Wait for a terminal status (and a fresh ready heartbeat when the handler reports one)."""
        wants_heartbeat = manifest.get("reportHeartbeat") in (True, "true", "True")
        deadline = time.monotonic() + self.conn.status_deadline_s
        last = "no status file yet"
        while True:
            raw = self.agent("status", [handler, version, str(seq)])
            status = _first_status(self._b64(_value(raw, "status"))) if raw.get("status") else None
            if status == "invalid":
                raise HandlerCommandFailed(
                    self.name, "health", "the status file is not valid JSON", None, INVALID_STATUS_CODE
                )
            if isinstance(status, dict):
                value = str(status.get("status", "")).lower()
                if value == "error":
                    message = (status.get("formattedMessage") or {}).get("message")
                    raise HandlerCommandFailed(
                        self.name, "health", f"{handler} {version} reports error: {message}", None, 1009
                    )
                if value in ("success", "warning"):
                    if not wants_heartbeat:
                        return
                    beat = _heartbeat(raw.get("heartbeat"), self._b64)
                    if beat is None:
                        last = "status success but no heartbeat yet"
                    elif beat[0] > self.conn.heartbeat_max_age_s:
                        last = f"heartbeat is stale ({beat[0]} s old; the handler is unresponsive)"
                    elif beat[1] != "ready":
                        last = f"heartbeat says {beat[1]}"
                    else:
                        return
                else:
                    last = f"status is {value or 'empty'}"
            if time.monotonic() >= deadline:
                raise HandlerCommandFailed(
                    self.name,
                    "health",
                    f"{handler} {version} not healthy after {self.conn.status_deadline_s} s: {last}",
                    None,
                    1009,
                )
            time.sleep(self.tuning.status_poll_s)

    # ============================================================================================
    # Journal
    # ============================================================================================
    def _start(self, handler: str, kind: str, state: dict[str, Any], **fields: Any) -> str:
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
            return str(journal["operationId"])
        op_id = str(uuid.uuid4())
        self.write_journal(
            handler,
            {
                "operationId": op_id,
                "kind": kind,
                **fields,
                "startedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "finished": False,
            },
        )
        return op_id

    def _finish(
        self, handler: str, op_id: str, kind: str, outcome: str, purge: str | None = None, **fields: Any
    ) -> None:
        """Mark the operation finished (after removing ``purge``'s directory and cached package)."""
        self.write_journal(
            handler,
            {
                "operationId": op_id,
                "kind": kind,
                **fields,
                "finishedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "finished": True,
                "outcome": outcome,
            },
            purge,
        )

    @staticmethod
    def _ran(state: dict[str, Any], op_id: str, step: str) -> bool:
        """Whether ``step`` of this operation started (it resumes rather than being skipped)."""
        journal = state.get("journal") or {}
        return journal.get("operationId") == op_id and step in (state.get("steps") or {})

    def _resumable(self, op: str, fn: Callable[[], None]) -> None:
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
                    "%s on %s lost its connection (%s); reconnecting to resume from the journal",
                    op,
                    self.name,
                    exc.message,
                )
                self._discard()

    # ============================================================================================
    # HostDriver
    # ============================================================================================
    def _check(self, spec: ExtensionSpec, op: str, *versions: str) -> str:
        try:
            check_name(spec.publisher, "publisher")
            check_name(spec.type, "type")
            for v in versions:
                check_version(v)
        except UpgradeRefused as exc:
            raise UpgradeRefused(self.name, op, exc.message) from None
        reason = extension_allowed(self.conn, spec.publisher, spec.type)
        if reason is not None:
            raise ExtensionBlocked(self.name, op, reason)
        return spec.handler

    def _handler_of(self, name: str) -> str | None:
        return self.handlers.get(name.lower())

    def installed(self, name: str) -> InstalledExtension | None:
        handler = self._handler_of(name)
        if handler is None:
            return None
        versions = self.host_state(handler)["versions"]
        if not versions:
            return None
        enabled = [v for v in versions.values() if v["state"] == "Enabled"]
        chosen = enabled[0] if enabled else sorted(versions.values(), key=lambda v: v["version"])[-1]
        return InstalledExtension(name, chosen["version"], STATE_NAMES.get(chosen["state"], "transitioning"))

    def _settings(self, spec: ExtensionSpec) -> bytes:
        return settings_document(spec, self.conn.protected_settings_certificate_pem)

    # --- install -----------------------------------------------------------------------------------
    def install(self, spec: ExtensionSpec, version: str) -> None:
        handler = self._check(spec, "install", version)
        ref = self._package(spec, version)
        self._resumable("install", lambda: self._install_once(spec, handler, version, ref))

    def _install_once(self, spec: ExtensionSpec, handler: str, version: str, ref: PackageRef) -> None:
        self.handlers[spec.name.lower()] = handler
        state = self.host_state(handler)
        op_id = self._start(handler, "install", state, version=version)
        manifest, state = self.stage(handler, version, ref, state["cached"])
        current = state["versions"].get(version)
        seq = current.get("sequenceNumber") if current else None
        if current and current["state"] == "Enabled" and not self._ran(state, op_id, "install.enable"):
            seq = (seq or 0) + 1  # a new goal state for a running extension: the next sequence number
            self.write_settings(handler, version, seq, self._settings(spec))
        elif seq is None:
            seq = 0
            self.write_settings(handler, version, seq, self._settings(spec))
        if (current and current["state"] == "NotInstalled") or self._ran(state, op_id, "install.install"):
            self.handler_command(op_id, "install.install", handler, version, "install", manifest)
        self.handler_command(op_id, "install.enable", handler, version, "enable", manifest)
        self.health_gate(handler, version, int(seq), manifest)
        self._finish(handler, op_id, "install", "succeeded", version=version)

    # --- upgrade -----------------------------------------------------------------------------------
    def upgrade(self, spec: ExtensionSpec, from_version: str, to_version: str) -> None:
        handler = self._check(spec, "upgrade", from_version, to_version)
        ref = self._package(spec, to_version)
        self._resumable("upgrade", lambda: self._upgrade_once(spec, handler, from_version, to_version, ref))

    def _upgrade_once(self, spec: ExtensionSpec, handler: str, old: str, new: str, ref: PackageRef) -> None:
        self.handlers[spec.name.lower()] = handler
        state = self.host_state(handler)
        op_id = self._start(handler, "upgrade", state, fromVersion=old, toVersion=new)
        old_ref = self.packages.get(spec.publisher, spec.type, old)
        old_manifest = dict(old_ref.manifest) if old_ref else {}
        manifest, state = self.stage(handler, new, ref, state["cached"])
        versions = state["versions"]
        old_v, new_v = versions.get(old), versions.get(new) or {}
        seq = new_v.get("sequenceNumber")
        if old_v is not None and old_v["sequenceNumber"] is not None:
            copied = self.agent("settings-copy", [handler, old, new])  # byte for byte, same N
            seq = int(_value(copied, "copied") or seq or 0)
        elif seq is None:
            seq = 0
            self.write_settings(handler, new, seq, self._settings(spec))
        # WALA: with continueOnUpdateFailure a failing old.disable/old.uninstall is recorded, not fatal,
        # and its exit code is passed on to update (DISABLE_CMD_EXIT_CODE) and install/enable
        tolerant = manifest.get("continueOnUpdateFailure") in (True, "true", "True")
        disable_code = uninstall_code = "NOT_RUN"
        if (old_v is not None and old_v["state"] == "Enabled") or self._ran(state, op_id, "old.disable"):
            disable_code = self._exit_code(
                tolerant,
                partial(self.handler_command, op_id, "old.disable", handler, old, "disable", old_manifest or manifest),
            )
        env = {
            "AZURE_GUEST_AGENT_UPDATING_FROM_VERSION": old,
            "VERSION": new,
            "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE": disable_code,
        }
        self.handler_command(op_id, "new.update", handler, new, "update", manifest, env)
        if old_v is not None or self._ran(state, op_id, "old.uninstall"):
            uninstall_code = self._exit_code(
                tolerant,
                partial(
                    self.handler_command, op_id, "old.uninstall", handler, old, "uninstall", old_manifest or manifest
                ),
            )
        after = {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": uninstall_code}
        # WALA removes the old directory here; its package stays in the host cache (the LKG copy)
        self.agent("remove", [handler, old])
        # update leaves the new version NotInstalled; a resumed job finds install in the journal
        if manifest.get("updateMode", "UpdateWithInstall") != "UpdateWithoutInstall" and (
            new_v.get("state", "NotInstalled") == "NotInstalled" or self._ran(state, op_id, "new.install")
        ):
            self.handler_command(op_id, "new.install", handler, new, "install", manifest, after)
        self.handler_command(op_id, "new.enable", handler, new, "enable", manifest, after)
        self.health_gate(handler, new, int(seq) if seq is not None else 0, manifest)
        # healthy: the new version is the last known good now; the old cached package can go
        self._finish(handler, op_id, "upgrade", "succeeded", purge=old, fromVersion=old, toVersion=new)

    def _exit_code(self, tolerant: bool, step: Callable[[], None]) -> str:
        """Run a step of the old version; its exit code as text. Failures raise unless ``tolerant``."""
        try:
            step()
        except HandlerCommandFailed as exc:
            if not tolerant:
                raise
            log.warning("%s on %s: continuing (continueOnUpdateFailure): %s", exc.op, self.name, exc.message)
            return str(exc.exit_code if exc.exit_code is not None else exc.wala_code)
        return "0"

    # --- rollback ----------------------------------------------------------------------------------
    def rollback(self, spec: ExtensionSpec, failed_version: str, good_version: str) -> None:
        handler = self._check(spec, "rollback", failed_version, good_version)
        self._resumable("rollback", lambda: self._rollback_once(spec, handler, failed_version, good_version))

    def _ignore(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except (HandlerFailed, RemoteScriptError) as exc:
            log.info("Rollback on %s: ignoring %s", self.name, exc.message)

    def _rollback_once(self, spec: ExtensionSpec, handler: str, bad: str, good: str) -> None:
        state = self.host_state(handler)
        op_id = self._start(handler, "rollback", state, fromVersion=bad, toVersion=good)
        bad_ref = self.packages.get(spec.publisher, spec.type, bad)
        bad_manifest = dict(bad_ref.manifest) if bad_ref else {}
        bad_v = state["versions"].get(bad)
        if bad != good and bad_v is not None and bad_manifest:
            if bad_v["state"] == "Enabled" or self._ran(state, op_id, "rollback.new.disable"):
                self._ignore(
                    lambda: self.handler_command(op_id, "rollback.new.disable", handler, bad, "disable", bad_manifest)
                )
            state = self.host_state(handler)
            bad_v = state["versions"].get(bad) or {}
            if bad_v.get("state") in ("Installed", "FailedUpgrade") or self._ran(
                state, op_id, "rollback.new.uninstall"
            ):
                self._ignore(
                    lambda: self.handler_command(
                        op_id, "rollback.new.uninstall", handler, bad, "uninstall", bad_manifest
                    )
                )
        state = self.host_state(handler)
        ref = self.packages.get(spec.publisher, spec.type, good)
        if ref is None:
            raise PackageMissing(self.name, "rollback", f"no package is attached to {handler} {good}")
        manifest = dict(ref.manifest)
        if good not in state["versions"]:
            manifest, state = self.stage(handler, good, ref, state["cached"])  # from the host cache when there
        versions = state["versions"]
        good_v = versions.get(good) or {}
        seq = good_v.get("sequenceNumber")
        if seq is None:
            if bad in versions and versions[bad]["sequenceNumber"] is not None:
                copied = self.agent("settings-copy", [handler, bad, good])
                seq = int(_value(copied, "copied") or 0)
            else:
                seq = 0
                self.write_settings(handler, good, seq, self._settings(spec))
        if bad != good:
            self.agent("remove", [handler, bad, "purge"])
        if good_v.get("state", "NotInstalled") == "NotInstalled" or self._ran(state, op_id, "rollback.lkg.install"):
            self.handler_command(op_id, "rollback.lkg.install", handler, good, "install", manifest)
        if good_v.get("state") != "Enabled" or self._ran(state, op_id, "rollback.lkg.enable"):
            self.handler_command(op_id, "rollback.lkg.enable", handler, good, "enable", manifest)
        self.health_gate(handler, good, int(seq), manifest)
        self._finish(handler, op_id, "rollback", "succeeded", fromVersion=bad, toVersion=good)

    # --- remove ------------------------------------------------------------------------------------
    def remove(self, name: str) -> None:
        handler = self._handler_of(name)
        if handler is None:
            return
        self._resumable("remove", lambda: self._remove_once(handler))

    def _manifest_of(self, handler: str, version: str) -> dict[str, Any]:
        """The handlerManifest of a published version, from "Publisher.Type" (both may contain dots)."""
        pieces = handler.split(".")
        for cut in range(1, len(pieces)):
            ref = self.packages.get(".".join(pieces[:cut]), ".".join(pieces[cut:]), version)
            if ref is not None:
                return dict(ref.manifest)
        return {}

    def _remove_once(self, handler: str) -> None:
        state = self.host_state(handler)
        if not state["versions"] and not state["cached"]:
            return
        op_id = self._start(handler, "remove", state)
        for version, v in state["versions"].items():
            manifest = self._manifest_of(handler, version)
            if v["state"] == "Enabled" or self._ran(state, op_id, f"remove.{version}.disable"):
                step = f"remove.{version}.disable"
                self._ignore(partial(self.handler_command, op_id, step, handler, version, "disable", manifest))
            current = self.host_state(handler)["versions"].get(version) or {}
            if current.get("state") in ("Installed", "FailedUpgrade"):
                self.handler_command(op_id, f"remove.{version}.uninstall", handler, version, "uninstall", manifest)
            self.agent("remove", [handler, version, "purge"])
        for version in state["cached"]:
            self.agent("remove", [handler, version, "purge"])
        self._finish(handler, op_id, "remove", "succeeded")


def _value(result: dict[str, Any], key: str, index: int = 0) -> str:
    """The ``index``-th word of the first ``key`` line of an agent answer ("" when absent or empty)."""
    lines = result.get(key) or []
    return str(lines[0][index]) if lines and len(lines[0]) > index else ""


def _first_status(text: str) -> dict[str, Any] | str | None:
    """The ``status`` object of a WALA status file (a one-element list), "invalid", or None when empty."""
    if not text.strip():
        return None
    try:
        doc = json.loads(text)
        entry = doc[0] if isinstance(doc, list) else doc
        status = entry["status"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "invalid"
    return status if isinstance(status, dict) else "invalid"


def _heartbeat(raw: list[list[str]] | None, decode: Callable[[str], str]) -> tuple[int, str] | None:
    """(age in seconds, status) of the heartbeat file, or None."""
    if not raw:
        return None
    age, content = int(raw[0][0]), decode(raw[0][1] if len(raw[0]) > 1 else "")
    try:
        doc = json.loads(content)
        entry = doc[0] if isinstance(doc, list) else doc
        status = str(entry["heartbeat"]["status"]).lower()
    except (ValueError, KeyError, IndexError, TypeError):
        status = "unreadable"
    return age, status
