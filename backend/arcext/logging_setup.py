"""Log output for `arcext serve --log-format json|text`.

``json``: one JSON object per line (stdlib logging with a JSON formatter): ``time``, ``level``,
``logger``, ``message`` and the record's structured fields (the ``fields`` extra: request ids,
rollout id, machine, extension, ...). ``text``: the classic one-line form, fields appended as
``key=value``. Secrets never reach a log record: requests log their route and path (never bodies
or headers other than the request ids), upgrade steps log versions and ids (never settings).
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

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


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes each record as one ``os.write`` of the whole line, formatted before any lock.

    The stock handler formats and writes under its lock; a server thread writing its request line (which releases
    the GIL) then has every other thread queue on that lock, and the lock hand-offs cost more than the lines:
    a quarter of an API GET's CPU with 16 threads (issue #12). Here a line goes to a regular file in one write
    without the lock: the kernel serialises the writes to a file (on its inode and the shared file offset), so
    one line's bytes are never mixed with another's. Anything else (a pipe, a terminal, a socket, a stream
    without a file descriptor such as a test's StringIO) takes the stock path under the lock, and so does the
    rest of a write the kernel cut short. The bytes written are the same: the line, encoded as the stream
    encodes it.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._direct: tuple[Any, int, str, str] | None = None

    def _direct_fd(self) -> tuple[int, str, str] | None:
        """The stream's file descriptor, encoding and error handler if it is a regular file, else None."""
        stream = self.stream
        cached = self._direct
        if cached is not None and cached[0] is stream:
            return cached[1:]
        found: tuple[int, str, str] | None = None
        try:
            fd = stream.fileno()
            mode = os.fstat(fd).st_mode
            if stat.S_ISREG(mode):
                found = (fd, getattr(stream, "encoding", None) or "utf-8", getattr(stream, "errors", None) or "strict")
        except (AttributeError, OSError, ValueError):
            found = None
        if found is None:
            self._direct = (stream, -1, "", "")
            return None
        self._direct = (stream, *found)
        return found

    def handle(self, record: logging.LogRecord) -> Any:
        direct = self._direct_fd()
        if direct is None or direct[0] < 0:
            return super().handle(record)
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12: a filter may return a replacement record
            record = rv
        if not rv:
            return rv
        try:
            data = (self.format(record) + self.terminator).encode(direct[1], direct[2])
        except Exception:  # noqa: BLE001 - logging's own rule: a record that cannot be written is reported
            self.handleError(record)
            return rv
        try:
            written = os.write(direct[0], data)
            if written < len(data):  # cut short (a full disk, a signal): the rest under the lock
                self.acquire()
                try:
                    self.stream.flush()
                    while written < len(data):
                        written += os.write(direct[0], data[written:])
                finally:
                    self.release()
        except Exception:  # noqa: BLE001
            self.handleError(record)
        return rv


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
