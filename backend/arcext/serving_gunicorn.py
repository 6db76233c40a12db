"""``arcext serve`` on gunicorn: gthread workers, limits and timeouts, TLS >= 1.2, graceful shutdown.

Why gunicorn (docs/deploy.md, "HTTP server"): its arbiter runs the app factory in each worker after the fork
(so ``--workers N`` can work once the store is a shared database), drains in-flight requests within a bounded
grace period on SIGTERM, caps connections per worker, hands idle keep-alive and slow clients back to a poller
instead of holding a thread, and has TLS. Werkzeug's development server stays for the in-process test harness.

What arcext adds here:

* the worker answers requests it rejects itself (bad request line, URI too long, too many/too long header
  fields) with the ARM error envelope in JSON (serving_errors.py), never gunicorn's HTML page;
* SIGINT (Ctrl-C, which reaches the master and its workers) is a graceful stop like SIGTERM, not gunicorn's
  immediate one;
* the app is built per worker by ``factory(WorkerContext)`` and its ``close`` runs when the worker exits, after
  the in-flight requests finished (the engine hands running jobs back there);
* a response whose whole body comes in one piece (every API answer) goes out with its head in one write
  (``OneWriteResponse``): gunicorn sends the head and then the body, two system calls, each giving up and
  taking back the GIL among the worker's threads, and two TCP segments.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger
from gunicorn.http import errors as http_errors
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.util import write_nonblock
from gunicorn.workers.gthread import TConn, ThreadWorker

from .metrics import worker_gone
from .serving import ssl_context
from .serving_errors import protocol_error

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: gunicorn reads at most this many bytes of request line (its hard maximum); a longer one gets 414.
MAX_REQUEST_LINE = 8190

log = logging.getLogger(__name__)


class ServeError(ValueError):
    """Options that cannot be served (e.g. several workers on the embedded store)."""


@dataclass(frozen=True)
class ServeOptions:
    """How ``arcext serve`` listens. Limits are per worker process."""

    host: str = "127.0.0.1"
    port: int = 5000
    #: Worker processes. More than one needs a store shared between processes (``shared_store``).
    workers: int = 1
    #: Threads per worker answering requests (a request holds one while the app runs).
    threads: int = 16
    #: Open client connections per worker (active + idle keep-alive); more wait in the listen backlog.
    max_connections: int = 1000
    #: Connections the kernel queues before the server accepts them.
    backlog: int = 2048
    #: Seconds an idle keep-alive connection stays open.
    keepalive: int = 30
    #: Seconds one read or write of a client connection may wait (a request line, headers or body sent too slowly,
    #: a response not read): then the connection is closed, so slow clients cannot hold every thread.
    timeout: int = 30
    #: Seconds a worker may stop answering the master's heartbeat before it is killed and replaced.
    worker_timeout: int = 120
    #: Seconds SIGTERM/SIGINT waits for in-flight requests before the workers are closed.
    graceful_timeout: int = 30
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Longest request line (method, URL, version) read; at most MAX_REQUEST_LINE.
    limit_request_line: int = MAX_REQUEST_LINE
    #: Most header fields in a request, and the longest one (bytes); more or longer get 431.
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190
    #: True when the store is shared between processes (a database): only then may ``workers`` exceed 1.
    shared_store: bool = False

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    def check(self) -> None:
        """Raise ServeError for options that cannot work."""
        if self.workers < 1 or self.threads < 1:
            raise ServeError("--workers and --threads must be at least 1.")
        if self.workers > 1 and not self.shared_store:
            raise ServeError(
                "--workers above 1 needs a store shared between processes: the embedded store lives in the memory "
                "of one process. Run one worker (raise --threads instead), or use a database."
            )
        if self.max_connections <= self.threads:
            raise ServeError("--max-connections must exceed --threads (idle keep-alive connections need room).")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ServeError("A TLS certificate and key go together.")
        if not 0 < self.limit_request_line <= MAX_REQUEST_LINE:
            raise ServeError(f"The request line limit must be between 1 and {MAX_REQUEST_LINE} bytes.")
        if min(self.keepalive, self.graceful_timeout, self.backlog) < 0 or min(self.timeout, self.worker_timeout) <= 0:
            raise ServeError("Timeouts and the backlog cannot be negative (--timeout must be positive).")


@dataclass(frozen=True)
class WorkerContext:
    """What the app factory learns about the worker it builds the app for."""

    #: The base URL the server listens at (the bound port, also when port 0 was asked for).
    url: str
    port: int
    #: True in the first worker the server started (print the banner, create first-run data once).
    first: bool


@dataclass
class WorkerApp:
    """The app one worker serves, and what to run when the worker exits (after its requests finished)."""

    wsgi: WSGIApp
    close: Callable[[], None] = field(default=lambda: None)
    #: the names of the app's background loops that stopped coming round (arcext.heartbeat): the worker then leaves
    stalled: Callable[[], list[str]] = field(default=lambda: [])
    #: gives up what only one worker may hold at a time (the engine's leadership), before the worker leaves
    resign: Callable[[], None] = field(default=lambda: None)


AppFactory = Callable[[WorkerContext], WorkerApp]


def _answer_for(exc: BaseException) -> int:
    """The status for an error the worker hit before or while reading a request."""
    if isinstance(exc, (http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName)):
        return 500  # the app's fault, not the client's
    if isinstance(exc, http_errors.LimitRequestLine):
        return 414
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return 431
    if isinstance(exc, http_errors.ExpectationFailed):
        return 417
    if isinstance(exc, http_errors.ForbiddenProxyRequest):
        return 403
    if isinstance(exc, http_errors.ConfigurationProblem):
        return 500
    if isinstance(exc, (http_errors.ParseException, ssl.SSLError)):
        return 400  # includes transfer codings the server does not speak: the client's error, never a 5xx
    return 500


class _TimedConn(TConn):  # type: ignore[misc]  # gunicorn is untyped
    """A client connection whose every read and write waits at most ``io_timeout`` seconds. gunicorn makes the
    socket blocking without a timeout before it reads a request on a thread, so a client sending a byte now and
    then would hold that thread for good; with the timeout the read fails and the connection is closed."""

    io_timeout: float = 30.0

    def init(self) -> None:
        self.sock.settimeout(self.io_timeout)  # also bounds the TLS handshake, which init() runs
        if self.initialized:  # a kept-alive connection: gunicorn's init() does nothing more
            return
        super().init()
        self.sock.settimeout(self.io_timeout)  # init() made the socket blocking, and TLS wraps it anew


#: bodies up to this size go out in one write with their head (a larger one is not copied to join it)
ONE_WRITE_MAX = 256 * 1024


class _Held:
    """Stands for a response's socket while gunicorn writes the head and the body: what it sends is kept, to go out
    in one write."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(data)


