"""Serve a WSGI app with Werkzeug's threaded server, in the foreground or in a background thread."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


def ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class ServerThread:
    """A real HTTP(S) server on ``host:port`` (port 0 picks a free one) running in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True, ssl_context=tls)
        self.host = host
        self.port = self.server.server_port
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self.server.serve_forever, name="arcext-http", daemon=True)

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
