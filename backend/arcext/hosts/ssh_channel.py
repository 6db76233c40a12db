"""The ``ssh`` driver's session with a Linux host: one paramiko connection per driver (= per host per
job), the host-key check, and one SSH channel per agent call (docs/hosts.md).

The only code it runs on the host is ``hosts/sh/agent.sh`` (POSIX sh), sent as the ``sh -c`` script
text with every value as a separate, shell-quoted argument or on stdin; nothing a user supplies is
ever put into the script. A non-root user reaches root with ``sudo -n``. The host key is pinned
(``hostKeyFingerprint``, OpenSSH's ``SHA256:...``) or, only with ``trustOnFirstUse``, recorded on
first contact in the data directory's ``ssh_known_hosts``; a mismatch is refused. This is the one
place paramiko's errors become the driver taxonomy.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import logging
import re
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from .agent import HandlerProtocol
from .base import (
    HostAuthError,
    HostDriverError,
    HostTimeout,
    HostUnreachable,
    ProtocolError,
    RemoteScriptError,
    SessionLost,
    UpgradeRefused,
)
from .connections import HostConnection
from .packages import PackageStore
from .ssh_settings import load_private_key

log = logging.getLogger(__name__)

_KNOWN_HOSTS_LOCK = threading.Lock()
#: process-wide counters (connections, channels, per agent operation) for scripts/bench_hosts.py --driver ssh
STATS: collections.Counter[str] = collections.Counter()
_STATS_LOCK = threading.Lock()
ROOT_RE = re.compile(r"^/[A-Za-z0-9/._-]*$")


def agent_text() -> str:
    return (resources.files("arcext.hosts") / "sh" / "agent.sh").read_text(encoding="utf-8")


def fingerprint(key_bytes: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob (``ssh-keygen -lf`` prints the same)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_bytes).digest()).decode().rstrip("=")


class HostKeyMismatch(HostAuthError):
    """The host presented a key other than the pinned one: possibly someone in the middle."""

    code = "HostKeyMismatch"


class SudoRefused(HostAuthError):
    code = "HostSudoRefused"


@dataclass(frozen=True)
class SshTuning:
    """Timing knobs; the defaults suit real hosts, tests shrink them."""

    status_poll_s: float = 2.0
    deadline_margin_s: float = 15.0
    reconnect_attempts: int = 1


class SshAgentChannel(HandlerProtocol[SshTuning]):
    """The connection to one Linux host and the agent calls over it (see the module doc)."""

    kind = "ssh"

    def __init__(
        self,
        host: str,
        conn: HostConnection,
        packages: PackageStore,
        handlers: dict[str, str] | None = None,
        tuning: SshTuning | None = None,
        known_hosts: Path | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(host, conn, packages, handlers, tuning, now)
        self.known_hosts = known_hosts
        self.root = conn.handler_root or "/"
        if not ROOT_RE.match(self.root) or ".." in self.root:
            raise UpgradeRefused(host, "connect", f"invalid handler root '{self.root}'")
        self._transport: Any = None
        self.channels_opened = 0
        self.connections_opened = 0
        self._script = agent_text()

    def _default_tuning(self) -> SshTuning:
        return SshTuning()

    @property
    def agent_ops(self) -> list[str]:
        """The agent operations run, in order."""
        return self.calls

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
        self.calls.append(op)
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
