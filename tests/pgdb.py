"""PostgreSQL for the tests: an empty, migrated database for each test.

Each test process (each xdist worker) makes one database from the schema's template and empties it
(``provision.reset``: a few milliseconds) before every test that asks for it; copying the template
for every test took 0.2-0.3 s here. It is dropped when the process ends (and, if the process was
killed, by the next run: ``provision.drop_stale``).

The server is the one ``scripts/start-postgres`` starts (``./scripts/test`` runs it), or
``$ARCEXT_TEST_DATABASE_URL`` (a role that may create databases). Without one, tests that need it
skip and say why. ``ARCEXT_TEST_STORE=postgres`` runs the server suites (every ``ArcextServer``) on
PostgreSQL as well: each server gets a database of its own (see arcext.testing.server).

Its fixtures (``pg_url``, and ``db`` for the cluster's tests) reach every test module through conftest.py's
``pytest_plugins``.
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
from collections.abc import Iterator

import pytest

from arcext.cluster.schema import migrate_cluster
from arcext.store.postgres import provision
from arcext.store.postgres.db import Database

_lock = threading.Lock()
_database: list[str] = []  # this process's database, once made


@functools.cache
def skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here (None when they can).

    A database named by ``$ARCEXT_TEST_DATABASE_URL`` (``./scripts/test`` sets it after starting one) that
    does not answer fails the tests instead: a run that was given a database must not quietly skip them."""
    reason = provision.available()
    if reason is not None and os.environ.get("ARCEXT_TEST_DATABASE_URL"):
        pytest.fail(f"ARCEXT_TEST_DATABASE_URL is set but unusable: {reason}", pytrace=False)
    return reason


def fresh_database() -> str:
    """The URL of this process's test database, emptied (skips the test without PostgreSQL). Close
    the stores of the previous test first: they would keep what they cached."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with _lock:
        if not _database:
            url = provision.create("arcext_t")
            atexit.register(provision.drop, url)
            _database.append(url)
            return url
        provision.reset(_database[0])
        return _database[0]


@pytest.fixture
def pg_url() -> str:
    """An empty database with the current schema, for this test."""
    return fresh_database()


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    """A pool on ``pg_url`` with the cluster's tables (arcext.cluster.schema) made and empty: the cluster's tests."""
    database = Database(pg_url, max_size=8)
    with database.connection() as conn:
        migrate_cluster(conn)
        for table in ("engine_jobs", "engine_results", "engine_calls"):
            conn.execute(f"DELETE FROM {table}")
    yield database
    database.close()
