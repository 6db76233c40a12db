"""A WS-Management endpoint speaking PSRP (over psrpcore's server side) that unmodified pypsrp accepts.

One ``WSManServer`` is one fake Windows host: HTTP/1.1 keep-alive on 127.0.0.1, Basic auth (meant
for TLS) or NTLM with WinRM message encryption (pyspnego acceptor), the Create / Command / Send /
Receive / Signal / Delete / Get actions of ``.../windows/shell`` for the PowerShell resource URI, and
the SOAP faults real Windows sends (shapes follow tests/data/pypsrp-recordings). Pipelines run on a
worker thread each: the script text is looked up by SHA-256 among the project's own .ps1 files, its
parameters are bound against the real ``param()`` block, and the matching Python implementation in
:mod:`.machine` does the work. Anything else is a terminating error.

Faults on demand (:meth:`WSManServer.inject`): an HTTP 401, a WSManFault 500, a TCP reset, a
Receive that never answers, a broken runspace pool.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import ssl
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from .machine import ScriptFailure, WindowsMachine
from .scripts import BindingError, bind, known_scripts, script_hash

log = logging.getLogger("arcext.fakehost")

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmv": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "pwsh": "http://schemas.microsoft.com/powershell",
}
ACTION = {
    "Create": "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
    "Delete": "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete",
    "Get": "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get",
    "Command": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command",
    "Send": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send",
    "Receive": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive",
    "Signal": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal",
}
ACTION_NAMES = {v: k for k, v in ACTION.items()}
PS_RESOURCE_PREFIX = "http://schemas.microsoft.com/powershell/"
SHELL_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CMD_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
CONFIG_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/config"
SIGNAL_TERMINATE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate"
SIGNAL_CTRL_C = "powershell/signal/ctrl_c"
DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

ENVELOPE_NS = (
    'xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
    'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"'
)
FAULT_NS = (
    'xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
    'xmlns:e="http://schemas.xmlsoap.org/ws/2004/08/eventing" '
    'xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"'
)

TIMED_OUT = 2150858793
SHELL_NOT_FOUND = 2150858843
ACTION_NOT_SUPPORTED = 2150858771
INTERNAL_ERROR = 2147943860


class Fault(Exception):
    def __init__(self, code: str, subcode: str, reason: str, wsman_code: int, detail: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.subcode = subcode
        self.reason = reason
        self.wsman_code = wsman_code
        self.detail = detail


def timed_out() -> Fault:
    msg = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
    return Fault("s:Receiver", "w:TimedOut", msg, TIMED_OUT)


def receive_deadline(timeout: float) -> float:
    """When a Receive that has nothing to send answers TimedOut: Windows does so just before the
    client's OperationTimeout."""
    return time.monotonic() + max(0.2, timeout - 1.0)


def long_poll(server: WSManServer, shell: Any, ready: Callable[[], bool], deadline: float) -> None:
    """A Receive's long-poll (``shell.lock`` held): wait on ``shell.cond`` until ``ready()``; the
    TimedOut fault at ``deadline``, ShellNotFound once the shell is deleted, a connection reset
    when one was injected while the Receive waited."""
    while not (ready() or shell.closed):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or server.stopping.is_set():
            raise timed_out()
        shell.cond.wait(remaining)
    if shell.closed:
        raise shell_not_found()
    if server.take_fault("Receive", ("reset",)) == "reset":
        raise _Reset()


def shell_not_found(command: bool = False) -> Fault:
    reason = (
        "The WS-Management service cannot process the request because the request contained invalid selectors "
        "for the resource. "
    )
    return Fault(
        "s:Sender",
        "w:InvalidSelectors",
        reason,
        SHELL_NOT_FOUND,
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
    )


def action_not_supported(action: str) -> Fault:
    return Fault(
        "s:Sender",
        "a:ActionNotSupported",
        f"The action is not supported by the service. {action} ",
        ACTION_NOT_SUPPORTED,
    )


@dataclass
class PipelineRun:
    pipeline: Any  # psrpcore.ServerPipeline
    command_id: uuid.UUID
    inputs: list[Any] = field(default_factory=list)
    input_done: threading.Event = field(default_factory=threading.Event)
    created: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    done_sent: bool = False
    metadata: Any = None
    thread: threading.Thread | None = None


