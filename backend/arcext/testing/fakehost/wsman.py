"""The HTTP side of a fake Windows host: a WS-Management endpoint that unmodified pypsrp and pywinrm
accept.

One ``WSManServer`` is one fake Windows host: HTTP/1.1 keep-alive on 127.0.0.1, Basic auth (meant
for TLS) or NTLM with WinRM message encryption (:mod:`.encryption`). Each request's envelope
(:mod:`.soap`) goes to the shell resource it names: the PowerShell resource (:mod:`.psrp`, runspace
pools and pipelines) or the cmd shell (:mod:`.winrs`); the WinRM configuration's Get is answered
here. Faults on demand (:mod:`.injection`, :meth:`WSManServer.inject`): an HTTP 401, a WSManFault
500, a TCP reset, a Receive that never answers, a broken runspace pool.
"""

from __future__ import annotations

import base64
import logging
import socket
import ssl
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .encryption import ENCRYPTED_CONTENT_TYPE, AuthenticationFailed, NtlmConnection
from .injection import ConnectionReset, FaultPlan, Hang
from .machine import WindowsMachine
from .psrp import PsrpEndpoint
from .runspace import Shell
from .soap import (
    ACTION_NAMES,
    CMD_RESOURCE,
    CONFIG_RESOURCE,
    RESPONSE,
    Fault,
    Request,
    access_denied,
    action_not_supported,
    fault_envelope,
    internal_error,
    read_envelope,
    response_envelope,
)
from .winrs import WinrsEndpoint

log = logging.getLogger("arcext.fakehost")


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
        self.fault_plan = FaultPlan()
        self.stopping = threading.Event()
        #: a pipeline that would dot-source a project script (UseLocalScope not true) is refused,
        #: as the agent scripts must never share the pool's global scope; with this set it runs
        #: instead, and the model keeps the typed variables it leaves behind (see pipelines.scope_check)
        self.allow_dot_sourcing = False
        #: session configurations (lower-case name) that are JEA endpoints in NoLanguage mode: they run
        #: only the cmdlets of their role capabilities, never an AddScript pipeline
        self.no_language_endpoints: set[str] = set()
        #: every request's action name in arrival order (round-trip counting)
        self.actions: list[str] = []
        #: last envelopes per action/fault, for the fidelity comparison with real transcripts
        self.last_envelopes: dict[str, str] = {}
        self._open_connections: set[socket.socket] = set()
        #: the PowerShell resource (pypsrp's side of the host): runspace pools
        self.psrp = PsrpEndpoint(self)
        #: the WinRS cmd shell resource (pywinrm's side of the host)
        self.winrs = WinrsEndpoint(self)
        super().__init__(address, _Handler)

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def shells(self) -> dict[str, Shell]:
        """The open runspace pools by shell id."""
        return self.psrp.shells

    @property
    def pools_opened(self) -> int:
        """Shells ever created (runspace pools and WinRS cmd shells), for the one-shell-per-job assertion."""
        return self.psrp.shells_opened + self.winrs.shells_opened

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
        self.psrp.stop()
        self.shutdown()
        for conn in list(self._open_connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()

    # --- faults ---------------------------------------------------------------------------------
    def inject(self, action: str, kind: str, count: int = 1) -> None:
        self.fault_plan.inject(action, kind, count)

    def clear_faults(self) -> None:
        self.fault_plan.clear()

    def take_fault(self, action: str, kinds: tuple[str, ...] | None = None) -> str | None:
        return self.fault_plan.take(action, kinds)

    def open_shells(self) -> list[str]:
        """Ids of the shells still open: runspace pools and WinRS cmd shells."""
        with self.psrp.lock:
            pools = list(self.psrp.shells)
        with self.winrs.lock:
            return pools + list(self.winrs.shells)

    # --- what a request asks ------------------------------------------------------------------------
    def dispatch(self, body: bytes, client_ip: str) -> tuple[int, str]:
        """(HTTP status, response envelope) of one SOAP request; raises ConnectionReset or Hang for
        an injected fault, ValueError (or ElementTree.ParseError) for a body that is not a SOAP envelope."""
        env = read_envelope(body)
        self.actions.append(env.action)
        winrs = env.resource_uri == CMD_RESOURCE
        prefix = "WinRS:" if winrs else ""  # last_envelopes keys per protocol
        try:
            self._injected(env.action)
            request = Request.parse(env, client_ip)
            if env.action_uri not in ACTION_NAMES:
                raise action_not_supported(env.action_uri)
            if winrs:
                response_action, response_body = self.winrs.handle(env.action, request)
            elif env.action == "Get" and env.resource_uri == CONFIG_RESOURCE:
                response_action, response_body = RESPONSE["Get"], self._config()
            else:
                response_action, response_body = self.psrp.handle(env.action, request)
            text = response_envelope(response_action, env.message_id, response_body, activity=not winrs)
            self.last_envelopes[prefix + env.action] = text
            return 200, text
        except Fault as f:
            text = fault_envelope(env.message_id, f, self.machine.name, activity=not winrs)
            self.last_envelopes[f"{prefix}Fault:{f.subcode}"] = text
            return 500, text

    def _injected(self, action: str) -> None:
        fault = self.fault_plan.take(action, ("401", "500", "reset", "hang"))
        if fault == "reset":
            raise ConnectionReset()
        if fault == "hang":
            raise Hang()
        if fault == "401":
            raise access_denied()
        if fault == "500":
            raise internal_error()

    def _config(self) -> str:
        """The WinRM service configuration (pypsrp reads MaxEnvelopeSizekb from it)."""
        return (
            '<cfg:Config xmlns:cfg="http://schemas.microsoft.com/wbem/wsman/1/config">'
            f"<cfg:MaxEnvelopeSizekb>{self.max_envelope_kb}</cfg:MaxEnvelopeSizekb>"
            "<cfg:MaxTimeoutms>60000</cfg:MaxTimeoutms><cfg:MaxBatchItems>32000</cfg:MaxBatchItems>"
            "<cfg:MaxProviderRequests>4294967295</cfg:MaxProviderRequests></cfg:Config>"
        )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: WSManServer
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        self.ntlm = NtlmConnection()  # one NTLM context per connection (NTLM is connection-bound)

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
                body = self.ntlm.unwrap(body, content_type)
            except Exception as exc:  # noqa: BLE001 - a message sealed for another context (stale client)
                log.info("cannot decrypt a message: %s", exc)
                self.ntlm.reset()
                self._send(400, b"", {})
                return
        try:
            status, text = self.server.dispatch(body, self.client_address[0])
        except ConnectionReset:
            self._reset()
            return
        except Hang:
            self.server.stopping.wait()
            self.close_connection = True
            return
        payload = text.encode("utf-8")
        if self.server.auth == "ntlm":
            self._send(status, self.ntlm.wrap(payload), {"Content-Type": ENCRYPTED_CONTENT_TYPE})
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
        if self.ntlm.authenticated and not header:
            return True
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("negotiate", "ntlm") or not token:
            self.ntlm.forget()
            self._send(401, b"", {"WWW-Authenticate": "Negotiate"})
            return False
        try:
            out = self.ntlm.step(token)
        except AuthenticationFailed as exc:
            log.info("NTLM authentication failed: %s", exc)
            self._send(401, b"", {"WWW-Authenticate": "Negotiate"})
            return False
        if out is not None:
            self._send(401, b"", {"WWW-Authenticate": f"{scheme} " + base64.b64encode(out).decode()})
            return False
        return True
