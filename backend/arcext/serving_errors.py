"""The ARM error envelope for requests an HTTP server rejects itself, before the app sees them.

Both servers arcext runs on (gunicorn for ``arcext serve``, Werkzeug's in the test harness) answer
an unreadable request line, an over-long URL or too many/too long header fields with the JSON body
ARM clients parse (``{"error": {"code", "message"}}``), never an HTML page. See docs/deploy.md.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from http import HTTPStatus

#: ARM error codes of the statuses a server answers itself.
PROTOCOL_CODES = {
    400: "BadRequest",
    403: "Forbidden",
    408: "RequestTimeout",
    413: "RequestEntityTooLarge",
    414: "RequestUriTooLong",
    417: "ExpectationFailed",
    431: "RequestHeaderFieldsTooLarge",
    500: "InternalServerError",
}


@dataclass(frozen=True)
class ProtocolError:
    """One answer of the server itself: status line parts and the JSON body."""

    status: int
    reason: str
    body: bytes

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("x-ms-request-id", str(uuid.uuid4())),
            ("Connection", "close"),
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(self.body))),
        ]

    def http_response(self) -> bytes:
        """The whole HTTP/1.1 response (status line, headers, body), for a server writing to the socket."""
        head = f"HTTP/1.1 {self.status} {self.reason}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in self.headers())
        return (head + "\r\n").encode("latin-1") + self.body


def protocol_error(status: int, detail: str | None = None, *, request_line_limit: int) -> ProtocolError:
    """The answer to a request the server could not accept; ``detail`` is the server's own words (a parse
    error), used only in the generic 400 message."""
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Bad Request"
    message = {
        414: f"The request URL is too long for this server (the request line is limited to {request_line_limit} "
        "bytes).",
        431: "The request has too many header fields, or one that is too long.",
        500: "The server could not process the request.",
    }.get(status, f"The request could not be read as HTTP/1.1: {detail or reason}.")
    code = PROTOCOL_CODES.get(status, reason.replace(" ", ""))
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return ProtocolError(status, reason, body)
