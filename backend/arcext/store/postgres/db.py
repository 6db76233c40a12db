"""Connections: a psycopg pool whose connections speak JSON through orjson, and timed transactions.

Connections are in autocommit mode: a lone statement is its own transaction, and a change of several
statements runs in ``transaction()``. While a thread is inside a transaction, every store call it
makes uses that transaction's connection: a machine change's callback may read the catalog (the
engine's do), and taking a second connection from the pool for that could wait for ever once every
connection is held by such a callback. A transaction inside a transaction is a savepoint, and work
meant for after the commit (``after_commit``) runs once the outermost one committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import orjson
import psycopg
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

Connection = psycopg.Connection[tuple[Any, ...]]


#: How long the server keeps a pooled session that sits inside a transaction doing nothing before it ends it
#: (rolling the transaction back). arcext's transactions last milliseconds; one that idles this long belongs to a
#: node that froze (a paused VM, a stopped process) or vanished without closing its socket (a host that lost
#: power: the server's TCP keepalives notice after hours). Until then its row locks would stop every write of
#: those machines on every other node.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000


def _configure(conn: Connection) -> None:
    set_json_dumps(orjson.dumps, conn)
    set_json_loads(orjson.loads, conn)
    conn.autocommit = True
    conn.execute(
        "SELECT set_config('idle_in_transaction_session_timeout', %s, false)", (str(IDLE_IN_TRANSACTION_TIMEOUT_MS),)
    )


def redacted(url: str) -> str:
    """``host:port/dbname`` of a connection URL or conninfo string (never the password), for messages."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable database URL)"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"{host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


#: the server side's TCP keepalives for a session (probes after 5 s idle, every 2 s, 3 lost: about 11 s)
SERVER_KEEPALIVES = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"


def with_server_keepalives(url: str) -> str:
    """The ``options`` of a connection that holds session state others wait on (an advisory lock): the URL's own
    options, then the server-side keepalives, so PostgreSQL ends the session of a peer whose host vanished
    without closing its socket in about 11 s rather than after the system's default (hours)."""
    own = psycopg.conninfo.conninfo_to_dict(url).get("options")
    return f"{own} {SERVER_KEEPALIVES}" if own else SERVER_KEEPALIVES


#: libpq's settings for every pooled connection, where the URL sets none of its own. Without them a connection to a
#: database that vanished without closing it (a fail-over that moved the address, a cut network) blocks the thread
#: using it until the kernel gives up: about 15 minutes with a statement on its way, hours waiting for an answer.
#: Keepalives (probes after 5 s idle, every 2 s, 3 lost) end a silent wait in about 11 s, ``tcp_user_timeout`` a
#: send that is never acknowledged in 30 s, ``connect_timeout`` a connection attempt in 10 s; the request then
#: answers 503 and the pool makes a new connection.
POOLED_CONNECTION_DEFAULTS: Final[dict[str, str]] = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
    "connect_timeout": "10",
}


def pooled_connection_settings(url: str) -> dict[str, str]:
    """``POOLED_CONNECTION_DEFAULTS`` but those ``url`` sets itself (the operator's word wins)."""
    own = psycopg.conninfo.conninfo_to_dict(url)
    return {name: value for name, value in POOLED_CONNECTION_DEFAULTS.items() if name not in own}


def dedicated(url: str, application_name: str) -> Connection:
    """A connection of its own, outside the pool, in autocommit mode, for session state (advisory locks, LISTEN):
    TCP keepalives at both ends, so this node notices a vanished database and the server a vanished node, and
    ``tcp_user_timeout`` (as ``POOLED_CONNECTION_DEFAULTS``), so a statement sent to a database that vanished fails
    in 30 s instead of the kernel's 15 minutes of retransmissions (keepalives do not probe while data waits)."""
    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=5,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
        tcp_user_timeout=30000,
        application_name=application_name,
        options=with_server_keepalives(url),
    )