class Shell:
    """One runspace pool (a WSMan shell) with its outgoing PSRP payloads queued per target."""

    def __init__(self, shell_id: str, resource_uri: str) -> None:
        import psrpcore

        self.id = shell_id.upper()
        self.resource_uri = resource_uri
        self.pool = psrpcore.ServerRunspacePool()
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.queues: dict[uuid.UUID | None, deque[bytes]] = {}
        self.runs: dict[uuid.UUID, PipelineRun] = {}
        self.created_at = time.time()
        self.closed = False
        #: the pool's global scope as far as the model knows it: variables that dot-sourced scripts
        #: left type-constrained there (lower-case name -> (type, the script that left it))
        self.global_constraints: dict[str, tuple[str, str]] = {}

    def flush(self) -> None:
        """Move every PSRP payload psrpcore has ready into the per-target queues (lock held)."""
        while True:
            payload = self.pool.data_to_send()
            if payload is None:
                break
            self.queues.setdefault(payload.pipeline_id, deque()).append(payload.data)
        self.cond.notify_all()


@dataclass
class InjectedFault:
    action: str  # Create, Command, Send, Receive, Signal, Delete, Get, or "*"
    kind: str  # "401", "500", "reset", "hang", "broken"
    count: int = 1


class WSManServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        machine: WindowsMachine,
        username: str,
        password: str,
        auth: str = "basic",
        tls: ssl.SSLContext | None = None,
        address: tuple[str, int] = ("127.0.0.1", 0),
        max_envelope_kb: int = 500,
    ) -> None:
        if auth not in ("basic", "ntlm"):
            raise ValueError("auth must be 'basic' or 'ntlm'")
        self.machine = machine
        self.username = username
        self.password = password
        self.auth = auth
        self.tls = tls
        self.max_envelope_kb = max_envelope_kb
        self.shells: dict[str, Shell] = {}
        self.shells_lock = threading.Lock()
        self.faults: list[InjectedFault] = []
        self.faults_lock = threading.Lock()
        self.stopping = threading.Event()
        #: a pipeline that would dot-source a project script (UseLocalScope not true) is refused,
        #: as the agent scripts must never share the pool's global scope; with this set it runs
        #: instead, and the model keeps the typed variables it leaves behind (see _scope_check)
        self.allow_dot_sourcing = False
        #: session configurations (lower-case name) that are JEA endpoints in NoLanguage mode: they run
        #: only the cmdlets of their role capabilities, never an AddScript pipeline
        self.no_language_endpoints: set[str] = set()
        #: every request's action name in arrival order (round-trip counting)
        self.actions: list[str] = []
        #: shells ever created (runspace pools and WinRS cmd shells), for the one-shell-per-job assertion
        self.pools_opened = 0
        #: last envelopes per action/fault, for the fidelity comparison with real transcripts
        self.last_envelopes: dict[str, str] = {}
        self._open_connections: set[socket.socket] = set()
        from .winrs import WinrsEndpoint

        #: the WinRS cmd shell resource (pywinrm's side of the host)
        self.winrs = WinrsEndpoint(self)
        super().__init__(address, _Handler)

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        conn = request
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        self._open_connections.add(conn)
        try:
            super().finish_request(conn, client_address)
        finally:
            self._open_connections.discard(conn)
            if conn is not request:
                try:
                    conn.close()
                except OSError:
                    pass

    def shutdown_all(self) -> None:
        self.stopping.set()
        self.winrs.stop()
        with self.shells_lock:
            shells = list(self.shells.values())
        for shell in shells:
            with shell.lock:
                for run in shell.runs.values():
                    run.cancel.set()
                    run.input_done.set()
                shell.cond.notify_all()
        self.shutdown()
        for conn in list(self._open_connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()

    # --- faults ---------------------------------------------------------------------------------
    def inject(self, action: str, kind: str, count: int = 1) -> None:
        if kind not in ("401", "500", "reset", "hang", "broken"):
            raise ValueError(f"unknown fault kind {kind!r}")
        with self.faults_lock:
            self.faults.append(InjectedFault(action, kind, count))

    def clear_faults(self) -> None:
        with self.faults_lock:
            self.faults.clear()

    def take_fault(self, action: str, kinds: tuple[str, ...] | None = None) -> str | None:
        with self.faults_lock:
            for fault in self.faults:
                if fault.action in (action, "*") and (kinds is None or fault.kind in kinds):
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                    return fault.kind
        return None

    def open_shells(self) -> list[str]:
        """Ids of the shells still open: runspace pools and WinRS cmd shells."""
        with self.shells_lock:
            pools = list(self.shells)
        with self.winrs.lock:
            return pools + list(self.winrs.shells)


def _parse_timeout(text: str | None) -> float:
    if not text:
        return 60.0
    m = re.match(r"^PT(\d+(?:\.\d+)?)S$", text.strip())
    if not m:
        raise Fault(
            "s:Sender",
            "a:InvalidMessageInformationHeader",
            "The WS-Management service cannot process the request. The request contains one or more invalid SOAP "
            "headers. ",
            2150858767,
        )
    return float(m.group(1))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: WSManServer
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        self.ntlm: Any = None  # one NTLM context per connection (NTLM is connection-bound)
        self.authenticated = False

    # --- HTTP -----------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.rstrip("/").lower() != "/wsman":
            self._send(404, b"", {})
            return
        if not self._authenticate():
            return
        content_type = self.headers.get("Content-Type", "")
        encrypted = content_type.startswith("multipart/encrypted")
        if self.server.auth == "ntlm":
            if not body:  # the empty POST that sets up the security context
                self._send(200, b"", {})
                return
            if not encrypted:
                self._send(400, b"", {})  # WinRM refuses unencrypted traffic over http (AllowUnencrypted=false)
                return
            try:
                body = self._unwrap(body, content_type)
            except Exception as exc:  # noqa: BLE001 - a message sealed for another context (stale client)
                log.info("cannot decrypt a message: %s", exc)
                self.ntlm = None
                self.authenticated = False
                self._send(400, b"", {})
                return
        try:
            status, text = self._dispatch(body)
        except _Reset:
            self._reset()
            return
        except _Hang:
            self.server.stopping.wait()
            self.close_connection = True
            return
        payload = text.encode("utf-8")
        if self.server.auth == "ntlm":
            wrapped = self._wrap(payload)
            self._send(
                status,
                wrapped,
                {
                    "Content-Type": 'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";'
                    'boundary="Encrypted Boundary"'
                },
            )
        else:
            self._send(status, payload, {"Content-Type": "application/soap+xml;charset=UTF-8"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        buffer: list[bytes] = getattr(self, "_headers_buffer", [])
        # headers and body in one write: no Nagle/delayed-ACK stall between them
        self.wfile.write(b"".join(buffer) + b"\r\n" + body)
        self._headers_buffer = []  # type: ignore[var-annotated]

    def _reset(self) -> None:
        """Drop the TCP connection with a RST (SO_LINGER 0), as a network failure would."""
        try:
            raw = self.connection
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()
        except OSError:
            pass
        self.close_connection = True

    # --- auth -----------------------------------------------------------------------------------
    def _authenticate(self) -> bool:
        header = self.headers.get("Authorization", "")
        if self.server.take_fault("auth", ("401",)) == "401":
            self._send(
                401, b"", {"WWW-Authenticate": 'Basic realm="WSMAN"' if self.server.auth == "basic" else "Negotiate"}
            )
            return False
        if self.server.auth == "basic":
            expected = base64.b64encode(f"{self.server.username}:{self.server.password}".encode()).decode()
            if header == f"Basic {expected}":
                return True
            self._send(401, b"", {"WWW-Authenticate": 'Basic realm="WSMAN"'})
            return False
        if self.authenticated and not header:
            return True
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("negotiate", "ntlm") or not token:
            self.ntlm = None
            self._send(401, b"", {"WWW-Authenticate": "Negotiate"})
            return False
        import spnego
        import spnego.exceptions

        if self.ntlm is None or self.authenticated:
            self.ntlm = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.wrapping_winrm)
            self.authenticated = False
        try:
            out = self.ntlm.step(base64.b64decode(token))
        except (spnego.exceptions.SpnegoError, ValueError) as exc:
            log.info("NTLM authentication failed: %s", exc)
            self.ntlm = None
            self._send(401, b"", {"WWW-Authenticate": "Negotiate"})
            return False
        if not self.ntlm.complete:
            self._send(401, b"", {"WWW-Authenticate": f"{scheme} " + base64.b64encode(out or b"").decode()})
            return False
        self.authenticated = True
        return True

    def _unwrap(self, body: bytes, content_type: str) -> bytes:
        boundary = re.search(r'boundary="?([^";]+)"?', content_type)
        if boundary is None:
            raise ValueError("no MIME boundary")
        parts = [p for p in re.split(rb"--\s*" + re.escape(boundary.group(1).encode()) + rb"(?:--)?\r\n", body) if p]
        out = b""
        for i in range(0, len(parts), 2):
            head, payload = parts[i], parts[i + 1]
            expected = int(head.split(b"Length=")[1].split(b"\r\n")[0])
            data = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
            hlen = struct.unpack("<i", data[:4])[0]
            plain: bytes = self.ntlm.unwrap_winrm(data[4 : 4 + hlen], data[4 + hlen :])
            if len(plain) != expected:
                raise ValueError("decrypted length mismatch")
            out += plain
        return out

    def _wrap(self, message: bytes) -> bytes:
        header, data, padding = self.ntlm.wrap_winrm(message)
        wrapped = struct.pack("<i", len(header)) + header + data
        head = "\r\n".join(
            [
                "--Encrypted Boundary",
                "\tContent-Type: application/HTTP-SPNEGO-session-encrypted",
                f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(message) + padding}",
                "--Encrypted Boundary",
                "\tContent-Type: application/octet-stream",
                "",
            ]
        ).encode()
        out: bytes = head + wrapped + b"--Encrypted Boundary--\r\n"
        return out

    # --- SOAP -----------------------------------------------------------------------------------
    def _dispatch(self, body: bytes) -> tuple[int, str]:
        root = ET.fromstring(body)
        header = root.find("s:Header", NS)
        soap_body = root.find("s:Body", NS)
        if header is None or soap_body is None:
            raise ValueError("not a SOAP envelope")
        action_uri = (header.findtext("wsa:Action", "", NS) or "").strip()
        message_id = (header.findtext("wsa:MessageID", "", NS) or "").strip()
        resource_uri = (header.findtext("wsman:ResourceURI", "", NS) or "").strip()
        to = (header.findtext("wsa:To", "", NS) or "").strip()
        selectors = {
            s.get("Name", ""): (s.text or "").strip() for s in header.findall("wsman:SelectorSet/wsman:Selector", NS)
        }
        options = {
            o.get("Name", ""): (o.text or "").strip() for o in header.findall("wsman:OptionSet/wsman:Option", NS)
        }
        action = ACTION_NAMES.get(action_uri, action_uri.rsplit("/", 1)[-1])
        self.server.actions.append(action)
        prefix = "WinRS:" if resource_uri == CMD_RESOURCE else ""  # last_envelopes keys per protocol
        try:
            fault = self.server.take_fault(action, ("401", "500", "reset", "hang"))
            if fault == "reset":
                raise _Reset()
            if fault == "hang":
                raise _Hang()
            if fault == "401":
                raise Fault("s:Sender", "w:AccessDenied", "Access is denied. ", 5)
            if fault == "500":
                raise Fault(
                    "s:Receiver",
                    "w:InternalError",
                    "The WS-Management service cannot process the request: an internal error occurred. ",
                    INTERNAL_ERROR,
                )
            timeout = _parse_timeout(header.findtext("wsman:OperationTimeout", None, NS))
            if action_uri not in ACTION_NAMES:
                raise action_not_supported(action_uri)
            if resource_uri == CMD_RESOURCE:  # WinRS (pywinrm): its own module
                from .winrs import Request

                request = Request(self.client_address[0], soap_body, selectors, options, timeout, to)
                response_action, response_body = self.server.winrs.handle(action, request)
            else:
                handler = getattr(self, f"_op_{action}", None)
                if handler is None:
                    raise action_not_supported(action_uri)
                response_action, response_body = handler(soap_body, resource_uri, selectors, options, timeout, to)
            text = self._envelope(response_action, message_id, response_body, activity=not prefix)
            self.server.last_envelopes[prefix + action] = text
            return 200, text
        except Fault as f:
            text = self._fault(message_id, f, activity=not prefix)
            self.server.last_envelopes[f"{prefix}Fault:{f.subcode}"] = text
            return 500, text

    def _envelope(self, action: str, relates_to: str, body: str, activity: bool = True) -> str:
        # p:ActivityId: always in the PSRP transcripts, in only some of the WinRS ones (never in SendResponse)
        activity_id = f"<p:ActivityId>{str(uuid.uuid4()).upper()}</p:ActivityId>" if activity else ""
        return (
            f"<s:Envelope {ENVELOPE_NS}><s:Header><a:Action>{action}</a:Action>"
            f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>{activity_id}"
            f"<a:To>{ANONYMOUS}</a:To><a:RelatesTo>{escape(relates_to)}</a:RelatesTo></s:Header>"
            f"<s:Body>{body}</s:Body></s:Envelope>"
        )

    def _fault(self, relates_to: str, f: Fault, activity: bool = True) -> str:
        detail = f"<w:FaultDetail>{f.detail}</w:FaultDetail>" if f.detail else ""
        activity_id = f"<p:ActivityId>{str(uuid.uuid4()).upper()}</p:ActivityId>" if activity else ""
        return (
            f"<s:Envelope {FAULT_NS}><s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action>"
            f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
            f"{activity_id}<a:To>{ANONYMOUS}</a:To>"
            f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo></s:Header><s:Body><s:Fault><s:Code>"
            f"<s:Value>{f.code}</s:Value><s:Subcode><s:Value>{f.subcode}</s:Value></s:Subcode></s:Code>"
            f'<s:Reason><s:Text xml:lang="en-US">{escape(f.reason)}</s:Text></s:Reason><s:Detail>{detail}'
            f'<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="{f.wsman_code}" '
            f'Machine="{escape(self.server.machine.name)}"><f:Message>{escape(f.reason)}</f:Message></f:WSManFault>'
            f"</s:Detail></s:Fault></s:Body></s:Envelope>"
        )

    def _shell(self, selectors: dict[str, str]) -> Shell:
        shell_id = selectors.get("ShellId", "").upper()
        with self.server.shells_lock:
            shell = self.server.shells.get(shell_id)
        if shell is None or shell.closed:
            raise shell_not_found()
        return shell

    def _break_pool(self, shell_id: str, target: uuid.UUID | None = None) -> None:
        from psrpcore.types import ErrorCategoryInfo, ErrorRecord, NETException

        with self.server.shells_lock:
            shell = self.server.shells.get(shell_id.upper())
        if shell is None:
            return
        with shell.lock:
            record = ErrorRecord(
                Exception=NETException(Message="The remote session broke (injected fault)."),
                CategoryInfo=ErrorCategoryInfo(),
            )
            shell.pool.set_broken(record)
            for run in shell.runs.values():
                run.cancel.set()
            shell.flush()
            if target is not None:  # the Broken state reaches the client on the stream it is reading
                pool_queue = shell.queues.pop(None, deque())
                shell.queues.setdefault(target, deque()).extend(pool_queue)
                shell.cond.notify_all()

    # --- actions --------------------------------------------------------------------------------
    def _check_ps_resource(self, resource_uri: str) -> None:
        if not resource_uri.startswith(PS_RESOURCE_PREFIX):
            raise Fault(
                "s:Sender",
                "w:InvalidParameter",
                f"The WS-Management service cannot process the request. The resource URI {resource_uri} is not "
                "supported by this fake host. ",
                2150858811,
            )

    def _op_Create(
        self,
        body: ET.Element,
        resource_uri: str,
        selectors: dict[str, str],
        options: dict[str, str],
        timeout: float,
        to: str,
    ) -> tuple[str, str]:
        self._check_ps_resource(resource_uri)
        shell_el = body.find("rsp:Shell", NS)
        creation = body.find("rsp:Shell/pwsh:creationXml", NS)
        if shell_el is None or creation is None or not creation.text:
            raise Fault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ", 87)
        from psrpcore import PSRPPayload, StreamType

        shell_id = (shell_el.get("ShellId") or str(uuid.uuid4())).upper()
        shell = Shell(shell_id, resource_uri)
        with shell.lock:
            shell.pool.receive_data(PSRPPayload(base64.b64decode(creation.text), StreamType.default, None))
            self._pump(shell)
        with self.server.shells_lock:
            self.server.shells[shell_id] = shell
            self.server.pools_opened += 1
        idle = shell_el.findtext("rsp:IdleTimeOut", "PT7200.000S", NS)
        address = escape(to or f"http://127.0.0.1:{self.server.port}/wsman")
        body_xml = (
            f"<x:ResourceCreated><a:Address>{address}</a:Address><a:ReferenceParameters>"
            f"<w:ResourceURI>{escape(resource_uri)}</w:ResourceURI><w:SelectorSet>"
            f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
            f"</x:ResourceCreated>{self._shell_xml(shell, idle)}"
        )
        return "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", body_xml

    def _shell_xml(self, shell: Shell, idle: str = "PT7200.000S") -> str:
        runtime = int(time.time() - shell.created_at)
        return (
            f'<rsp:Shell xmlns:rsp="{SHELL_RESOURCE}"><rsp:ShellId>{shell.id}</rsp:ShellId>'
            f"<rsp:ResourceUri>{escape(shell.resource_uri)}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(self.server.machine.name)}\\{escape(self.server.username)}</rsp:Owner>"
            f"<rsp:ClientIP>{self.client_address[0]}</rsp:ClientIP><rsp:ProcessId>4242</rsp:ProcessId>"
            f"<rsp:IdleTimeOut>{escape(idle)}</rsp:IdleTimeOut><rsp:InputStreams>stdin pr</rsp:InputStreams>"
            f"<rsp:OutputStreams>stdout</rsp:OutputStreams><rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut>"
            f"<rsp:Locale>en-US</rsp:Locale><rsp:DataLocale>en-US</rsp:DataLocale>"
            f"<rsp:CompressionMode>NoCompression</rsp:CompressionMode><rsp:ProfileLoaded>Yes</rsp:ProfileLoaded>"
            f"<rsp:Encoding>UTF8</rsp:Encoding><rsp:BufferMode>Block</rsp:BufferMode><rsp:State>Connected</rsp:State>"
            f"<rsp:ShellRunTime>P0DT0H0M{runtime}S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S"
            f"</rsp:ShellInactivity></rsp:Shell>"
        )

    def _op_Get(
        self,
        body: ET.Element,
        resource_uri: str,
        selectors: dict[str, str],
        options: dict[str, str],
        timeout: float,
        to: str,
    ) -> tuple[str, str]:
        if resource_uri == CONFIG_RESOURCE:
            cfg = (
                '<cfg:Config xmlns:cfg="http://schemas.microsoft.com/wbem/wsman/1/config">'
                f"<cfg:MaxEnvelopeSizekb>{self.server.max_envelope_kb}</cfg:MaxEnvelopeSizekb>"
                "<cfg:MaxTimeoutms>60000</cfg:MaxTimeoutms><cfg:MaxBatchItems>32000</cfg:MaxBatchItems>"
                "<cfg:MaxProviderRequests>4294967295</cfg:MaxProviderRequests></cfg:Config>"
            )
            return "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse", cfg
        if resource_uri == SHELL_RESOURCE:
            shell = self._shell(selectors)
            return "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse", self._shell_xml(shell)
        raise action_not_supported(f"Get {resource_uri}")

    def _op_Delete(
        self,
        body: ET.Element,
        resource_uri: str,
        selectors: dict[str, str],
        options: dict[str, str],
        timeout: float,
        to: str,
    ) -> tuple[str, str]:
        self._check_ps_resource(resource_uri)
        shell = self._shell(selectors)
        with shell.lock:
            shell.closed = True
            for run in shell.runs.values():
                run.cancel.set()
                run.input_done.set()
            shell.pool.pipeline_table.clear()
            shell.cond.notify_all()
        with self.server.shells_lock:
            self.server.shells.pop(shell.id, None)
        return "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", ""

    def _op_Command(
        self,
        body: ET.Element,
        resource_uri: str,
        selectors: dict[str, str],
        options: dict[str, str],
        timeout: float,
        to: str,
    ) -> tuple[str, str]:
        self._check_ps_resource(resource_uri)
        shell = self._shell(selectors)
        line = body.find("rsp:CommandLine", NS)
        args = body.findtext("rsp:CommandLine/rsp:Arguments", "", NS)
        if line is None:
            raise Fault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ", 87)
        command_id = uuid.UUID(line.get("CommandId") or str(uuid.uuid4()))
        import psrpcore
        from psrpcore import PSRPPayload, StreamType

        with shell.lock:
            pipeline = psrpcore.ServerPipeline(shell.pool, command_id)  # must exist before its fragment arrives
            run = PipelineRun(pipeline, command_id)
            shell.runs[command_id] = run
            shell.pool.receive_data(PSRPPayload(base64.b64decode(args), StreamType.default, command_id))
            self._pump(shell)
        body_xml = (
            f"<rsp:CommandResponse><rsp:CommandId>{str(command_id).upper()}</rsp:CommandId></rsp:CommandResponse>"
        )
        return "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse", body_xml

    def _op_Send(
        self,
        body: ET.Element,
        resource_uri: str,
        selectors: dict[str, str],
        options: dict[str, str],
        timeout: float,
        to: str,
    ) -> tuple[str, str]:
        self._check_ps_resource(resource_uri)
        shell = self._shell(selectors)
        from psrpcore import PSRPPayload, StreamType

        with shell.lock:
            for stream in body.findall("rsp:Send/rsp:Stream", NS):
                cid = stream.get("CommandId")
                pid = uuid.UUID(cid) if cid else None
                if pid is not None and pid not in shell.runs:
                    raise shell_not_found(command=True)
                stype = StreamType.prompt_response if stream.get("Name") == "pr" else StreamType.default
                shell.pool.receive_data(PSRPPayload(base64.b64decode(stream.text or ""), stype, pid))
            self._pump(shell)
        return "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse", "<rsp:SendResponse/>"

    def _op_Signal(
        self,
        body: ET.Element,
        resource_uri: str,
        selectors: dict[str, str],
        options: dict[str, str],
        timeout: float,
        to: str,
    ) -> tuple[str, str]:
        self._check_ps_resource(resource_uri)
        shell = self._shell(selectors)
        signal = body.find("rsp:Signal", NS)
        code = body.findtext("rsp:Signal/rsp:Code", "", NS).strip()
        cid = signal.get("CommandId") if signal is not None else None
        from psrpcore.types import PSInvocationState

        with shell.lock:
            run = shell.runs.get(uuid.UUID(cid)) if cid else None
            if cid and run is None:
                raise shell_not_found(command=True)
            if run is not None:
                run.cancel.set()
                run.input_done.set()
                pipe = run.pipeline
                if pipe.state == PSInvocationState.Running:
                    pipe.begin_stop()
                    pipe.stop()
                    run.done = True
                    shell.flush()
                if code == SIGNAL_TERMINATE or code == SIGNAL_CTRL_C:
                    if pipe.state != PSInvocationState.Running:
                        shell.pool.pipeline_table.pop(run.command_id, None)
                    if code == SIGNAL_TERMINATE:
                        shell.runs.pop(run.command_id, None)
                        shell.queues.pop(run.command_id, None)
                shell.cond.notify_all()
        return "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse", "<rsp:SignalResponse/>"

    def _op_Receive(
        self,
        body: ET.Element,
        resource_uri: str,
        selectors: dict[str, str],
        options: dict[str, str],
        timeout: float,
        to: str,
    ) -> tuple[str, str]:
        self._check_ps_resource(resource_uri)
        shell = self._shell(selectors)
        desired = body.find("rsp:Receive/rsp:DesiredStream", NS)
        cid = desired.get("CommandId") if desired is not None else None
        target = uuid.UUID(cid) if cid else None
        deadline = receive_deadline(timeout)
        if self.server.take_fault("Receive", ("broken",)) == "broken":
            self._break_pool(shell.id, target)
        with shell.lock:
            if target is not None and target not in shell.runs:
                raise shell_not_found(command=True)

            def ready() -> bool:
                run = shell.runs.get(target) if target is not None else None
                return bool(shell.queues.get(target)) or (run is not None and run.done and not run.done_sent)

            long_poll(self.server, shell, ready, deadline)
            queue = shell.queues.get(target)
            run = shell.runs.get(target) if target is not None else None
            streams = []
            attr = f' CommandId="{str(target).upper()}"' if target is not None else ""
            while queue:
                streams.append(
                    f'<rsp:Stream Name="stdout"{attr}>{base64.b64encode(queue.popleft()).decode()}</rsp:Stream>'
                )
            state = ""
            if run is not None and run.done and not queue:
                run.done_sent = True
                state = (
                    f'<rsp:CommandState CommandId="{str(target).upper()}" State="{DONE}">'
                    "<rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>"
                )
        return (
            "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse",
            f"<rsp:ReceiveResponse>{''.join(streams)}{state}</rsp:ReceiveResponse>",
        )

    # --- PSRP events and the script executor ----------------------------------------------------
    def _pump(self, shell: Shell) -> None:
        """Process every complete PSRP message received so far (shell lock held)."""
        from psrpcore import CreatePipelineEvent, EndOfPipelineInputEvent, PipelineInputEvent

        while True:
            event = shell.pool.next_event()
            if event is None:
                break
            if isinstance(event, CreatePipelineEvent):
                run = shell.runs.get(event.pipeline_id)
                if run is None:
                    continue
                run.metadata = event.pipeline
                if run.metadata.no_input:
                    run.input_done.set()
                run.thread = threading.Thread(
                    target=_execute,
                    args=(self.server, shell, run),
                    name=f"fakehost-pipeline-{run.command_id}",
                    daemon=True,
                )
                run.thread.start()
            elif isinstance(event, PipelineInputEvent):
                run = shell.runs.get(event.pipeline_id)
                if run is not None:
                    run.inputs.append(event.data)
            elif isinstance(event, EndOfPipelineInputEvent):
                run = shell.runs.get(event.pipeline_id)
                if run is not None:
                    run.input_done.set()
        shell.flush()


class _Reset(Exception):
    pass


class _Hang(Exception):
    pass


def _fail(shell: Shell, run: PipelineRun, message: str, error_id: str, category: int = 0) -> None:
    """End the pipeline with a terminating error (PipelineState=Failed), as PowerShell does."""
    from psrpcore.types import ErrorCategoryInfo, ErrorRecord, NETException, PSInvocationState

    record = ErrorRecord(
        Exception=NETException(Message=message),
        CategoryInfo=ErrorCategoryInfo(Category=category, Reason="RuntimeException"),
        FullyQualifiedErrorId=error_id,
    )
    # psrpcore 0.3.1 has no public fail(); its author's demo server does the same (pinned ==0.3.1)
    run.pipeline._change_state(PSInvocationState.Failed, record)


def _execute(server: WSManServer, shell: Shell, run: PipelineRun) -> None:
    from psrpcore.types import PSInvocationState

    with shell.lock:
        if run.pipeline.state == PSInvocationState.NotStarted:
            run.pipeline.start()
    try:
        commands = list(run.metadata.commands)
        if len(commands) != 1 or not commands[0].is_script:
            raise _Terminating(
                "The fake Windows host runs only the project's own scripts, each as one add_script() command.",
                "CommandNotFoundException",
            )
        command = commands[0]
        configuration = shell.resource_uri.rsplit("/", 1)[-1].lower()
        if configuration in server.no_language_endpoints:
            raise _Terminating(
                "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode.",
                "ScriptsNotAllowed",
            )
        info = known_scripts().get(script_hash(command.command_text))
        if info is not None and info.name == "Invoke-HandlerRunner":
            raise _Terminating(
                "Invoke-HandlerRunner.ps1 runs only in the handler's scheduled task, never in a remoting pipeline.",
                "CommandNotFoundException",
            )
        if info is None:
            raise _Terminating(
                "The term '<script>' is not recognized: the script is not one of arcext's own agent scripts "
                f"(sha256 {script_hash(command.command_text)[:16]}).",
                "CommandNotFoundException",
            )
        try:
            params = bind(info, list(command.parameters))
        except BindingError as exc:
            raise _Terminating(str(exc), "ParameterBindingException") from None
        _scope_check(server, shell, info, command.use_local_scope)
        while not run.input_done.wait(0.5):
            if run.cancel.is_set() or server.stopping.is_set():
                return
        if run.cancel.is_set():
            return
        output = server.machine.run_script(info.name, params, list(run.inputs), run.cancel)
        with shell.lock:
            if run.pipeline.state == PSInvocationState.Running and not shell.closed:
                run.pipeline.write_output(output)
                run.pipeline.complete()
    except _Terminating as exc:
        with shell.lock:
            if run.pipeline.state == PSInvocationState.Running:
                _fail(shell, run, exc.message, exc.error_id)
    except ScriptFailure as exc:
        with shell.lock:
            if run.pipeline.state == PSInvocationState.Running:
                _fail(shell, run, str(exc), "RuntimeException")
    except Exception as exc:  # a bug in the model: surface it as a terminating error, never hang
        log.exception("fake host script failed")
        with shell.lock:
            if run.pipeline.state == PSInvocationState.Running:
                _fail(shell, run, f"Internal fake-host error: {exc}", "FakeHostInternalError")
    finally:
        with shell.lock:
            run.done = True
            if not shell.closed:
                shell.flush()
            shell.cond.notify_all()


def _scope_check(server: WSManServer, shell: Shell, info: Any, use_local_scope: bool | None) -> None:
    """PowerShell runs an ``AddScript`` command with UseLocalScope unset or false in the runspace's
    global scope, as if dot-sourced: its variables stay there for every later pipeline of the pool,
    typed ones with their type constraint (``[hashtable]$Environment``), and a later script that
    assigns a value of another type to that name fails with "Cannot convert ...". The host refuses
    such a pipeline outright unless ``allow_dot_sourcing``; then it models the leftovers."""
    from .pscheck import assigned_variables, converts_to, typed_variables

    if use_local_scope:
        return
    if not server.allow_dot_sourcing:
        raise _Terminating(
            f"{info.name}.ps1 would run dot-sourced in the runspace pool's global scope (UseLocalScope is "
            f"{use_local_scope}); arcext's agent scripts must run with useLocalScope=true so that no "
            "variable outlives the script.",
            "ScopeSharingRefused",
        )
    with shell.lock:
        for name, rhs in assigned_variables(info.text).items():
            left = shell.global_constraints.get(name)
            if left is not None and left[1] != info.name and not converts_to(left[0], rhs):
                raise _Terminating(
                    f'Cannot convert the value of "{rhs[:60]}" to type "{left[0]}": ${name} was left '
                    f"type-constrained in the global scope by {left[1]}.ps1.",
                    "RuntimeException",
                )
        for name, type_ in typed_variables(info.text).items():
            shell.global_constraints[name] = (type_, info.name)


class _Terminating(Exception):
    def __init__(self, message: str, error_id: str) -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id
