"""Log output for `arcext serve --log-format json|text`.

``json``: one JSON object per line (stdlib logging with a JSON formatter): ``time``, ``level``,
``logger``, ``message`` and the record's structured fields (the ``fields`` extra: request ids,
rollout id, machine, extension, ...). ``text``: the classic one-line form, fields appended as
``key=value``. Secrets never reach a log record: requests log their route and path (never bodies
or headers other than the request ids), upgrade steps log versions and ids (never settings).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import stat
import sys
import threading
import traceback
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from .delayed_drain import DelayedDrain

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "fields"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)
        self._second: tuple[int, str] = (-1, "")  # the last second formatted, and its text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's
        """``logging.Formatter``'s text (local time, ``YYYY-MM-DD HH:MM:SS,mmm``), its seconds part formatted
        once per second instead of once per line (a server writes a line per request)."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        whole = int(record.created)
        second = self._second
        if second[0] != whole:
            second = (whole, super().formatTime(record).rpartition(",")[0])
            self._second = second
        return f"{second[1]},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info or self._style._fmt != _TEXT_FORMAT:
            text = super().format(record)
        else:
            # what logging.Formatter.format does for this format and a record without exception or stack
            # (the request lines), without its generic steps: the same text and the same record attributes
            record.message = record.getMessage()
            record.asctime = self.formatTime(record, self.datefmt)
            text = "%s %s %s: %s" % (record.asctime, record.levelname, record.name, record.message)  # noqa: UP031
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join([f"{k}={v}" for k, v in fields.items() if k != "event"])
        return text


#: How long a request's log line may wait for the lines logged after it, to go out in the same write.
BATCH_SECONDS = 0.02


@dataclass(frozen=True)
class _Target:
    """Where a stream's lines go when written by file descriptor (None for a stream without one)."""

    stream: Any
    fd: int
    encoding: str
    errors: str
    regular_file: bool


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes a server's INFO lines in batches: one ``os.write`` for all the lines logged in
    :data:`BATCH_SECONDS`, by a writer thread.

    Why: a server writes a line per request. Each write is a system call that lets go of the GIL, and with 16
    server threads taking the GIL back costs more than the line: about 50 us of CPU per API request under load
    (issue #12). The stock handler also writes under its lock, on which every other thread then queues.

    What a reader of the log can rely on:

    * each record is formatted by the thread that logs it, as by StreamHandler, and its bytes are the same (the
      line, encoded as the stream encodes it); lines are never mixed, and they keep their order;
    * a WARNING or worse is written before ``log.warning(...)`` returns, after every line queued before it, so
      an error is on disk before the code goes on; ``flush()`` and ``close()`` write everything queued (logging
      does both at exit, and the gunicorn worker at its exit);
    * a process killed outright (SIGKILL, the OOM killer) loses at most its last ``BATCH_SECONDS`` of INFO lines;
    * on a pipe or a socket (journald, a container's log), each write holds whole lines, up to PIPE_BUF bytes
      when they fit, so they are never cut by another process's writes to the same pipe.

    A stream without a file descriptor (a test's StringIO) takes StreamHandler's own path.
    """

    def __init__(self, stream: Any = None, batch_seconds: float = BATCH_SECONDS) -> None:
        super().__init__(stream)
        self.batch_seconds = batch_seconds
        self._target: _Target | None = None
        self._closed = False
        self._fresh_queue()
        after_fork = weakref.WeakMethod(self._fresh_queue)
        os.register_at_fork(after_in_child=lambda: (method := after_fork()) is not None and method())

    def _fresh_queue(self) -> None:
        """A new queue and no writer thread (also in a forked child: the parent writes what it had queued)."""
        self._pending: deque[bytes] = deque()
        self._write_lock = threading.Lock()
        self._writer = DelayedDrain("arcext-log-writer", self.batch_seconds, self._write_batch)

    def _fd_target(self) -> _Target | None:
        stream = self.stream
        cached = self._target
        if cached is not None and cached.stream is stream:
            return cached if cached.fd >= 0 else None
        found = _Target(stream, -1, "", "", False)
        try:
            fd = stream.fileno()
            mode = os.fstat(fd).st_mode
            encoding = getattr(stream, "encoding", None) or "utf-8"
            found = _Target(stream, fd, encoding, getattr(stream, "errors", None) or "strict", stat.S_ISREG(mode))
        except (AttributeError, OSError, ValueError):
            pass
        self._target = found
        return found if found.fd >= 0 else None

    def handle(self, record: logging.LogRecord) -> Any:
        target = None if self._closed else self._fd_target()
        if target is None:
            return super().handle(record)
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12: a filter may return a replacement record
            record = rv
        if not rv:
            return rv
        try:
            data = (self.format(record) + self.terminator).encode(target.encoding, target.errors)
        except Exception:  # noqa: BLE001 - logging's own rule: a record that cannot be written is reported
            self.handleError(record)
            return rv
        self._pending.append(data)
        if record.levelno >= logging.WARNING or self.batch_seconds <= 0:
            self._write_pending(target)
        else:
            self._writer.poke()
        return rv

    def _write_batch(self) -> None:
        target = None if self._closed else self._fd_target()
        if target is not None:
            self._write_pending(target)  # reports its own errors: the writer goes on, the queue never grows

    def _write_pending(self, target: _Target) -> None:
        pending = self._pending
        with self._write_lock:
            lines: list[bytes] = []
            while True:
                try:
                    lines.append(pending.popleft())
                except IndexError:
                    break
            if not lines:
                return
            try:
                target.stream.flush()  # anything written to the stream itself goes first
                if target.regular_file:
                    _write_all(target.fd, b"".join(lines))
                else:
                    for piece in _whole_lines_up_to(lines, select.PIPE_BUF):
                        _write_all(target.fd, piece)
            except Exception:  # noqa: BLE001 - as logging does: report it on stderr, never fail the caller
                if logging.raiseExceptions:
                    with contextlib.suppress(Exception):  # stderr may be the stream that failed (a closed pipe)
                        traceback.print_exc()

    def flush(self) -> None:
        self._write_batch()
        super().flush()

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._writer.stop()
        super().close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _whole_lines_up_to(lines: list[bytes], limit: int) -> Iterator[bytes]:
    """The lines joined into pieces of at most ``limit`` bytes (a longer line is a piece of its own)."""
    piece: list[bytes] = []
    size = 0
    for line in lines:
        if piece and size + len(line) > limit:
            yield b"".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece:
        yield b"".join(piece)


def configure(log_format: str = "text", level: int = logging.INFO, stream: Any = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in ``log_format``; returns the handler.

    Neither format shows where a record was logged from, nor its thread or process, so logging is told not to
    look them up for each record (the logging HOWTO's "Optimization": ``_srcfile``, ``logThreads``,
    ``logProcesses``, ``logMultiprocessing``): a third of the cost of a request's log line."""
    logging._srcfile = None  # documented: skips findCaller's walk of the stack
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = LineHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return handler
