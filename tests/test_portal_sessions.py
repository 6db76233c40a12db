"""The portal's server-side sessions and cookie signing key, against both stores (arcext.portal.sessions).

One contract, two implementations: files in the data directory (the embedded store) and tables in the database
(PostgreSQL, tests/pgdb.py's database). A "node" here is what one server process holds: a store, the data key
and the portal storage opened beside them; two nodes on one database share the data key, as deployed ones must.
Then what only the database does: the key written once when nodes start at once, sealed with the data key,
replaced (with a warning, never the key) when this node's data key cannot open it; expired rows swept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from arcext.crypto import KEY_FILE, SecretBox
from arcext.portal.file_storage import SECRET_FILE, SESSIONS_FILE, FileSessions
from arcext.portal.pg_schema import MIGRATIONS, migrate_portal
from arcext.portal.pg_storage import DatabaseSessions
from arcext.portal.sessions import PortalStorage
from arcext.portal.storage import open_portal_storage
from arcext.store.base import Store
from arcext.store.factory import open_store
from arcext.store.postgres import PostgresStore
from arcext.testing import ArcextServer
from pgdb import fresh_database

LIFETIME = 3600.0


@dataclass
class Node:
    store: Store
    portal: PortalStorage


class Stores:
    """Opens nodes on one store (``kind``): each a data directory under ``root`` sharing the first one's key file
    (embedded: the same directory, as a restarted server finds it)."""

    def __init__(self, kind: str, root: Path, database_url: str | None) -> None:
        self.kind = kind
        self.root = root
        self.database_url = database_url
        self.opened: list[Node] = []

    def node(self, name: str = "a", lifetime_s: float = LIFETIME, own_key: bool = False) -> Node:
        directory = self.root / (name if self.database_url else "a")
        directory.mkdir(parents=True, exist_ok=True)
        first_key = self.root / "a" / KEY_FILE
        if self.database_url and name != "a" and not own_key and first_key.exists():
            shutil.copy2(first_key, directory / KEY_FILE)
        store = open_store(directory, self.database_url)
        shared_db = store.db if isinstance(store, PostgresStore) else None  # as Services.shared_db
        portal = open_portal_storage(shared_db, SecretBox.from_data_dir(directory), directory, lifetime_s)
        made = Node(store, portal)
        self.opened.append(made)
        return made

    def refs(self) -> set[str]:
        """The session references the storage holds (file or table)."""
        if self.database_url is None:
            return set(json.loads((self.root / "a" / SESSIONS_FILE).read_text()))
        with psycopg.connect(self.database_url) as conn:
            return {str(r[0]) for r in conn.execute("SELECT ref FROM portal_sessions").fetchall()}

    def close(self) -> None:
        for made in self.opened:
            made.store.close()


def forget_portal_tables(url: str) -> None:
    """The portal's tables gone (the test database's reset keeps them): a database as before the upgrade."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS portal_sessions, portal_signing_key, portal_schema_version")


@pytest.fixture(params=["embedded", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    url = None
    if request.param == "postgres":
        url = fresh_database()
        forget_portal_tables(url)
    made = Stores(request.param, tmp_path, url)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Stores]:
    url = fresh_database()
    forget_portal_tables(url)
    made = Stores("postgres", tmp_path, url)
    try:
        yield made
    finally:
        made.close()


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


# --- the contract, on both stores -----------------------------------------------------------------------------
def test_the_store_decides_the_implementation(stores: Stores) -> None:
    sessions = stores.node().portal.sessions
    expected = FileSessions if stores.kind == "embedded" else DatabaseSessions
    assert type(sessions) is expected


def test_a_session_started_is_alive_and_ending_it_signs_it_out(stores: Stores) -> None:
    sessions = stores.node().portal.sessions
    first, second = sessions.start(), sessions.start()
    assert first != second and len(first) >= 40
    assert sessions.alive(first) and sessions.alive(second)
    sessions.end(first)
    assert not sessions.alive(first)
    assert sessions.alive(second)  # only the session signed out ends
    sessions.end(first)  # twice: nothing happens


def test_what_is_not_a_live_session_id_is_not_alive(stores: Stores) -> None:
    sessions = stores.node().portal.sessions
    live = sessions.start()
    for bogus in (None, "", 42, ["x"], live + "x", hashlib.sha256(live.encode()).hexdigest()):
        assert not sessions.alive(bogus)
        sessions.end(bogus)  # an unknown or malformed id ends nothing
    assert sessions.alive(live)


def test_only_the_sha256_of_a_session_id_is_kept(stores: Stores) -> None:
    session_id = stores.node().portal.sessions.start()
    assert stores.refs() == {hashlib.sha256(session_id.encode()).hexdigest()}


def test_sessions_and_the_signing_key_outlive_the_process_that_made_them(stores: Stores) -> None:
    """Another node (PostgreSQL) or the same data directory reopened (embedded) honours the session and signs
    with the same key; a Sign out there holds here too."""
    a = stores.node("a")
    kept, ended = a.portal.sessions.start(), a.portal.sessions.start()
    b = stores.node("b")
    assert b.portal.signing_key == a.portal.signing_key and len(a.portal.signing_key) >= 32
    assert b.portal.sessions.alive(kept) and b.portal.sessions.alive(ended)
    b.portal.sessions.end(ended)
    assert not b.portal.sessions.alive(ended)
    if stores.kind == "postgres":  # at the other node's next request, with nothing cached
        assert not a.portal.sessions.alive(ended) and a.portal.sessions.alive(kept)
    else:  # the one process that serves the directory: what it wrote is what the next start reads
        assert not stores.node("again").portal.sessions.alive(ended)


def test_a_session_expires_after_its_lifetime(stores: Stores) -> None:
    sessions = stores.node(lifetime_s=0.5).portal.sessions
    session_id = sessions.start()
    assert sessions.alive(session_id)
    assert wait_until(lambda: not sessions.alive(session_id), timeout=3.0)


# --- the embedded store: today's files ---------------------------------------------------------------------
def test_the_embedded_store_keeps_its_files_with_mode_0600(tmp_path: Path) -> None:
    stores = Stores("embedded", tmp_path, None)
    try:
        portal = stores.node().portal
        portal.sessions.start()
        for name in (SECRET_FILE, SESSIONS_FILE):
            assert (tmp_path / "a" / name).stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "a" / SECRET_FILE).read_text().strip() == portal.signing_key
    finally:
        stores.close()


