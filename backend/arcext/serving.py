"""Werkzeug's threaded server in a background thread: the in-process test harness (arcext.testing) and the
baseline of scripts/bench_api.py. ``arcext serve`` runs on gunicorn (serving_gunicorn.py); see docs/deploy.md."""

from __future__ import annotations

import gc
import ssl
import threading
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .serving_errors import protocol_error

#: The cyclic GC's thresholds in a server process (``arcext serve``). The fleet lives in memory, and
#: every upgrade step replaces an extension record with new objects: with CPython's defaults
#: (700, 10, 10) a full collection ran whenever a quarter of the heap was new, three of them (0.8 s of
#: CPU) in a 30,000-job rollout of bench_rollout; with these, 0.2 s. Only cyclic garbage waits longer
#: (nothing the store holds forms cycles; refcounting frees the rest at once). Set per process, so the
#: test harness, which serves in the caller's process, leaves the caller's GC alone.
SERVER_GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc_for_serving() -> None:
    gc.set_threshold(*SERVER_GC_THRESHOLDS)


def ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


#: The longest request line Python's http.server reads (longer ones get an ARM-shaped 414).
WERKZEUG_REQUEST_LINE_LIMIT = 65536


class ArmRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, but the errors it sends itself (an over-long request line, too many or too long
    headers, a request that is not HTTP) use the ARM error envelope in JSON, not an HTML page; a request in an
    HTTP version the server does not speak is the client's error (400), never a 5xx."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code >= 500:
            code = 400
        answer = protocol_error(code, message, request_line_limit=WERKZEUG_REQUEST_LINE_LIMIT)
        self.log_error("code %d, message %s", code, message or answer.reason)
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # a line that is not HTTP still gets a status line and headers
        self.send_response(answer.status, answer.reason)
        for name, value in answer.headers():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)


class ServerThread:
    """A real HTTP(S) server on ``host:port`` (port 0 picks a free one) running in a daemon thread."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        poll_interval: float = 0.5,  # how long stop() may wait for the accept loop to notice
    ) -> None:
        self.server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, ssl_context=tls, request_handler=ArmRequestHandler
        )
        self.host = host
        self.port = self.server.server_port
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(poll_interval,), name="arcext-http", daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
