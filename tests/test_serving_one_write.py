"""arcext.serving_gunicorn.OneWriteResponse sends what gunicorn's own Response sends, byte for byte, and a whole body
with its head in one write. Both classes are driven the way gthread drives them (start_response, write per body
item, close) over a socket that records each sendall, for responses of every shape: a JSON answer, keep-alive and
close, HTTP/1.0, HEAD, 204, 304, a body in pieces, a streamed (chunked) body, a large body, an empty body."""

from __future__ import annotations

from typing import Any

import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http.wsgi import Response

from arcext.serving_gunicorn import ONE_WRITE_MAX, OneWriteResponse


class Sent:
    """A socket that records every sendall."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


class Req:
    def __init__(self, method: str, version: tuple[int, int], close: bool) -> None:
        self.method = method
        self.version = version
        self._close = close

    def should_close(self) -> bool:
        return self._close


JSON = b'{"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/m1", "name": "m1"}'
CASES: dict[str, tuple[str, tuple[int, int], bool, str, list[tuple[str, str]], list[bytes]]] = {
    "json keep-alive": ("GET", (1, 1), False, "200 OK", [("Content-Type", "application/json")], [JSON]),
    "json, client closes": ("GET", (1, 1), True, "200 OK", [("Content-Type", "application/json")], [JSON]),
    "HTTP/1.0": ("GET", (1, 0), False, "200 OK", [("Content-Type", "application/json")], [JSON]),
    "202 with Location": ("PUT", (1, 1), False, "202 Accepted", [("Location", "http://x/op/1")], [JSON]),
    "HEAD": ("HEAD", (1, 1), False, "200 OK", [("Content-Type", "application/json")], [JSON]),
    "204": ("DELETE", (1, 1), False, "204 No Content", [], [b""]),
    "304": ("GET", (1, 1), False, "304 Not Modified", [("ETag", '"1"')], [b""]),
    "body in pieces": ("GET", (1, 1), False, "200 OK", [], [JSON[:10], JSON[10:]]),
    "chunked (no length)": ("GET", (1, 1), False, "200 OK", [], [JSON[:10], JSON[10:]]),
    "large body": ("GET", (1, 1), False, "200 OK", [], [b"x" * (ONE_WRITE_MAX + 1)]),
    "empty body": ("GET", (1, 1), False, "200 OK", [], [b""]),
}


def drive(cls: type[Any], case: str) -> list[bytes]:
    method, version, close, status, headers, body = CASES[case]
    sock = Sent()
    resp = cls(Req(method, version, close), sock, Config())
    length = [] if case == "chunked (no length)" else [("Content-Length", str(sum(map(len, body))))]
    if status.startswith("204"):
        length = []
    write = resp.start_response(status, headers + length)
    for item in body:
        write(item)
    resp.close()
    return sock.writes


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(util, "http_date", lambda *_: "Sat, 05 Dec 2026 10:00:00 GMT")


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_same_bytes_as_gunicorns_response(case: str) -> None:
    assert b"".join(drive(OneWriteResponse, case)) == b"".join(drive(Response, case))


@pytest.mark.parametrize("case", ["json keep-alive", "json, client closes", "HTTP/1.0", "202 with Location"])
def test_a_whole_body_goes_with_its_head_in_one_write(case: str) -> None:
    assert len(drive(Response, case)) == 2, "gunicorn's own: the head, then the body"
    (only,) = drive(OneWriteResponse, case)
    assert only.startswith(b"HTTP/1.") and only.endswith(JSON)


@pytest.mark.parametrize("case", ["HEAD", "204", "body in pieces", "chunked (no length)", "large body"])
def test_other_shapes_take_gunicorns_path(case: str) -> None:
    assert drive(OneWriteResponse, case) == drive(Response, case)


def test_the_worker_makes_its_responses_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn.http import wsgi

    from arcext.serving_gunicorn import ArmThreadWorker

    monkeypatch.setattr(wsgi, "Response", wsgi.Response)  # restored after the test
    monkeypatch.setattr("gunicorn.workers.gthread.ThreadWorker.init_process", lambda self: None)
    ArmThreadWorker.init_process(object.__new__(ArmThreadWorker))
    assert wsgi.Response is OneWriteResponse