@dataclass(frozen=True, slots=True)
class SeenRow:
    """A machine's row as one statement saw it: the document as text (a private copy for whoever parses it), the
    row's version (``xmin``) and the catalog's version then, for a write that holds only if nothing changed.

    A row this process wrote is the document it started from and the extensions' records it wrote into it
    (``changes``: each extension's record as JSON, None where it removed it), not the document as the database
    returned it: the write need not send the whole document back (about 5 KB a write in the benchmark), and a
    job's last write, whose row nobody reads again, costs nothing to keep (``document`` builds it when asked)."""

    doc: str
    xmin: str
    catalog_version: int
    changes: tuple[tuple[str, bytes | None], ...] = ()

    def document(self) -> Any:
        """The row's document, parsed (a private copy), with ``changes`` made (a record's keys in the order it was
        written in, where a read from the database has them in JSONB's order: equal as JSON, as dicts)."""
        doc = orjson.loads(self.doc)
        for extension, record in self.changes:
            if record is None:
                doc["extensions"].pop(extension, None)
            else:
                doc["extensions"][extension] = orjson.loads(record)
        return doc

    def written(self, xmin: str, catalog_version: int, extension: str, record: bytes | None) -> SeenRow:
        """The row after a write of ``record`` (JSON; None: removed) as ``extension``'s, made at version ``xmin``."""
        kept = tuple(change for change in self.changes if change[0] != extension)
        return SeenRow(self.doc, xmin, catalog_version, (*kept, (extension, record)))


E = TypeVar("E")


