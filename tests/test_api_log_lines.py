"""Request log lines written to a file without the handler's lock (logging_setup.LineHandler) are the lines the
stock StreamHandler writes, whole, one per record, however many threads log at once."""

from __future__ import annotations

import io
import json
import logging
import threading
from pathlib import Path

from arcext.logging_setup import JsonFormatter, LineHandler, TextFormatter, configure


def _record(text: str) -> logging.LogRecord:
    return logging.LogRecord("arcext.requests", logging.INFO, __file__, 1, "GET %s -> %s", (text, 200), None)


def test_a_file_gets_the_stock_handlers_bytes(tmp_path: Path) -> None:
    """Same formatter, same records: the file holds exactly what StreamHandler writes (non-ASCII and long too)."""
    texts = ["/subscriptions/a", "/caf\u00e9/\u6f22\u5b57", "x" * 100_000, "lone \udc80 surrogate"]
    for formatter in (JsonFormatter(), TextFormatter()):
        path = tmp_path / f"{type(formatter).__name__}.log"
        with open(path, "w", encoding="utf-8", errors="backslashreplace") as out:
            handler = LineHandler(out)
            handler.setFormatter(formatter)
            stock_out = io.StringIO()
            stock = logging.StreamHandler(stock_out)
            stock.setFormatter(formatter)
            for text in texts:
                record = _record(text)
                record.fields = {"event": "http.request", "path": text}
                handler.handle(record)
                stock.handle(record)
            assert handler._direct is not None and handler._direct[1] >= 0  # the lock-free path was taken
        expected = stock_out.getvalue().encode("utf-8", "backslashreplace")
        assert path.read_bytes() == expected


def test_concurrent_lines_never_mix(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    with open(path, "w", encoding="utf-8") as out:
        handler = configure("json", stream=out)
        assert isinstance(handler, LineHandler)
        log = logging.getLogger("arcext.requests")
        threads_n, lines_n = 12, 300

        def writer(t: int) -> None:
            for n in range(lines_n):
                # every 50th line is longer than a pipe's atomic write
                pad = "p" * (70_000 if n % 50 == 0 else n)
                log.info("line %s %s", t, n, extra={"fields": {"thread": t, "n": n, "pad": pad}})

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            logging.getLogger().removeHandler(handler)
    seen = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        body = json.loads(line)  # a mixed line would not parse
        assert body["message"] == f"line {body['thread']} {body['n']}"
        seen.add((body["thread"], body["n"]))
    assert len(seen) == threads_n * lines_n


def test_a_stream_without_a_file_takes_the_stock_path() -> None:
    out = io.StringIO()
    handler = LineHandler(out)
    handler.setFormatter(TextFormatter())
    handler.handle(_record("/hello"))
    assert out.getvalue().endswith("arcext.requests: GET /hello -> 200\n")


def test_text_lines_are_logging_formatters_text() -> None:
    """TextFormatter's own path for plain records writes what logging.Formatter writes with the same format (and
    sets the same record attributes); records with an exception or a stack take logging's path."""
    stock = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = TextFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        exc_info = sys.exc_info()
    records = [
        logging.LogRecord("arcext.requests", logging.INFO, __file__, 1, "GET %s -> %s", ("/a", 200), None),
        logging.LogRecord("x", logging.WARNING, __file__, 1, "%d%% done", (50,), None),
        logging.LogRecord("x", logging.ERROR, __file__, 1, {"not": "a string"}, None, None),
        logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, exc_info),
        logging.LogRecord("x", logging.INFO, __file__, 1, "with stack", None, None, sinfo="Stack (most recent)"),
    ]
    for record in records:
        ours_text = ours.format(record)
        ours_attrs = (record.message, record.asctime)
        assert ours_text == stock.format(record)
        assert ours_attrs == (record.message, record.asctime)
    record = _record("/b")
    record.fields = {"event": "http.request", "path": "/b", "status": 200, "caller": None}
    assert ours.format(record) == stock.format(record) + " path=/b status=200 caller=None"