class OneWriteResponse(gunicorn_wsgi.Response):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's response, whose head goes out with the body in one write when the app hands the whole body in one
    piece with its Content-Length (every API answer): gunicorn writes both as ever (its own head, its own
    bookkeeping), to a stand-in that keeps them, and they go to the socket in one system call and one TCP segment
    instead of two. tests/test_serving_one_write.py compares the bytes with gunicorn's own. Anything else (a body
    in pieces or chunked, none for HEAD/204/304, a large one) goes straight through. On this 2-core machine the
    minimal app of scripts/bench_api.py went from about 370 to 310 us of server CPU per request with it."""

    # gunicorn's attributes this reads and swaps
    headers_sent: bool
    chunked: bool
    _omits_body: bool
    response_length: int | None
    sock: Any

    def write(self, arg: bytes) -> None:
        if (
            self.headers_sent
            or self.chunked
            or self._omits_body
            or type(arg) is not bytes
            or not 0 < len(arg) <= ONE_WRITE_MAX
            or len(arg) != self.response_length
        ):
            super().write(arg)
            return
        sock, held = self.sock, _Held()
        self.sock = held
        try:
            super().write(arg)  # the head, then the body, kept
        finally:
            self.sock = sock
        sock.sendall(b"".join(held.parts))


#: seconds between a worker's looks at its app's stalled loops (``ArmThreadWorker.notify``)
STALL_LOOK_SECONDS = 1.0


class ArmThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's gthread worker with ARM-shaped protocol errors, a graceful SIGINT, client I/O timeouts, a
    response's head and body in one write (``OneWriteResponse``), and a watchdog: a worker whose app has a stalled
    background loop leaves (``notify``)."""

    _looked_at = 0.0
    alive: bool  # gunicorn's: False once the worker is to leave

    def notify(self) -> None:
        """gunicorn's heartbeat to the master, from the worker's main loop; once a second, first a look at the app's
        background loops. One that stopped coming round (a deadlock, a call that never returns) would leave a
        process that answers requests and, on a cluster's leader, keeps the leadership lock while no wave is
        planned: the worker leaves instead, as on SIGTERM (its requests finish, its jobs are handed back), and the
        master starts a fresh one. Should leaving hang on the stuck loop, the heartbeats stop with the main loop
        and the master kills the worker after --worker-timeout."""
        now = time.monotonic()
        if self.alive and now - self._looked_at >= STALL_LOOK_SECONDS:
            self._looked_at = now
            try:
                stalled = self.app.stalled_loops()
            except Exception:  # a look that fails is no reason to leave (nor to stop the worker's main loop)
                self.log.exception("Looking at the background loops failed")
                stalled = []
            if stalled:
                self.log.error(
                    "Worker %s leaves: its %s loop stopped coming round; it gives up the engine's leadership now "
                    "and the master starts a fresh worker once its requests have finished",
                    self.pid,
                    " and ".join(stalled),
                )
                self.alive = False
                try:
                    self.app.resign()
                except Exception:
                    self.log.exception("Giving up the leadership failed; it goes when the worker exits")
        super().notify()

    def init_process(self) -> None:
        # gthread makes each response with gunicorn.http.wsgi.create, whose class is that module's Response (looked
        # up at each call); this process is a worker of arcext's own (after the fork)
        gunicorn_wsgi.Response = OneWriteResponse
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        if type(conn) is TConn:
            conn.__class__ = _TimedConn  # gthread builds its TConn itself; this one bounds its reads and writes
            conn.io_timeout = float(getattr(self.app, "io_timeout", _TimedConn.io_timeout))
        super().enqueue_req(conn)

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGINT, self.handle_exit)  # Ctrl-C reaches the workers too: drain, do not drop

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            # Stopping: close the listening sockets now (the master closed its copies), so a new connection is
            # refused at once instead of waiting in the backlog until the worker exits and then being reset.
            for listener in self.sockets:
                listener.close()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        status = _answer_for(exc)
        if status == 500:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
        else:
            ip = addr[0] if addr else ""
            self.log.warning("Invalid request from ip=%s: %s", ip, exc)
        answer = protocol_error(status, str(exc) or None, request_line_limit=self.cfg.limit_request_line)
        try:
            write_nonblock(client, answer.http_response())
        except OSError:
            self.log.debug("Failed to send error message.")


