"""The small records beside the machines: operations, tokens (by hash), the extension catalog,
maintenance configurations and assignments, and rollouts.

Each is a JSONB document with the columns it is looked up or filtered by. Listings come back in the
order the records were first written (an identity column), as the embedded store lists them. Counts
come from ``RETURNING`` rows, not ``rowcount``: inside a machine change's transaction (a pipeline)
``rowcount`` is not known until the pipeline is synced.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, cast

import orjson
from psycopg.types.json import Jsonb

from ...records import OperationRecord, RolloutRecord
from ..base import Record
from .db import Connection, Database


def _type_key(publisher: str, type_: str) -> tuple[str, str]:
    return publisher.lower(), type_.lower()


class OperationTable:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, op: OperationRecord) -> None:
        with self._db.connection() as conn:
            conn.execute(
                "INSERT INTO operations (id, status, end_time, doc) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, end_time = EXCLUDED.end_time,"
                " doc = EXCLUDED.doc",
                (op["id"], op.get("status"), op.get("endTime") or None, Jsonb(op)),
            )

    def get(self, op_id: str) -> OperationRecord | None:
        with self._db.connection() as conn:
            row = conn.execute("SELECT doc FROM operations WHERE id = %s", (op_id,)).fetchone()
        return row[0] if row else None

    def list(self, status: str | None) -> list[OperationRecord]:
        with self._db.connection() as conn:
            if status is None:
                rows = conn.execute("SELECT doc FROM operations").fetchall()
            else:
                rows = conn.execute("SELECT doc FROM operations WHERE status = %s", (status,)).fetchall()
        return [r[0] for r in rows]

    def delete_ended_before(self, iso_time: str) -> int:
        with self._db.connection() as conn:
            rows = conn.execute(
                "DELETE FROM operations WHERE end_time IS NOT NULL AND end_time < %s"
                " AND status IS DISTINCT FROM 'InProgress' RETURNING 1",
                (iso_time,),
            ).fetchall()
            return len(rows)


class TokenTable:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, token: Record) -> None:
        with self._db.connection() as conn:
            conn.execute(
                "INSERT INTO tokens (id, hash, doc) VALUES (%s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET hash = EXCLUDED.hash, doc = EXCLUDED.doc",
                (token["id"], token["hash"], Jsonb(token)),
            )

    def by_hash(self, token_hash: str) -> Record | None:
        with self._db.connection() as conn:
            row = conn.execute("SELECT doc FROM tokens WHERE hash = %s", (token_hash,)).fetchone()
        return row[0] if row else None

    def list(self) -> list[Record]:
        with self._db.connection() as conn:
            return [r[0] for r in conn.execute("SELECT doc FROM tokens ORDER BY seq").fetchall()]

    def delete(self, token_id: str) -> bool:
        with self._db.connection() as conn:
            return bool(conn.execute("DELETE FROM tokens WHERE id = %s RETURNING 1", (token_id,)).fetchall())


#: the catalog's version (schema migration 2), as an expression to read along another query
CATALOG_VERSION: Final = "coalesce((SELECT v FROM catalog_version WHERE id = 1), 0)"


class CatalogFence:
    """The catalog version a change works at (``CatalogTables.fenced``): the version read with the machine's row,
    or, if a type had to be read, the version read with it. ``used``: the change looked at a type, so a write
    made without a lock must find the catalog still at ``version`` (``MachineTable.compare_and_set``)."""

    __slots__ = ("used", "version")

    def __init__(self, version: int) -> None:
        self.version = version
        self.used = False


class CatalogTables:
    """Extension types and their versions, keyed case-insensitively by publisher and type.

    The types read are kept (with the catalog version they were read at) for the job path: a machine change
    reads the catalog version along the machine's row (``fenced``), and a type looked at within it comes from
    the kept ones when they are of that version; a type published on any node moved the version on, so the
    next such read misses and reads again. Reads outside a fence read the table, as before."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._kept_version = -1
        self._kept: dict[tuple[str, str], bytes | None] = {}  # (publisher, type) -> the record (JSON), None: absent
        self._local = threading.local()

    @contextmanager
    def fenced(self, version: int) -> Iterator[CatalogFence]:
        """Within the block this thread's type reads may use the types kept at ``version``."""
        fence = CatalogFence(version)
        outer: CatalogFence | None = getattr(self._local, "fence", None)
        self._local.fence = fence
        try:
            yield fence
        finally:
            self._local.fence = outer

    def put_type(self, record: Record) -> None:
        memo = self._db.memo()
        if memo is not None:
            memo.pop(("extension_type", *_type_key(record["publisher"], record["type"])), None)
        with self._db.connection() as conn:
            conn.execute(
                "INSERT INTO extension_types (publisher, type, doc) VALUES (%s, %s, %s)"
                " ON CONFLICT (publisher, type) DO UPDATE SET doc = EXCLUDED.doc",
                (*_type_key(record["publisher"], record["type"]), Jsonb(record)),
            )

    def get_type(self, publisher: str, type_: str) -> Record | None:
        """One type; inside a transaction read once (a job's claim checks its type's policy twice); inside a
        fence (``fenced``) read only when the kept one is not of the fence's version."""
        key = _type_key(publisher, type_)
        memo = self._db.memo()
        memo_key = ("extension_type", *key)
        if memo is not None and memo_key in memo:
            cached: Record | None = memo[memo_key]
            return cached
        fence: CatalogFence | None = getattr(self._local, "fence", None)
        found: Record | None
        kept = self._kept_at(fence.version, key) if fence is not None else None
        if kept is not None:
            found = orjson.loads(kept[0]) if kept[0] is not None else None
        else:
            with self._db.connection() as conn:
                row = conn.execute(
                    f"SELECT {CATALOG_VERSION}, (SELECT doc FROM extension_types WHERE publisher = %s AND type = %s)",
                    key,
                ).fetchone()
            assert row is not None
            version, found = int(row[0]), row[1]
            self._keep(version, key, found)
            if fence is not None:
                # types read at two versions by one change: no version stands for both (its write without a
                # lock then fails and it runs again)
                fence.version = version if not fence.used or fence.version == version else -1
        if fence is not None:
            fence.used = True
        if memo is not None:
            memo[memo_key] = found
        return found

    def _kept_at(self, version: int, key: tuple[str, str]) -> tuple[bytes | None] | None:
        with self._lock:
            if self._kept_version != version or key not in self._kept:
                return None
            return (self._kept[key],)

    def _keep(self, version: int, key: tuple[str, str], record: Record | None) -> None:
        raw = orjson.dumps(record) if record is not None else None
        with self._lock:
            if version > self._kept_version:
                self._kept_version, self._kept = version, {}
            if version == self._kept_version:
                self._kept[key] = raw

    def list_types(self) -> list[Record]:
        with self._db.connection() as conn:
            return [r[0] for r in conn.execute("SELECT doc FROM extension_types ORDER BY seq").fetchall()]

    def put_version(self, record: Record) -> None:
        with self._db.connection() as conn:
            conn.execute(
                "INSERT INTO extension_versions (publisher, type, version, doc) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (publisher, type, version) DO UPDATE SET doc = EXCLUDED.doc",
                (*_type_key(record["publisher"], record["type"]), record["version"].lower(), Jsonb(record)),
            )

    def list_versions(self, publisher: str, type_: str) -> list[Record]:
        with self._db.connection() as conn:
            rows = conn.execute(
                "SELECT doc FROM extension_versions WHERE publisher = %s AND type = %s ORDER BY seq",
                _type_key(publisher, type_),
            ).fetchall()
        return [r[0] for r in rows]


