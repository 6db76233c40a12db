"""The ``winrm`` transport: the Windows handler protocol (:mod:`arcext.hosts.windows_driver`) over a
WinRS cmd shell, with pywinrm 0.5.0, for Windows hosts that allow WinRS but not PowerShell Remoting
(no PSRP endpoint, or a policy that blocks it).

WinRS runs processes through cmd.exe, whose 8191-character command line caps a
``powershell.exe -EncodedCommand`` script at about 3 KB (diyan/pywinrm#184); several agent scripts
are larger. So the driver uploads first and then runs (docs/hosts.md):

* every agent script runs through the fixed wrapper ``Invoke-AgentScript.ps1`` (``-EncodedCommand``).
  Its stdin carries one JSON header line, a list of ``{"script", "sha256", "parameters"}`` (several
  scripts per command: a batch), and, for Receive-Package, the base64 chunks as further lines, which
  the wrapper streams into the script. It checks every listed file's SHA-256 before any runs, runs
  them from the verified bytes in order with the parameters splatted until one fails, and writes one
  JSON envelope ``{"outputs": [[...] per script], "errors": [...]}`` (exit code 1 on any error);
* when the wrapper finds a script missing or different (exit code 3, nothing ran) the driver runs
  the small bootstrap ``Install-AgentScripts.ps1`` (also ``-EncodedCommand``; its stdin carries every
  agent script: name, SHA-256, content, which it verifies and writes to
  ``%ProgramData%\\arcext\\scripts``, leaving unchanged files alone) and the calls again.

Parameter values only ever travel on stdin as JSON; the only command lines sent are the two fixed
encoded scripts. pywinrm's errors become the driver taxonomy in :meth:`WinrmDriver._library_error`,
called from the one boundary both Windows transports share
(:meth:`arcext.hosts.windows_runner.AgentScriptRunner._boundary`, which also maps requests' errors);
every call runs under the same per-operation deadline as psrp's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any, TypeVar
from xml.etree import ElementTree as ET

from .agent_scripts import script_text
from .base import (
    HostAuthError,
    HostDriverError,
    HostTimeout,
    ProtocolError,
    RemoteScriptError,
    SessionLost,
)
from .windows_driver import AgentScriptDriver
from .windows_runner import FORGET, SCRIPT_PARAMETERS, SHELL_GONE, Input, Mapped, quietly

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The two scripts the driver sends as -EncodedCommand (neither takes parameters: all input is stdin).
WINRS_SCRIPTS: dict[str, frozenset[str]] = {"Install-AgentScripts": frozenset(), "Invoke-AgentScript": frozenset()}
POWERSHELL = "powershell.exe"
POWERSHELL_ARGS = ("-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand")
#: the wrapper's exit code when an agent script is not installed or differs (nothing ran)
SCRIPTS_MISSING = 3
#: cmd.exe's maximum command line (characters), which WinRS goes through.
CMD_LINE_LIMIT = 8191
#: pywinrm asks for envelopes of at most this size (MaxEnvelopeSize); a Send carries base64 of stdin.
ENVELOPE_BYTES = 153600
ENVELOPE_OVERHEAD = 4096
AUTH_TRANSPORTS = {
    "basic": "ssl",
    "negotiate": "ntlm",
    "ntlm": "ntlm",
    "kerberos": "kerberos",
    "certificate": "certificate",
}
CLIXML_NS = "{http://schemas.microsoft.com/powershell/2004/04}"


def encoded_command(name: str) -> tuple[str, list[str]]:
    """The command and arguments that run one of the WinRS scripts (its text, UTF-16LE, base64)."""
    if name not in WINRS_SCRIPTS:
        raise ValueError(f"{name}.ps1 is not sent inline; it runs through Invoke-AgentScript")
    encoded = base64.b64encode(script_text(name).encode("utf-16-le")).decode()
    return POWERSHELL, [*POWERSHELL_ARGS, encoded]


def command_line_length(name: str) -> int:
    """How long cmd.exe's command line would be for ``name`` sent inline as -EncodedCommand."""
    encoded = base64.b64encode(script_text(name).encode("utf-16-le")).decode()
    return len(" ".join([POWERSHELL, *POWERSHELL_ARGS, encoded]))


