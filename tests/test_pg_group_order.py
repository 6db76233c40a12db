"""Group commit's write order (store/postgres/db.py ``in_write_order``): every group writes its rows in one order, so
two nodes' groups that write the same rows never wait for each other in a circle (a deadlock, which PostgreSQL
would break after a second by failing one group and running its writes one by one)."""

from __future__ import annotations

import logging
import threading

import psycopg
import pytest

from arcext.store.postgres.db import Database, _Grouped, in_write_order
from pgdb import fresh_database


def test_a_group_goes_out_in_the_order_of_its_rows() -> None:
    entries = [
        _Grouped("q1", (), ("simhosts", "a")),
        _Grouped("q2", ()),
        _Grouped("q3", (), ("machines", "s", "rg", "m2")),
        _Grouped("q4", (), ("machines", "s", "rg", "m1")),
        _Grouped("q5", ()),
    ]
    assert [e.query for e in in_write_order(entries)] == ["q4", "q3", "q1", "q2", "q5"]  # unnamed: last, as they came


def test_two_groups_writing_two_rows_in_opposite_orders_do_not_deadlock(caplog: pytest.LogCaptureFixture) -> None:
    url = fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS group_order_rows (id int PRIMARY KEY, n int NOT NULL)")
        conn.execute("DELETE FROM group_order_rows")
        conn.execute("INSERT INTO group_order_rows VALUES (1, 0), (2, 0)")
    nodes = [Database(url), Database(url)]
    try:

        def write(row: int, first: bool) -> _Grouped:
            # a group's first write holds its row a moment (its RETURNING sleeps after the update): the other group
            # has written its own first row meanwhile, so each group's second write meets the other's first
            returning = " RETURNING pg_sleep(0.3)" if first else ""
            query = f"UPDATE group_order_rows SET n = n + 1 WHERE id = %s{returning}"
            return _Grouped(query, (row,), ("group_order_rows", str(row)))

        groups = [[write(1, True), write(2, False)], [write(2, True), write(1, False)]]  # as they came: opposite orders
        caplog.set_level(logging.INFO, logger="arcext.store.postgres.db")
        threads = [
            threading.Thread(target=node._send_group, args=(group,)) for node, group in zip(nodes, groups, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
        assert all(entry.error is None for group in groups for entry in group)
        assert not [r for r in caplog.records if "each runs on its own" in r.getMessage()]  # no group failed
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT id, n FROM group_order_rows ORDER BY id").fetchall() == [(1, 2), (2, 2)]
    finally:
        for node in nodes:
            node.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS group_order_rows")