class MaintenanceTable:
    """Maintenance configurations and assignments: ``kind`` is the Store's table name. A listed record
    carries its ``key``, as the embedded store's do."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, kind: str, key: str, record: Record) -> None:
        with self._db.connection() as conn:
            conn.execute(
                "INSERT INTO maintenance (kind, key, doc) VALUES (%s, %s, %s)"
                " ON CONFLICT (kind, key) DO UPDATE SET doc = EXCLUDED.doc",
                (kind, key, Jsonb({**record, "key": key})),
            )

    def delete(self, kind: str, key: str) -> bool:
        with self._db.connection() as conn:
            deleted = conn.execute(
                "DELETE FROM maintenance WHERE kind = %s AND key = %s RETURNING 1", (kind, key)
            ).fetchall()
            return bool(deleted)

    def list(self, kind: str) -> list[Record]:
        with self._db.connection() as conn:
            rows = conn.execute("SELECT doc FROM maintenance WHERE kind = %s ORDER BY seq", (kind,)).fetchall()
        return [r[0] for r in rows]


def _split_rollout(rollout: RolloutRecord) -> tuple[list[Any], Record]:
    """(the plan: every batch's targets, the state: the rollout without them)."""
    plan = [[batch.get("targets", []) for batch in wave["batches"]] for wave in rollout["waves"]]
    state = {
        **rollout,
        "waves": [
            {**wave, "batches": [{k: v for k, v in b.items() if k != "targets"} for b in wave["batches"]]}
            for wave in rollout["waves"]
        ],
    }
    return plan, state


def _join_rollout(plan: list[Any], state: Record) -> RolloutRecord:
    for wave, targets in zip(state["waves"], plan, strict=True):
        for batch, batch_targets in zip(wave["batches"], targets, strict=True):
            batch["targets"] = batch_targets
    return cast(RolloutRecord, state)


class RolloutTable:
    """A rollout is its plan (the waves' targets: large, written once) and its state (small, rewritten
    on every change), as the embedded store keeps them."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._planned: set[str] = set()  # rollouts whose plan this process knows is stored

    def put(self, rollout: RolloutRecord) -> None:
        plan, state = _split_rollout(rollout)
        with self._lock:
            planned = rollout["id"] in self._planned
        with self._db.connection() as conn:
            if planned and self._update_state(conn, rollout["id"], state):
                return
            conn.execute(
                "INSERT INTO rollouts (id, plan, state) VALUES (%s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state",
                (rollout["id"], Jsonb(plan), Jsonb(state)),
            )
        with self._lock:
            self._planned.add(rollout["id"])

    @staticmethod
    def _update_state(conn: Connection, rollout_id: str, state: Record) -> bool:
        updated = conn.execute(
            "UPDATE rollouts SET state = %s WHERE id = %s RETURNING 1", (Jsonb(state), rollout_id)
        ).fetchall()
        return bool(updated)

    def get(self, rollout_id: str) -> RolloutRecord | None:
        with self._db.connection() as conn:
            row = conn.execute("SELECT plan, state FROM rollouts WHERE id = %s", (rollout_id,)).fetchone()
        return _join_rollout(row[0], row[1]) if row else None

    def list(self) -> list[RolloutRecord]:
        with self._db.connection() as conn:
            rows = conn.execute("SELECT plan, state FROM rollouts ORDER BY seq").fetchall()
        return [_join_rollout(plan, state) for plan, state in rows]

    def forget(self) -> None:
        with self._lock:
            self._planned.clear()