class _Waiter(Generic[E]):
    """One ``GroupCommit.submit``: its entry, and the lock it sleeps on (held from the start; released once, when
    its batch was sent or when it is to send the next one)."""

    __slots__ = ("entry", "sent", "wake")

    def __init__(self, entry: E) -> None:
        self.entry = entry
        self.sent = False
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit(Generic[E]):
    """Group commit's hand-off: ``submit`` returns once ``send`` has been called with a batch holding its entry.

    The entries submitted while one batch is on its way go together in the next: the first thread to find no
    batch on its way sends everything pending, the others wait. Each waiter sleeps on a lock of its own and is
    woken once: when its batch was sent, or (the first waiter of the next batch) to send that batch. A
    condition's ``notify_all`` would wake every waiter each time, those of the next batch to sleep again, all of
    them taking the condition's lock and the GIL in turn: with 64 workers a cluster node spent about 0.2 ms of CPU
    per job on that (the two-node rollout benchmark)."""

    def __init__(self, send: Callable[[list[E]], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._pending: list[_Waiter[E]] = []
        self._sending = False  # a batch is on its way (or its sender is about to take the pending ones)

    def submit(self, entry: E) -> None:
        me = _Waiter(entry)
        with self._lock:
            self._pending.append(me)
            waiting, self._sending = self._sending, True
        if waiting:
            me.wake.acquire()
            if me.sent:
                return
        # this thread sends: everything pending (its own entry included), then hands over to the next waiter
        with self._lock:
            batch, self._pending = self._pending, []
        try:
            self._send([waiter.entry for waiter in batch])
        finally:
            with self._lock:
                following = self._pending[0] if self._pending else None
                self._sending = following is not None
            for waiter in batch:
                if waiter is not me:
                    waiter.sent = True
                    waiter.wake.release()
            if following is not None:
                following.wake.release()  # not sent: it sends the next batch


class _Grouped:
    """A statement waiting to be sent with others (``Database.grouped``), then its rows or its error; ``order``: the
    row it writes (its table's name, then its key), by which a group's statements go out."""

    __slots__ = ("error", "order", "params", "query", "rows")

    def __init__(self, query: str, params: Sequence[Any], order: tuple[str, ...] | None = None) -> None:
        self.query = query
        self.params = params
        self.order = order
        self.rows: list[tuple[Any, ...]] = []
        self.error: BaseException | None = None


def in_write_order(group: list[_Grouped]) -> list[_Grouped]:
    """A group's statements in the order of the rows they write (those that name none last, as they came).

    Two groups (two nodes') that write two rows in opposite orders could each wait for the row the other locked:
    a deadlock, which PostgreSQL breaks after ``deadlock_timeout`` (1 s) by failing one group, whose writes then
    run one by one. Every group locking rows in one order (table, then key) never waits in a circle."""
    return sorted(group, key=lambda entry: (entry.order is None, entry.order or ()))


class _Open:
    """The transaction a thread is in: its connection and what to run once it committed."""

    __slots__ = ("after", "conn", "depth", "memo")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.after: list[Callable[[], None]] = []
        self.depth = 0  # savepoints open
        self.memo: dict[Any, Any] = {}  # rows read once per transaction (Database.memo)


class Database:
    """A connection pool to one database; ``observer`` (if set) gets the seconds every commit of a
    ``transaction()`` took (the store's write latency, for the metrics)."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 20, timeout: float = 30.0) -> None:
        self.url = url
        self.observer: Callable[[float], None] | None = None
        self._local = threading.local()
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            configure=_configure,
            kwargs=pooled_connection_settings(url),
            open=False,
            name=f"arcext-{redacted(url)}",
        )
        try:
            self.pool.open(wait=True, timeout=timeout)
        except BaseException:
            self.pool.close()  # else its workers go on trying to connect, for nobody
            raise
        self._groups: GroupCommit[_Grouped] = GroupCommit(self._send_group)  # ``grouped``'s statements

    def _open(self) -> _Open | None:
        current: _Open | None = getattr(self._local, "open", None)
        return current

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection for a statement or two: the thread's transaction's, else one from the pool."""
        current = self._open()
        if current is not None:
            yield current.conn
            return
        with self.pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside a transaction: committed when the block ends, rolled back on an exception.

        The transaction is a pipeline: BEGIN goes out with the first query whose result is read, and the
        writes after the last read go out with COMMIT, so a read-change-write costs two round trips, not
        four (a busy host schedules the database's process for each one)."""
        current = self._open()
        if current is not None:
            # a savepoint, by hand: psycopg's conn.transaction() reads the transaction status to tell an outer
            # block from a nested one, and in a pipeline that status lags (BEGIN may not have gone out yet)
            pending = len(current.after)
            current.depth += 1
            savepoint = f"arcext_{current.depth}"
            conn = current.conn
            conn.execute(f"SAVEPOINT {savepoint}")
            try:
                yield conn
            except BaseException:
                del current.after[pending:]  # what the savepoint's work meant to run after the commit
                conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                raise
            else:
                conn.execute(f"RELEASE SAVEPOINT {savepoint}")
            finally:
                current.depth -= 1
            return
        with self.pool.connection() as conn:
            opened = _Open(conn)
            self._local.open = opened
            try:
                started = 0.0
                try:
                    with conn.pipeline():
                        conn.execute("BEGIN")
                        yield conn
                        started = time.perf_counter()
                        conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
                elapsed = time.perf_counter() - started
            finally:
                self._local.open = None
        self._observe(elapsed)
        for callback in opened.after:
            try:
                callback()
            except Exception:  # observers never fail a write
                log.exception("An after-commit callback failed")

    def grouped(self, query: str, params: Sequence[Any], order: tuple[str, ...] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement that stands on its own (a write whose effect does not depend on the statements it may
        be sent with, and that fails only on a broken connection), committed before this returns; its rows.
        ``order`` names the row it writes (its table, then its key; ``in_write_order``).

        Group commit: the statements other threads ask for while one group is on its way go together in the next
        one, in one transaction (one commit, one round trip), in the order of the rows they write. Should the
        group's transaction fail before its commit, each of its statements runs again on its own. Inside the
        thread's transaction the statement is simply a part of that transaction."""
        current = self._open()
        if current is not None:  # inside the thread's transaction: a part of it
            cursor = current.conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []
        entry = _Grouped(query, params, order)
        self._groups.submit(entry)
        if entry.error is not None:
            raise entry.error
        return entry.rows

    def _send_group(self, group: list[_Grouped]) -> None:
        if len(group) > 1:
            group = in_write_order(group)
            try:
                with self.pool.connection() as conn:
                    try:
                        with conn.pipeline():
                            conn.execute("BEGIN")
                            cursors = [conn.execute(entry.query, entry.params) for entry in group]
                            conn.execute("COMMIT")
                    except psycopg.Error:
                        if conn.closed or conn.info.transaction_status not in (
                            psycopg.pq.TransactionStatus.INERROR,
                            psycopg.pq.TransactionStatus.IDLE,
                        ):
                            raise  # the commit's outcome is not known: no statement may run again
                        self._rollback(conn)  # nothing was committed
                        log.info("A group of %d writes failed; each runs on its own", len(group), exc_info=True)
                    else:
                        for entry, cursor in zip(group, cursors, strict=True):
                            entry.rows = cursor.fetchall() if cursor.description is not None else []
                        return
            except BaseException as exc:
                for entry in group:
                    entry.error = exc
                return
        for entry in group:
            try:
                with self.pool.connection() as conn:
                    cursor = conn.execute(entry.query, entry.params)
                    entry.rows = cursor.fetchall() if cursor.description is not None else []
            except BaseException as exc:
                entry.error = exc

    def memo(self) -> dict[Any, Any] | None:
        """A dict that lives as long as the thread's transaction (None outside one): what a transaction
        reads twice it may read once (the catalog's type of the extension a job claims, say)."""
        current = self._open()
        return current.memo if current is not None else None

    @contextmanager
    def cached_views(self) -> Iterator[dict[Any, Any]]:
        """Within the block, reads meant to be looked at only (``Store.view_machine``) of one row are made
        once on this thread: several looks at one machine in a row see it as it was at the first one, as if
        they had been one read. Its own writes drop the row from the cache (``forget_view``)."""
        outer: dict[Any, Any] | None = getattr(self._local, "views", None)
        cache: dict[Any, Any] = {} if outer is None else outer
        self._local.views = cache
        try:
            yield cache
        finally:
            self._local.views = outer

    def views(self) -> dict[Any, Any] | None:
        """The thread's view cache (``cached_views``), or None."""
        cache: dict[Any, Any] | None = getattr(self._local, "views", None)
        return cache

    def offer_row(self, key: str, row: SeenRow | None) -> None:
        """Keep ``row`` (the row ``key`` names, just read or written) for this thread's next change of it, which may
        start from it instead of reading it (None: forget what was kept for ``key``)."""
        kept: dict[str, SeenRow] | None = getattr(self._local, "seen", None)
        if kept is None:
            kept = self._local.seen = {}
        if row is None:
            kept.pop(key, None)
        else:
            kept[key] = row

    def take_row(self, key: str) -> SeenRow | None:
        """The row ``offer_row`` kept for ``key`` on this thread, once."""
        kept: dict[str, SeenRow] | None = getattr(self._local, "seen", None)
        return kept.pop(key, None) if kept else None

    def forget_rows(self) -> None:
        """Forget every row ``offer_row`` kept on this thread."""
        self._local.seen = None

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the thread's transaction committed (at once outside a transaction;
        never if it rolls back)."""
        current = self._open()
        if current is None:
            callback()
        else:
            current.after.append(callback)

    @staticmethod
    def _rollback(conn: Connection) -> None:
        if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:  # a broken connection: the pool replaces it
            log.debug("Rollback failed", exc_info=True)

    def observe(self, seconds: float) -> None:
        """Tell the observer a write outside ``transaction()`` (a statement of its own) took ``seconds``."""
        self._observe(seconds)

    def _observe(self, seconds: float) -> None:
        if self.observer is None:
            return
        try:
            self.observer(seconds)
        except Exception:  # observers never fail a write
            log.exception("A store write observer failed")

    def close(self) -> None:
        self.pool.close()
