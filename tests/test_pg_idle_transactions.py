"""A node that freezes (or whose host vanishes) inside a transaction does not hold its row locks for long: the
server ends a pooled session idle in a transaction after ``IDLE_IN_TRANSACTION_TIMEOUT_MS``, its transaction rolls
back, and the other nodes' writes of those rows go on. Without it the locks stay until the node thaws, or, for a
host gone without closing its socket, until the server's TCP keepalives give up (hours by default)."""

from __future__ import annotations

import psycopg
import pytest

from arcext.ids import MachineKey
from arcext.store.postgres import PostgresStore
from arcext.store.postgres import db as db_module
from pgdb import fresh_database

KEY = MachineKey("00000000-0000-0000-0000-000000000000", "rg", "m")


def test_a_node_frozen_in_a_transaction_lets_go_of_its_row_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module, "IDLE_IN_TRANSACTION_TIMEOUT_MS", 1000)
    url = fresh_database()
    frozen, other = PostgresStore(url), PostgresStore(url)
    try:
        frozen.mutate_machine(KEY, lambda _d: ({"machine": {"id": KEY.id, "name": "m"}, "extensions": {}}, None))
        with frozen.db.pool.connection() as conn:
            conn.execute("BEGIN")
            conn.execute("SELECT 1 FROM machines WHERE name = 'm' FOR UPDATE").fetchall()
            # ... and the node stops here (a paused VM): its transaction sits idle, holding the row
            with psycopg.connect(url, autocommit=True) as writer:
                writer.execute("SET lock_timeout = '10s'")
                writer.execute("UPDATE machines SET doc = doc WHERE name = 'm'")  # waits about a second, not forever
            with pytest.raises(psycopg.Error):
                conn.execute("COMMIT")  # the node, thawed: its session was ended, nothing it did was committed
        changed = other.mutate_machine(KEY, lambda d: ({**d, "machine": {**d["machine"], "n": 1}}, "ok"))
        assert changed == "ok"
    finally:
        frozen.close()
        other.close()


def test_pooled_connections_give_up_on_a_silent_database_unless_the_url_says_otherwise() -> None:
    """The settings that end a wait on a database gone silent (keepalives, ``tcp_user_timeout``,
    ``connect_timeout``) are on every pooled connection; a URL's own values win. What they do when packets stop
    (a fail-over that moved the address) needs a network this machine cannot cut: the kernel's and libpq's
    documented behaviour, not tested here."""
    from arcext.store.postgres.db import POOLED_CONNECTION_DEFAULTS, Database

    url = fresh_database()
    own = psycopg.conninfo.make_conninfo(url, keepalives_idle="30")
    for given, wanted in ((url, POOLED_CONNECTION_DEFAULTS), (own, {"keepalives_idle": "30"})):
        database = Database(given, max_size=1)
        try:
            with database.pool.connection() as conn:
                active = {opt.keyword.decode(): (opt.val or b"").decode() for opt in conn.pgconn.info}
        finally:
            database.close()
        for name, value in wanted.items():
            assert active[name] == value, (name, active[name])