class MalformedBody(ValueError):
    """A request body the server could not decode (a chunk header that is not one)."""


class _BodyInput:
    """``wsgi.input`` of a chunked request: gunicorn's decoding errors become MalformedBody, a ValueError, which the
    app answers as an invalid request body (400), as it does on Werkzeug's server; not an unexpected error (500)."""

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def read(self, size: int | None = None) -> bytes:
        try:
            data: bytes = self._wrapped.read(size)
        except http_errors.ParseException as exc:
            raise MalformedBody(str(exc)) from exc
        return data

    def readline(self, size: int | None = None) -> bytes:
        try:
            data: bytes = self._wrapped.readline(size)
        except http_errors.ParseException as exc:
            raise MalformedBody(str(exc)) from exc
        return data

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


def chunked_body_errors_as_value_errors(app: WSGIApp) -> WSGIApp:
    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            environ["wsgi.input"] = _BodyInput(environ["wsgi.input"])
        return app(environ, start_response)

    return wrapped


class ArcextLogger(Logger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's own messages (starting, booting a worker, an invalid request) go through arcext's logging
    (logging_setup.configure: text or one JSON object per line), not a handler and format of gunicorn's."""

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if isinstance(sys.exc_info()[1], TimeoutError):
            # gthread reports a client that was too slow (--timeout) as a socket error, with a traceback
            self.error_log.info("Closed a connection: the client sent or read nothing for --timeout seconds.")
            return
        super().exception(msg, *args, **kwargs)

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for own in (self.error_log, self.access_log):
            for handler in list(own.handlers):
                own.removeHandler(handler)
            own.propagate = True


class ArmArbiter(Arbiter):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's master, where SIGINT drains like SIGTERM (gunicorn's own SIGINT drops requests)."""

    def handle_int(self) -> None:
        self.handle_term()


def die_with_parent() -> None:
    """Linux: the kernel kills this worker when the master dies. A master killed with SIGKILL (the OOM killer,
    ``kill -9``) then takes its worker along at once, as the single process did before, instead of leaving an
    orphan that holds the store and the port while a restarted server opens the same data directory. Every
    acknowledged write is already on disk. Elsewhere a no-op (gunicorn's worker notices a dead master within a
    second anyway)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("could not ask the kernel to stop this worker with its master")