def script_sha256(name: str) -> str:
    return hashlib.sha256(script_text(name).encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def agent_scripts_payload() -> bytes:
    """The bootstrap's stdin: every agent script the handler protocol runs, with its SHA-256."""
    files = [
        {
            "name": name,
            "sha256": script_sha256(name),
            "contentBase64": base64.b64encode(script_text(name).encode("utf-8")).decode(),
        }
        for name in sorted(SCRIPT_PARAMETERS)
    ]
    return json.dumps(files).encode("ascii") + b"\n"


def stdin_budget() -> int:
    """Raw stdin bytes per Send: their base64 must fit the envelope."""
    return (ENVELOPE_BYTES - ENVELOPE_OVERHEAD) // 4 * 3


def stdin_pieces(lines: Iterable[bytes], budget: int) -> Iterator[bytes]:
    """Cut a stream of stdin lines into Send-sized pieces (lines may span pieces: stdin is a stream)."""
    buf = bytearray()
    for line in lines:
        buf += line
        while len(buf) >= budget:
            yield bytes(buf[:budget])
            del buf[:budget]
    if buf:
        yield bytes(buf)


def stderr_errors(raw: bytes) -> str:
    """What stderr says went wrong. powershell.exe writes progress records as CLIXML to a redirected
    stderr (e.g. "Preparing modules for first use"); those are not errors and are dropped."""
    text = raw.decode("utf-8", "replace").strip()
    if not text.startswith("#< CLIXML"):
        return text
    messages: list[str] = []
    for part in text.split("#< CLIXML"):
        part = part.strip()
        if not part:
            continue
        try:
            root = ET.fromstring(part)
        except ET.ParseError:
            messages.append(part)
            continue
        for node in root.iter(f"{CLIXML_NS}S"):
            if node.get("S") == "Error":
                messages.append((node.text or "").replace("_x000D_", "").replace("_x000A_", "\n"))
    return "".join(messages).strip()


def _close_shell(protocol: Any, shell_id: str) -> None:
    """Delete the shell on the host and close the HTTP session; best effort."""
    quietly(lambda: protocol.close_shell(shell_id, close_session=True))
    quietly(protocol.transport.close_session)


class WinrmDriver(AgentScriptDriver):
    """HostDriver over one Windows host through WinRS; one cmd shell per driver (= per host per job)."""

    kind = "winrm"
    # per instance once assigned; these are the values before the first connection
    _protocol: Any = None
    _shell_id: str | None = None
    _cert_files: tuple[str, ...] = ()  # temporary PEM files for certificate auth, removed by close()
    shells_opened = 0
    #: the bootstrap's answer the last time a shell was opened ({"written": [...], "unchanged": [...]})
    scripts_installed: dict[str, Any] | None = None

    # ============================================================================================
    # pywinrm's errors in the driver's taxonomy (AgentScriptRunner._boundary is the one place)
    # ============================================================================================
    def _session(self) -> object | None:
        session: object | None = self._protocol
        return session

    def _library_error(self, op: str, exc: Exception, opened: bool) -> Mapped | None:
        from winrm.exceptions import (
            AuthenticationError,
            WinRMError,
            WinRMOperationTimeoutError,
            WinRMTransportError,
            WSManFaultError,
        )

        if isinstance(exc, AuthenticationError):  # InvalidCredentialsError: HTTP 401, or missing credentials
            return HostAuthError(self.name, op, f"credentials were refused ({exc})"), None
        if isinstance(exc, WSManFaultError):
            if exc.wsman_fault_code == SHELL_GONE:
                return SessionLost(self.name, op, "the remote shell is gone (0x8033805B)"), FORGET
            return ProtocolError(self.name, op, f"WSManFault {exc.wsman_fault_code}: {exc.reason}"), None
        if isinstance(exc, WinRMTransportError):  # (not a WinRMError in pywinrm 0.5)
            if exc.code == 401:
                return HostAuthError(self.name, op, "credentials were refused (HTTP 401)"), None
            return ProtocolError(self.name, op, f"HTTP {exc.code} from the WinRM service"), None
        if isinstance(exc, WinRMOperationTimeoutError):  # Receive long-polls are retried in _run; another op
            return HostTimeout(self.name, op, "a WS-Management operation timed out on the host"), FORGET
        if isinstance(exc, WinRMError):
            if not opened:  # pywinrm refuses an auth/transport combination before sending anything
                return HostAuthError(self.name, op, f"invalid connection settings: {exc}"), None
            return ProtocolError(self.name, op, str(exc)), None
        if isinstance(exc, (ValueError, KeyError, StopIteration, AssertionError, ET.ParseError)):
            # pywinrm parses answers with next(...)/assert: a malformed answer surfaces as these
            if not opened:
                return HostAuthError(self.name, op, f"invalid connection settings: {exc}"), None
            return ProtocolError(
                self.name, op, f"unexpected answer from the WinRM service ({type(exc).__name__})"
            ), None
        return None

    # ============================================================================================
    # Connection and the cmd shell
    # ============================================================================================
    def _endpoint(self) -> str:
        c = self.conn
        host = f"[{c.address}]" if ":" in c.address and not c.address.startswith("[") else c.address
        return f"{'https' if c.ssl else 'http'}://{host}:{c.port}/wsman"

    def _cert_file(self, pem: str) -> str:
        fd, path = tempfile.mkstemp(prefix="arcext-winrm-", suffix=".pem")  # 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(pem)
        self._cert_files = (*self._cert_files, path)
        return path

    def _new_protocol(self) -> Any:
        from winrm.protocol import Protocol

        c = self.conn
        transport = AUTH_TRANSPORTS.get(c.auth)
        if transport is None:
            raise HostAuthError(self.name, "connect", f"the winrm driver cannot use {c.auth} authentication")
        if c.auth == "basic" and not c.ssl:
            raise HostAuthError(self.name, "connect", "Basic authentication is allowed only over https")
        read_timeout = c.operation_timeout_s + 10
        kwargs: dict[str, Any] = {
            "transport": transport,
            "username": c.username,
            "password": c.password,
            "server_cert_validation": "validate" if c.cert_validation else "ignore",
            "ca_trust_path": c.ca_certificate_path,  # None: the system (certifi) store, never env vars
            "operation_timeout_sec": c.operation_timeout_s,
            "read_timeout_sec": read_timeout,
            "message_encryption": "auto",  # over http NTLM/Kerberos encrypt every message
            "proxy": None,
        }
        if transport == "certificate":
            if c.certificate_key_password:
                raise HostAuthError(self.name, "connect", "pywinrm cannot use an encrypted certificate key")
            kwargs["username"] = kwargs["password"] = None
            kwargs["cert_pem"] = self._cert_file(c.certificate_pem or "")
            kwargs["cert_key_pem"] = self._cert_file(c.certificate_key_pem or "")
        protocol = Protocol(self._endpoint(), **kwargs)
        # requests takes (connect, read): a host that does not accept the connection fails fast
        protocol.transport.read_timeout_sec = (c.connection_timeout_s, read_timeout)  # type: ignore[assignment]
        return protocol

    def _open_shell(self) -> None:
        def opening() -> tuple[Any, str]:
            protocol = self._new_protocol()
            try:
                shell_id: str = protocol.open_shell(codepage=65001, noprofile=True)
            except BaseException:
                quietly(protocol.transport.close_session)
                raise
            return protocol, shell_id

        deadline = self.conn.connection_timeout_s + 2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s
        protocol, shell_id = self._with_deadline(
            "connect", deadline, lambda: self._boundary("connect", opening, opened=False)
        )
        self._protocol, self._shell_id = protocol, shell_id
        self.shells_opened += 1
        # the scripts are uploaded when the wrapper first finds one missing or changed (exit code 3),
        # not on every shell: a host that has this arcext's scripts saves the bootstrap's round trips

    def _install_scripts(self) -> None:
        """Upload every agent script (the bootstrap writes only those whose hash differs)."""
        try:
            self._bootstrap()
        except HostDriverError:
            self._discard()  # the next call opens a new shell and uploads again
            raise

    def _bootstrap(self) -> None:
        name = "Install-AgentScripts"
        deadline = 2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s
        stdout, stderr, code = self._with_deadline(
            name, deadline, lambda: self._boundary(name, lambda: self._run(name, [agent_scripts_payload()]), True)
        )
        problem = stderr_errors(stderr)
        if problem or code != 0:
            raise RemoteScriptError(self.name, name, problem or f"exit code {code}")
        try:
            result = json.loads(stdout.decode("utf-8-sig").strip())
        except ValueError:
            raise ProtocolError(self.name, name, "the bootstrap's output is not JSON") from None
        if not isinstance(result, dict):
            raise ProtocolError(self.name, name, "the bootstrap's JSON document is not an object")
        self.scripts_installed = result
        log.debug("Agent scripts on %s: %s", self.name, result)

    def _ensure_session(self) -> None:
        if self._shell_id is None:
            self._open_shell()

    def _discard(self, close: bool = True, only: object | None = None) -> None:
        """Forget the shell (and its HTTP session); with ``close``, delete it on the host (bounded)."""
        if only is not None and only is not self._protocol:
            return  # an abandoned call failed late: its shell is already gone, keep the current one
        protocol, shell_id = self._protocol, self._shell_id
        self._protocol = None
        self._shell_id = None
        if protocol is None:
            return
        if close and shell_id is not None:
            closing = threading.Thread(
                target=_close_shell, args=(protocol, shell_id), name=f"winrm-{self.name}-close", daemon=True
            )
            closing.start()
            closing.join(self.conn.operation_timeout_s + self.tuning.deadline_margin_s)
        else:
            # a call still running in it (abandoned by the deadline) deletes the shell when it notices
            quietly(protocol.transport.close_session)

    def close(self) -> None:
        self._discard()
        for path in self._cert_files:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._cert_files = ()

    def _upload_chunk_size(self) -> int:
        return max(3, (stdin_budget() - 1) // 4 * 3)  # one base64 line (+ newline) per Send at most

    # ============================================================================================
    # Running one script
    # ============================================================================================
    def _run(self, name: str, stdin: Iterable[bytes]) -> tuple[bytes, bytes, int]:
        """Run one of the two WinRS scripts in the shell, feeding ``stdin``; (stdout, stderr, exit code)."""
        protocol, shell_id = self._protocol, self._shell_id
        if protocol is None or shell_id is None:
            raise SessionLost(self.name, name, "the shell was discarded")
        command, arguments = encoded_command(name)
        command_id = protocol.run_command(shell_id, command, arguments)
        pending: bytes | None = None
        for piece in stdin_pieces(stdin, stdin_budget()):
            if pending is not None:
                protocol.send_command_input(shell_id, command_id, pending)
            pending = piece
        protocol.send_command_input(shell_id, command_id, pending or b"", end=True)
        stdout, stderr, code = self._output(protocol, shell_id, command_id, name)
        protocol.cleanup_command(shell_id, command_id)
        return stdout, stderr, code

    def _output(self, protocol: Any, shell_id: str, command_id: str, name: str) -> tuple[bytes, bytes, int]:
        """Receive until the command is done, long-poll after long-poll (pywinrm's get_command_output,
        but it stops once the driver's deadline has abandoned this call and deletes the shell, instead
        of polling a hung command for ever from a thread nobody waits for)."""
        from winrm.exceptions import WinRMOperationTimeoutError

        stdout: list[bytes] = []
        stderr: list[bytes] = []
        while True:
            if self._protocol is not protocol:
                _close_shell(protocol, shell_id)
                raise SessionLost(self.name, name, "the call was abandoned (driver deadline); its shell is deleted")
            try:
                out, err, code, done = protocol.get_command_output_raw(shell_id, command_id)
            except WinRMOperationTimeoutError:  # the host's long-poll ended with no output yet
                continue
            stdout.append(out)
            stderr.append(err)
            if done:
                return b"".join(stdout), b"".join(stderr), int(code)

    def _invoke_many(self, calls: list[tuple[str, dict[str, Any]]], deadline: float, input_: Input) -> list[list[Any]]:
        """One wrapper command for all ``calls``: its stdin is the JSON list of calls, then the first
        script's input, streamed. The wrapper checks every script's hash before any runs; exit code
        3 (one is missing or differs) runs the bootstrap once and the calls again."""
        header = json.dumps(
            [{"script": name, "sha256": script_sha256(name), "parameters": params} for name, params in calls]
        )
        label = "+".join(name for name, _ in calls)

        def lines() -> Iterator[bytes]:
            yield header.encode("ascii") + b"\n"
            for chunk in input_() if input_ is not None else ():
                yield str(chunk).encode("ascii") + b"\n"

        for attempt in (1, 2):
            stdout, stderr, code = self._with_deadline(
                label, deadline, lambda: self._boundary(label, lambda: self._run("Invoke-AgentScript", lines()), True)
            )
            if code != SCRIPTS_MISSING or attempt == 2:
                break
            # the host lacks an agent script or has another copy: upload them (the bootstrap writes
            # only those whose hash differs); nothing ran
            self._install_scripts()
        envelope: Any = None
        try:
            envelope = json.loads(stdout.decode("utf-8-sig").strip())
        except ValueError:
            pass
        valid = (
            isinstance(envelope, dict)
            and isinstance(envelope.get("outputs"), list)
            and all(isinstance(o, list) for o in envelope["outputs"])
            and isinstance(envelope.get("errors"), list)
        )
        errors = [str(e) for e in envelope["errors"]] if valid else []
        problem = stderr_errors(stderr)
        if errors or problem or code != 0:
            detail = "; ".join(errors + ([problem] if problem else [])) or f"exit code {code}"
            raise RemoteScriptError(self.name, label, detail)
        if not valid:
            raise ProtocolError(self.name, label, "the wrapper's output is not a JSON envelope")
        outputs: list[list[Any]] = envelope["outputs"]
        if len(outputs) != len(calls):
            raise ProtocolError(self.name, label, f"the wrapper ran {len(outputs)} of {len(calls)} scripts")
        return outputs
