"""Serve a WSGI app with Werkzeug's threaded server, in the foreground or in a background thread."""

from __future__ import annotations

import gc
import ssl
import threading
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

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
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True, ssl_context=tls)
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