def _tls_context(cert: Path, key: Path) -> Callable[[Any, Any], ssl.SSLContext]:
    """gunicorn asks for a context per connection; this one is loaded once (before the fork, so a bad
    certificate or key stops ``arcext serve`` at once) and shared. A new certificate needs a restart."""
    context = ssl_context(cert, key)

    def shared(_config: Any, _default_factory: Any) -> ssl.SSLContext:
        return context

    return shared


class _Application(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    def __init__(self, factory: AppFactory, options: ServeOptions) -> None:
        self._factory = factory
        self._options = options
        self._context: WorkerContext | None = None
        self._served: WorkerApp | None = None
        self.io_timeout = options.timeout  # read by the worker for its connections
        super().__init__()

    def load_config(self) -> None:
        opts = self._options
        settings: dict[str, Any] = {
            "bind": [f"[{opts.host}]:{opts.port}" if ":" in opts.host else f"{opts.host}:{opts.port}"],
            "workers": opts.workers,
            "worker_class": ArmThreadWorker,
            "threads": opts.threads,
            "worker_connections": opts.max_connections,
            "backlog": opts.backlog,
            "keepalive": opts.keepalive,
            "timeout": opts.worker_timeout,
            "graceful_timeout": opts.graceful_timeout,
            "limit_request_line": opts.limit_request_line,
            "limit_request_fields": opts.limit_request_fields,
            "limit_request_field_size": opts.limit_request_field_size,
            "preload_app": False,  # the app (its engine threads, its store) is built in each worker
            "control_socket_disable": True,
            "accesslog": None,  # arcext logs every request itself (logging_setup)
            "errorlog": "-",
            "logger_class": ArcextLogger,
            "loglevel": "info",
            "proc_name": "arcext",
            "post_fork": self._post_fork,
            "worker_exit": self._worker_exit,
            "child_exit": self._child_exit,
        }
        if opts.tls_cert and opts.tls_key:
            settings.update(
                certfile=str(opts.tls_cert),
                keyfile=str(opts.tls_key),
                ssl_context=_tls_context(opts.tls_cert, opts.tls_key),
            )
        for key, value in settings.items():
            self.cfg.set(key, value)

    def _post_fork(self, _arbiter: Any, worker: Any) -> None:
        # In the worker process, before it loads the app: where it listens (the bound port when 0 was asked).
        die_with_parent()
        if os.getppid() != worker.ppid:
            os._exit(1)  # the master died before the kernel was asked to take this worker along
        host, port = worker.sockets[0].sock.getsockname()[:2]
        shown = self._options.host or host
        shown = f"[{shown}]" if ":" in shown else shown
        self._context = WorkerContext(f"{self._options.scheme}://{shown}:{port}", int(port), worker.age == 1)

    def load(self) -> WSGIApp:
        assert self._context is not None, "post_fork runs before the worker loads the app"
        self._served = self._factory(self._context)
        return chunked_body_errors_as_value_errors(self._served.wsgi)

    def stalled_loops(self) -> list[str]:
        """The served app's stalled background loops (``ArmThreadWorker.notify``)."""
        return self._served.stalled() if self._served is not None else []

    def resign(self) -> None:
        if self._served is not None:
            self._served.resign()

    @staticmethod
    def _child_exit(_arbiter: Any, worker: Any) -> None:
        # In the master, once a worker process has ended.
        worker_gone(int(worker.pid))

    def _worker_exit(self, _arbiter: Any, _worker: Any) -> None:
        # In the worker, once its requests finished (or the grace period ran out).
        if self._served is not None:
            served, self._served = self._served, None
            served.close()

    def run(self) -> None:
        ArmArbiter(self).run()


def serve(factory: AppFactory, options: ServeOptions) -> None:
    """Serve until SIGTERM/SIGINT, then drain for at most ``graceful_timeout`` seconds and exit.

    ``factory`` runs in every worker process (after the fork) and returns the app with its ``close``.
    Raises ServeError for options that cannot work; exits the process (SystemExit) when the server stops."""
    options.check()
    sys.stdout.flush()  # a forked worker must not write the master's buffered output again
    _Application(factory, options).run()
