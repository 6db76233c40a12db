"""Request log lines written in batches by logging_setup.LineHandler are the lines the stock StreamHandler writes,
whole, one per record, in order, however many threads log at once; a warning goes out at once, after the lines
before it; a pipe gets whole lines, at most PIPE_BUF bytes per write; a forked child never writes its parent's
lines."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from arcext import logging_setup
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
            assert handler._fd_target() is not None  # the batched path was taken
            handler.flush()
        expected = stock_out.getvalue().encode("utf-8", "backslashreplace")
        assert path.read_bytes() == expected


def test_concurrent_lines_never_mix(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    with open(path, "w", encoding="utf-8") as out:
        handler = configure("json", stream=out)
        assert isinstance(handler, LineHandler)
        log = logging.getLogger("arcext.test.concurrent-lines")
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
            handler.close()
    seen = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        body = json.loads(line)  # a mixed line would not parse
        if body["logger"] != "arcext.test.concurrent-lines":
            continue  # another test's server, still serving in this process, logged while the handler was on
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


class _CountedWrites:
    """os.write as logging_setup calls it, counted (the sizes of the writes to one descriptor)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sizes: list[int] = []
        self._real = os.write

    def __call__(self, fd: int, data: Any) -> int:
        if fd == self.fd:
            self.sizes.append(len(data))
        return self._real(fd, data)


def test_info_lines_wait_for_a_batch_and_a_warning_writes_them_first(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "server.log"
    with open(path, "w", encoding="utf-8") as out:
        writes = _CountedWrites(out.fileno())
        monkeypatch.setattr(logging_setup.os, "write", writes)
        handler = LineHandler(out, batch_seconds=30)  # the writer thread will not write during this test
        handler.setFormatter(TextFormatter())
        for n in range(200):
            handler.handle(_record(f"/info/{n}"))
        assert path.read_text() == "" and writes.sizes == []  # queued, not written
        warning = logging.LogRecord("arcext.engine", logging.WARNING, __file__, 1, "a warning", (), None)
        handler.handle(warning)
        lines = path.read_text().splitlines()  # written before handle() returned, in one write
        assert len(writes.sizes) == 1
        assert [line.split(": ", 1)[1] for line in lines] == [f"GET /info/{n} -> 200" for n in range(200)] + [
            "a warning"
        ]
        handler.handle(_record("/after"))
        handler.close()  # close writes what is queued
        assert path.read_text().splitlines()[-1].endswith("GET /after -> 200")
        handler.handle(_record("/closed"))  # after close: the stock path, still written
        out.flush()
        assert path.read_text().splitlines()[-1].endswith("GET /closed -> 200")


def test_the_writer_thread_writes_a_batch_on_its_own(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "server.log"
    with open(path, "w", encoding="utf-8") as out:
        writes = _CountedWrites(out.fileno())
        monkeypatch.setattr(logging_setup.os, "write", writes)
        handler = LineHandler(out, batch_seconds=0.05)
        handler.setFormatter(TextFormatter())
        for n in range(100):
            handler.handle(_record(f"/n/{n}"))
        deadline = time.monotonic() + 10
        while len(path.read_text().splitlines()) < 100:
            assert time.monotonic() < deadline, "the writer thread did not write the queued lines"
            time.sleep(0.01)
        assert 1 <= len(writes.sizes) <= 10, writes.sizes  # 100 lines in a few writes, not one each
        handler.close()


def test_a_pipe_gets_whole_lines_at_most_pipe_buf_per_write(monkeypatch: Any) -> None:
    read_end, write_end = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_end, "w", encoding="utf-8") as out:
        writes = _CountedWrites(write_end)
        monkeypatch.setattr(logging_setup.os, "write", writes)
        handler = LineHandler(out, batch_seconds=30)
        handler.setFormatter(TextFormatter())
        texts = ["/" + "a" * (n * 37 % 1500) for n in range(60)] + ["/" + "b" * 9000]  # one over PIPE_BUF
        for text in texts:
            handler.handle(_record(text))
        handler.flush()
        handler.close()
    reader.join()
    os.close(read_end)
    lines = received.decode().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [f"GET {t} -> 200" for t in texts]
    assert len(writes.sizes) > 1
    assert all(size <= select.PIPE_BUF for size in writes.sizes[:-1])  # the long line is a write of its own
    assert writes.sizes[-1] > select.PIPE_BUF


FORK_SCRIPT = """
import logging, os, sys
from arcext.logging_setup import LineHandler, TextFormatter
out = open(sys.argv[1], "w", encoding="utf-8")
handler = LineHandler(out, batch_seconds=30)
handler.setFormatter(TextFormatter())
def line(text):
    handler.handle(logging.LogRecord("arcext.requests", logging.INFO, "fork", 1, text, (), None))
line("parent before the fork")
pid = os.fork()
if pid == 0:
    line("child")
    handler.flush()
    os._exit(0)
os.waitpid(pid, 0)
line("parent after the fork")
handler.flush()
"""


def test_a_forked_child_writes_only_its_own_lines(tmp_path: Path) -> None:
    """gunicorn forks its workers after logging is set up: a line the master had queued is written once."""
    path = tmp_path / "forked.log"
    subprocess.run([sys.executable, "-c", FORK_SCRIPT, str(path)], check=True, timeout=60)
    messages = sorted(line.split(": ", 1)[1] for line in path.read_text().splitlines())
    assert messages == ["child", "parent after the fork", "parent before the fork"]
