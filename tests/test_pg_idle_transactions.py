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
