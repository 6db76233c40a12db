"""Scratch databases for tests and benchmarks: a fresh, migrated database in about 0.1 s.

A template database holding the current schema (named after a digest of the migrations, so a changed
schema gets a new one) is made once, under a session advisory lock so parallel test workers do not
race; each scratch database is ``CREATE DATABASE ... TEMPLATE`` it. Names carry the creating
process's id: ``drop_stale`` removes those of processes that are gone (a test run that was killed).

The admin URL is ``$ARCEXT_TEST_DATABASE_URL``, else what ``scripts/start-postgres`` sets up. Its
role needs CREATEDB.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import os
import re
import threading
import time
from pathlib import Path
from typing import Final

import psycopg
from psycopg import sql

from .events import PARTITION_LOCK
from .schema import MIGRATIONS, migrate

#: what scripts/start-postgres sets up (a local, test-only role)
DEFAULT_ADMIN_URL: Final = "postgresql://arcext:arcext-local-test-q7Zt4@127.0.0.1:5432/arcext"
_TEMPLATE_LOCK: Final = 0x617263657603
_DIRECTORY_FILE: Final = "database-url"  # in a harness server's data directory: the database it uses

_counter = itertools.count(1)
_lock = threading.Lock()
_templates: set[tuple[str, str]] = set()  # (admin url, template name) made ready by this process
_swept: set[tuple[str, str]] = set()  # (admin url, prefix) whose stale databases this process dropped
_released: list[str] = []  # emptied databases for_directory may give out again
_exit_registered: list[bool] = []


def admin_url() -> str:
    return os.environ.get("ARCEXT_TEST_DATABASE_URL") or DEFAULT_ADMIN_URL


def url_for(url: str, dbname: str) -> str:
    """``url`` pointed at another database of the same server."""
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


def template_name() -> str:
    digest = hashlib.sha1("\n".join(f"{v}:{s}" for v, s in MIGRATIONS).encode()).hexdigest()[:12]
    return f"arcext_template_{digest}"


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _exists(conn: psycopg.Connection[tuple[object, ...]], name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _ensure_template(conn: psycopg.Connection[tuple[object, ...]], admin: str) -> str:
    """The template database with the current schema (made if missing); the caller holds the lock."""
    name = template_name()
    if (admin, name) in _templates:
        return name
    if not _exists(conn, name):
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with _connect(url_for(admin, name)) as template:
        migrate(template)
    _templates.add((admin, name))
    return name


def create(prefix: str = "arcext_t", admin: str | None = None) -> str:
    """A new database with the current schema, ``<prefix>_<pid>_<n>``; returns its URL.

    Under the template lock: copying a template fails while anyone (another worker migrating it) is
    connected to it."""
    admin = admin or admin_url()
    drop_stale(prefix, admin)
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    with _lock, _connect(admin) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_TEMPLATE_LOCK,))
        try:
            template = _ensure_template(conn, admin)
            _drop_named(conn, name)
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_TEMPLATE_LOCK,))
    return url_for(admin, name)


#: every table the store keeps data in (the activity log's partitions go as well)
_TABLES: Final = (
    "packages",
    "package_chunks",
    "machines",
    "operations",
    "tokens",
    "extension_types",
    "extension_versions",
    "maintenance",
    "rollouts",
    "clock",
)
#: the tables of several nodes sharing the database (arcext.cluster.schema, arcext.webhooks.pg_schema,
#: arcext.portal.pg_schema), emptied when they exist
_CLUSTER_TABLES: Final = (
    *("engine_jobs", "engine_results", "engine_calls", "simhosts"),
    *("webhook_hooks", "webhook_messages", "webhook_state", "webhook_rollouts"),
    *("portal_sessions", "portal_signing_key"),
)


def reset(url: str) -> None:
    """Empty the database ``url`` names, tokens and shared clock included: as new, in a few milliseconds
    (copying the template takes 0.1-0.3 s). Stores open on it must forget what they cached: open new ones."""
    with _connect(url) as conn, conn.transaction():
        for table in _TABLES:
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))  # TRUNCATE: 0.1 s, this: 5 ms
        for table in _CLUSTER_TABLES:
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            if exists and exists[0]:
                conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events'::regclass"
        ).fetchall()
        for (name,) in rows:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(str(name))))


def drop(url: str, admin: str | None = None) -> None:
    """Drop the database ``url`` names (closing whatever is still connected to it)."""
    name = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
    if not name:
        return
    with _connect(admin or admin_url()) as conn:
        _drop_named(conn, str(name))


def _drop_named(conn: psycopg.Connection[tuple[object, ...]], name: str, attempts: int = 50) -> None:
    """``DROP DATABASE IF EXISTS name WITH (FORCE)`` on an autocommit connection.

    FORCE ends the other sessions, but a role that is not a superuser may not end a superuser's: an autovacuum
    worker that happens to be in the database refuses the drop (InsufficientPrivilege). A plain DROP DATABASE
    cancels autovacuum by itself, so that is tried then, a few times while other sessions stay."""
    identifier = sql.Identifier(name)
    forced = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier)
    plain = sql.SQL("DROP DATABASE IF EXISTS {}").format(identifier)
    for _ in range(attempts - 1):
        try:
            conn.execute(forced)
            return
        except psycopg.errors.InsufficientPrivilege:
            try:
                conn.execute(plain)
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1)
    conn.execute(forced)  # the last try raises what it meets


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_stale(prefix: str, admin: str | None = None) -> int:
    """Drop the ``prefix`` databases of processes that no longer run (once per process and prefix)."""
    admin = admin or admin_url()
    with _lock:
        if (admin, prefix) in _swept:
            return 0
        _swept.add((admin, prefix))
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)_\d+$")
    dropped = 0
    with _connect(admin) as conn:
        names = [str(r[0]) for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
        for name in names:
            m = pattern.match(name)
            if m and not _alive(int(m[1])):
                _drop_named(conn, name)
                dropped += 1
    return dropped


def for_directory(data_dir: Path, admin: str | None = None) -> str:
    """The scratch database that belongs to a data directory: made on first use (or a released one,
    emptied) and remembered in the directory, so a server restarted on the same directory finds its
    data again."""
    marker = data_dir / _DIRECTORY_FILE
    if marker.exists():
        return marker.read_text(encoding="utf-8").strip()
    with _lock:
        url = _released.pop() if _released else None
    if url is None:
        url = create("arcext_h", admin)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(url + "\n")
    return url


def release(url: str) -> None:
    """Empty a database ``for_directory`` gave out and keep it for the next one (copying the template
    costs 0.1-0.3 s, emptying a few milliseconds); what is still kept when the process ends is dropped.
    Close every store on it first."""
    reset(url)
    with _lock:
        if not _released and not _exit_registered:
            atexit.register(_drop_released)
            _exit_registered.append(True)
        _released.append(url)


def _drop_released() -> None:
    with _lock:
        urls, _released[:] = list(_released), []
    for url in urls:
        try:
            drop(url)
        except psycopg.Error:  # the server went first: the next run's drop_stale removes it
            pass


def available(admin: str | None = None) -> str | None:
    """None when the admin database answers, else why not (for a skip message; no password in it)."""
    admin = admin or admin_url()
    try:
        with _connect(admin) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        from .db import redacted

        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL at {redacted(admin)} ({first}); run scripts/start-postgres"
    return None
