"""The plans of the job path's hottest cluster statements: they find their rows through the primary key, not by
reading the whole table. A queue that has run many jobs holds many dead rows until autovacuum comes by, and a scan
reads them all: the ends of jobs planned as a hash join over such a scan took about a fifth of PostgreSQL's CPU in
the two-node rollout benchmark (docs/multinode.md)."""

from __future__ import annotations

import re

from psycopg.types.json import Jsonb

from arcext.cluster.node import SEND_ENDS, TAKE_RESULTS
from arcext.store.postgres.db import Database


def numbered(query: str) -> str:
    """``%s`` placeholders as ``$1``, ``$2``, ... (a PREPARE's)."""
    count = iter(range(1, 1000))
    return re.sub(r"%s", lambda _m: f"${next(count)}", query)


def generic_plan(db: Database, query: str, types: str, args: str) -> str:
    """The plan the server keeps for ``query`` once prepared (psycopg prepares a statement run five times); the
    generic plan is the one that must not scan."""
    with db.connection() as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE probe{f'({types})' if types else ''} AS {numbered(query)}")
        try:
            run = f"probe({args})" if args else "probe"
            return "\n".join(str(row[0]) for row in conn.execute(f"EXPLAIN EXECUTE {run}").fetchall())
        finally:
            conn.execute("DEALLOCATE probe")
            conn.execute("RESET plan_cache_mode")


def churned(db: Database, table: str, insert: str, rows: int = 20_000, kept: int = 50) -> None:
    """``table`` in the middle of a run: ``rows`` written and analysed (as autovacuum does while the queue is
    full), then all but the last ``kept`` deleted, dead rows the next autovacuum has not yet cleared."""
    with db.connection() as conn:
        conn.execute(f"INSERT INTO {table} {insert}", (rows,))
        conn.execute(f"ANALYZE {table}")
        conn.execute(f"DELETE FROM {table} WHERE id <= (SELECT max(id) - %s FROM {table})", (kept,))


def test_ends_of_jobs_find_their_rows_by_the_primary_key(db: Database) -> None:
    churned(
        db,
        "engine_jobs",
        "(subscription, resource_group, name, ext, claimed_by)"
        " SELECT 's', 'g', 'm' || n, 'e', 'node-a' FROM generate_series(1, %s) AS n",
    )
    plan = generic_plan(
        db,
        SEND_ENDS,
        "jsonb, bigint[], text, text, text",
        "'[[1, {}]]', ARRAY[1, 2]::bigint[], 'node-a', 'node-a', 'arcext_results'",
    )
    assert "Seq Scan on engine_jobs" not in plan, plan
    assert "engine_jobs_pkey" in plan, plan


def test_the_leaders_read_of_results_finds_them_by_the_primary_key(db: Database) -> None:
    churned(db, "engine_results", "(node, result) SELECT 'node-a', '{}'::jsonb FROM generate_series(1, %s)")
    plan = generic_plan(db, TAKE_RESULTS, "", "")
    assert "Seq Scan on engine_results" not in plan, plan
    assert "engine_results_pkey" in plan, plan


def test_the_ends_statement_still_does_its_job(db: Database) -> None:
    """The rewritten statement against the queue: only the rows this node holds go, and only their results are
    handed to the leader, in the batch's order."""
    with db.connection() as conn:
        ids = [
            int(row[0])
            for row in conn.execute(
                "INSERT INTO engine_jobs (subscription, resource_group, name, ext, claimed_by)"
                " SELECT 's', 'g', 'm' || n, 'e', CASE WHEN n = 2 THEN 'node-b' ELSE 'node-a' END"
                " FROM generate_series(1, 3) AS n RETURNING id"
            ).fetchall()
        ]
        ends = [[ids[2], {"n": 3}], [ids[0], {"n": 1}], [ids[1], {"n": 2}]]
        conn.execute(SEND_ENDS, (Jsonb(ends), ids, "node-a", "node-a", "arcext_test_results"))
        left = [int(row[0]) for row in conn.execute("SELECT id FROM engine_jobs ORDER BY id").fetchall()]
        results = conn.execute("SELECT node, result FROM engine_results ORDER BY id").fetchall()
    assert left == [ids[1]]  # node-b's job stays
    assert results == [("node-a", {"n": 3}), ("node-a", {"n": 1})]
