"""A real local HTTP receiver for webhook tests: verifies every delivery with the standardwebhooks library."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


class Receiver:
    """Listens on 127.0.0.1; ``status`` is what it answers (200, or 503 to play down, 410 to play gone)."""

    def __init__(self, secret: str, port: int = 0) -> None:
        self.secret = secret
        self.status = 200
        self.received: list[dict[str, Any]] = []  # verified deliveries (every attempt that got a 2xx)
        self.refused = 0  # attempts answered with a non-2xx status
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                except Exception:
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver.lock:
                    status = receiver.status
                    if 200 <= status < 300:
                        receiver.received.append({"headers": headers, "event": json.loads(body)})
                    else:
                        receiver.refused += 1
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["event"] for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
