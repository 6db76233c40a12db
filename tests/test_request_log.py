"""The request log (arcext.request_log): request threads only queue their lines; the log's own thread hands them to
logging, every line once, in order, with the time its request ended; close() hands over what is left."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from arcext.request_log import RequestLine, RequestLog


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[logging.LogRecord, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record, threading.current_thread().name))


@pytest.fixture
def kept() -> Iterator[tuple[logging.Logger, _Kept]]:
    logger = logging.getLogger("arcext.requests.test")
    handler = _Kept()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)


def _line(n: int, t: int = 0, ended: float = 1_700_000_000.25) -> RequestLine:
    return RequestLine(ended, "GET", f"/x/{t}/{n}", "/x/<t>/<n>", 200, 0.0012, f"r-{t}-{n}", "c", None, "owner")


def test_lines_from_many_threads_are_handed_over_once_in_order_by_the_logs_thread(
    kept: tuple[logging.Logger, _Kept],
) -> None:
    logger, handler = kept
    request_log = RequestLog(logger, delay=0.005)
    threads_n, lines_n = 8, 500

    def requests(t: int) -> None:
        for n in range(lines_n):
            request_log.add(_line(n, t))

    workers = [threading.Thread(target=requests, args=(t,), name=f"request-{t}") for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    deadline = time.monotonic() + 10
    while len(handler.records) < threads_n * lines_n:
        assert time.monotonic() < deadline, f"{len(handler.records)} lines handed over"
        time.sleep(0.01)
    request_log.close()
    assert len(handler.records) == threads_n * lines_n
    assert {name for _record, name in handler.records} == {"arcext-request-log"}  # never a request thread
    for t in range(threads_n):
        mine = [r.getMessage() for r, _ in handler.records if r.fields["x-ms-request-id"].startswith(f"r-{t}-")]  # type: ignore[attr-defined]
        assert mine == [f"GET /x/{t}/{n} -> 200 (request r-{t}-{n}, caller owner)" for n in range(lines_n)]


def test_a_record_has_its_requests_time_and_fields(kept: tuple[logging.Logger, _Kept]) -> None:
    logger, handler = kept
    request_log = RequestLog(logger)
    line = RequestLine(1_700_000_000.25, "PUT", "/m/a", "/m/<name>", 201, 0.0421, "req", "corr", "client", None)
    request_log.add(line)
    request_log.close()
    ((record, _thread),) = handler.records
    assert (record.created, record.msecs, record.levelno, record.name) == (
        1_700_000_000.25,
        250.0,
        logging.INFO,
        "arcext.requests.test",
    )
    assert record.getMessage() == "PUT /m/a -> 201 (request req, caller -)"
    assert record.fields == {  # type: ignore[attr-defined]
        "event": "http.request",
        "method": "PUT",
        "route": "/m/<name>",
        "path": "/m/a",
        "status": 201,
        "durationMs": 42.1,
        "x-ms-request-id": "req",
        "x-ms-correlation-request-id": "corr",
        "x-ms-client-request-id": "client",
        "caller": None,
    }


def test_close_hands_over_what_is_queued_and_later_lines_at_once(kept: tuple[logging.Logger, _Kept]) -> None:
    logger, handler = kept
    request_log = RequestLog(logger, delay=30)  # its thread would not hand anything over during this test
    for n in range(50):
        request_log.add(_line(n))
    assert handler.records == []
    request_log.close()
    assert len(handler.records) == 50
    request_log.add(_line(50))
    assert len(handler.records) == 51


def test_off_below_info(kept: tuple[logging.Logger, _Kept]) -> None:
    logger, _handler = kept
    logger.setLevel(logging.WARNING)
    assert not RequestLog(logger).enabled()
    logger.setLevel(logging.INFO)
    assert RequestLog(logger).enabled()