# --- PostgreSQL: what only the database does -----------------------------------------------------------------
def test_the_database_keeps_no_portal_files(pg: Stores) -> None:
    pg.node().portal.sessions.start()
    assert not (pg.root / "a" / SECRET_FILE).exists() and not (pg.root / "a" / SESSIONS_FILE).exists()


def test_the_signing_key_is_sealed_with_the_data_key(pg: Stores) -> None:
    a = pg.node("a")
    assert pg.database_url is not None
    with psycopg.connect(pg.database_url) as conn:
        rows = conn.execute("SELECT sealed FROM portal_signing_key").fetchall()
    assert len(rows) == 1
    sealed = str(rows[0][0])
    assert a.portal.signing_key not in sealed
    box = SecretBox.from_data_dir(pg.root / "a")
    assert box.open(sealed) == {"portalSigningKey": a.portal.signing_key}


def test_nodes_starting_at_once_migrate_once_and_agree_on_one_key(pg: Stores) -> None:
    pg.node("a").store.close()  # the key file every node shares (its key row dropped below, with the tables)
    assert pg.database_url is not None
    forget_portal_tables(pg.database_url)
    names = [f"n{i}" for i in range(6)]
    keys: dict[str, str] = {}
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(names))

    def start(name: str) -> None:
        try:
            barrier.wait()
            keys[name] = pg.node(name).portal.signing_key
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert len(keys) == len(names) and len(set(keys.values())) == 1
    with psycopg.connect(pg.database_url) as conn:
        versions = conn.execute("SELECT version FROM portal_schema_version ORDER BY version").fetchall()
        rows = conn.execute("SELECT count(*) FROM portal_signing_key").fetchone()
    assert [v for (v,) in versions] == [v for v, _sql in MIGRATIONS]
    assert rows is not None and rows[0] == 1


def test_migrating_again_applies_nothing(pg: Stores) -> None:
    pg.node()
    assert pg.database_url is not None
    with psycopg.connect(pg.database_url, autocommit=True) as conn:
        assert migrate_portal(conn) == []


def test_a_key_sealed_with_another_data_key_is_replaced_with_a_warning_never_the_key(
    pg: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    """A database restored without its secret.key (or a node given another key): the portal still starts, with a
    new key (everyone signs in again), says why, and never logs a key."""
    a = pg.node("a")
    with caplog.at_level(logging.INFO):
        other = pg.node("other", own_key=True)
    assert other.portal.signing_key != a.portal.signing_key
    warnings = [r for r in caplog.records if "sealed with another secret.key" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    for record in caplog.records:
        for key in (a.portal.signing_key, other.portal.signing_key):
            assert key not in record.getMessage()
    # the row is the new one now: a node with that data key reads it back, unchanged
    assert pg.database_url is not None
    with psycopg.connect(pg.database_url) as conn:
        row = conn.execute("SELECT sealed FROM portal_signing_key").fetchone()
    assert row is not None
    assert SecretBox.from_data_dir(pg.root / "other").open(str(row[0]))["portalSigningKey"] == other.portal.signing_key


def test_expired_sessions_are_swept_at_the_next_sign_in(pg: Stores) -> None:
    short = pg.node("a", lifetime_s=0.3).portal.sessions
    expired = [short.start() for _ in range(3)]
    time.sleep(0.5)
    assert not any(short.alive(s) for s in expired)
    assert len(pg.refs()) == 3  # an expired row stays until a sweep
    fresh = pg.node("b").portal.sessions.start()
    assert pg.refs() == {hashlib.sha256(fresh.encode()).hexdigest()}


def test_a_node_opening_sweeps_expired_sessions(pg: Stores) -> None:
    short = pg.node("a", lifetime_s=0.2).portal.sessions
    short.start()
    time.sleep(0.4)
    pg.node("b")
    assert pg.refs() == set()


def test_a_cut_database_connection_shows_a_503_page_and_the_session_survives(tmp_path: Path) -> None:
    """Every portal request reads its session from the database: a connection cut under it (a restart, a
    fail-over) is a 503 page with Retry-After, not a 500, and the reload that follows is signed in still."""
    url = fresh_database()
    forget_portal_tables(url)
    server = ArcextServer(tmp_path / "node", database_url=url).start()
    try:
        assert server.app is not None
        client = server.app.test_client()
        form = client.get("/portal/signin")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf is not None
        r = client.post("/portal/signin", data={"token": server.token, "csrf_token": csrf.group(1)})
        assert r.status_code == 303, r.text
        statuses: list[int] = []
        for _ in range(3):
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            for _ in range(25):  # a fresh connection comes back within a few requests
                r = client.get("/portal/machines")
                statuses.append(r.status_code)
                if r.status_code == 200:
                    break
                assert r.status_code == 503, r.text
                assert "The database cannot be reached" in r.text and r.headers["Retry-After"] == "1"
            assert statuses[-1] == 200 and "Machines - Azure Arc" in r.text, statuses
        assert 503 in statuses, f"no request met a cut connection: {statuses}"
    finally:
        server.stop()
