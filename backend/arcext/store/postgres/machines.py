"""Machine documents as rows: one JSONB document per (subscription, resource group, name), lower case.

A change locks its row (``SELECT ... FOR UPDATE``) for the length of its transaction. A machine that
does not exist yet has no row to lock: its creators serialise on a transaction-level advisory lock
named after the key instead, then read again (under READ COMMITTED each statement sees what committed
before it), so two nodes creating one machine at once never both insert it.

Listing pages by keyset over the primary key, in the embedded store's order and with its
continuation token: ``"<resource group>\\0<name>"`` of the last machine of the page (lower case).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from ...ids import MachineKey
from ...records import ExtensionRecord
from ..base import MachineDoc
from .db import Connection, Database, SeenRow
from .records import CATALOG_VERSION

_SEP = "\x00"
_KEY = "subscription = %s AND resource_group = %s AND name = %s"

#: ``store.base.names_operation`` in SQL: the machine or one of its extensions names an operation. The
#: database reads every row for it, but sends only the matches (the orphan search's periodic scan).
NAMES_OPERATION = (
    """doc @? '$.machine.operation ? (@ != null && @ != "")'"""
    """ OR doc @? '$.extensions.*.operation ? (@ != null && @ != "")'"""
)


def _as_is(raw: Any) -> Any:
    """A JSON parameter already serialised (``Jsonb(raw, dumps=_as_is)``)."""
    return raw


def key_params(key: MachineKey) -> tuple[str, str, str]:
    sub, rg, name = key.subscription.lower(), key.resource_group.lower(), key.name.lower()
    return sub, rg, name


def page_token(rg: str, name: str) -> str:
    return f"{rg}{_SEP}{name}"


class MachineTable:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- reads -----------------------------------------------------------------------------------
    def get(self, key: MachineKey) -> MachineDoc | None:
        with self._db.connection() as conn:
            row = conn.execute(f"SELECT doc FROM machines WHERE {_KEY}", key_params(key)).fetchone()
        return row[0] if row else None

    def get_many(self, keys: Iterable[MachineKey], chunk: int = 1000) -> dict[str, MachineDoc | None]:
        """The documents of ``keys`` by ``MachineKey.lower`` (None for a machine that does not exist), read
        ``chunk`` keys per query (the key arrays joined with the primary key)."""
        wanted = {key_params(key): key.lower for key in keys}
        found: dict[str, MachineDoc | None] = dict.fromkeys(wanted.values())
        pending = list(wanted)
        for start in range(0, len(pending), chunk):
            part = pending[start : start + chunk]
            with self._db.connection() as conn:
                rows = conn.execute(
                    "SELECT m.subscription, m.resource_group, m.name, m.doc FROM machines m"
                    " JOIN unnest(%s::text[], %s::text[], %s::text[]) AS k(s, g, n)"
                    " ON m.subscription = k.s AND m.resource_group = k.g AND m.name = k.n",
                    ([p[0] for p in part], [p[1] for p in part], [p[2] for p in part]),
                ).fetchall()
            for sub, rg, name, doc in rows:
                found[wanted[(sub, rg, name)]] = doc
        return found

    def page(
        self, subscription: str, resource_group: str | None, after: str | None, limit: int
    ) -> tuple[list[MachineDoc], str | None]:
        where = ["subscription = %s"]
        params: list[Any] = [subscription.lower()]
        if resource_group:
            where.append("resource_group = %s")
            params.append(resource_group.lower())
        if after is not None:
            rg, sep, name = after.partition(_SEP)
            if sep:
                where.append("(resource_group, name) > (%s, %s)")
                params += [rg, name]
            else:  # not a token this store made: it compares as the string "<rg>\0<name>" would
                where.append("resource_group >= %s")
                params.append(after)
        params.append(limit + 1)
        sql = (
            f"SELECT resource_group, name, doc FROM machines WHERE {' AND '.join(where)}"
            " ORDER BY resource_group, name LIMIT %s"
        )
        with self._db.connection() as conn:
            rows = conn.execute(sql, params).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        token = page_token(rows[-1][0], rows[-1][1]) if more and rows else None
        return [r[2] for r in rows], token

    def scan(self, batch: int = 500, where: str = "") -> Iterator[MachineDoc]:
        """Every document (with ``where``: every one that matches that SQL condition on ``doc``, such as
        NAMES_OPERATION), a batch of rows per query (no connection is held between batches)."""
        last: tuple[str, str, str] | None = None
        only = f" AND ({where})" if where else ""
        while True:
            with self._db.connection() as conn:
                if last is None:
                    rows = conn.execute(
                        f"SELECT subscription, resource_group, name, doc FROM machines WHERE true{only}"
                        " ORDER BY subscription, resource_group, name LIMIT %s",
                        (batch,),
                    ).fetchall()
                else:
                    rows = conn.execute(
                        "SELECT subscription, resource_group, name, doc FROM machines"
                        f" WHERE (subscription, resource_group, name) > (%s, %s, %s){only}"
                        " ORDER BY subscription, resource_group, name LIMIT %s",
                        (*last, batch),
                    ).fetchall()
            for row in rows:
                yield row[3]
            if len(rows) < batch:
                return
            last = (rows[-1][0], rows[-1][1], rows[-1][2])

    def count(self) -> int:
        with self._db.connection() as conn:
            row = conn.execute("SELECT count(*) FROM machines").fetchone()
        return int(row[0]) if row else 0

    def read_versioned(self, key: MachineKey) -> SeenRow | None:
        """The document (as text), the row's version and the catalog's version, in one statement (None: no row)."""
        with self._db.connection() as conn:
            row = conn.execute(
                f"SELECT doc::text, xmin::text, {CATALOG_VERSION} FROM machines WHERE {_KEY}", key_params(key)
            ).fetchone()
        return SeenRow(row[0], row[1], int(row[2])) if row is not None else None

    def compare_and_set(
        self,
        key: MachineKey,
        extension: str,
        record: ExtensionRecord | None,
        seen: SeenRow,
        catalog_version: int | None,
        logged: tuple[str, list[Any]] | None,
    ) -> SeenRow | None:
        """Write one extension's record (None: remove it) only if the row is still the version ``seen`` (and, with
        ``catalog_version``, the catalog still at that version), with ``logged`` (an insert that reads the CTE
        ``along``: the change's events) in the same statement. Returns the row as written (``seen`` with the record
        written into it, at the row's new version), or None when it had changed (nothing was written). Sent with
        other threads' writes (``Database.grouped``): one commit for all."""
        params = key_params(key)
        values: list[Any]
        raw: bytes | None = None
        if record is None:
            change, values = "doc #- ARRAY['extensions', %s]", [extension]
        else:
            raw = orjson.dumps(record)  # once: the statement's parameter and the row kept after it
            change, values = "jsonb_set(doc, ARRAY['extensions', %s], %s)", [extension, Jsonb(raw, dumps=_as_is)]
        where = f"{_KEY} AND xmin = %s::xid"
        values += [*params, seen.xmin]
        if catalog_version is not None:
            where += f" AND {CATALOG_VERSION} = %s"
            values.append(catalog_version)
        query = (
            f"WITH along AS (UPDATE machines SET doc = {change} WHERE {where}"
            f" RETURNING xmin::text AS x, {CATALOG_VERSION} AS v)"
        )
        if logged is not None:
            query += f", logged AS ({logged[0]})"
            values += logged[1]
        rows = self._db.grouped(query + " SELECT x, v FROM along", values, order=("machines", *params))
        return seen.written(rows[0][0], int(rows[0][1]), extension, raw) if rows else None

    # --- changes (inside the caller's transaction) -------------------------------------------------
    @staticmethod
    def lock(conn: Connection, key: MachineKey) -> tuple[MachineDoc | None, int]:
        """The document, its row locked until the transaction ends (None when absent: then the key's
        advisory lock is held instead, so no other writer can create it meanwhile), and the catalog's version."""
        params = key_params(key)
        query = f"SELECT doc, {CATALOG_VERSION} FROM machines WHERE {_KEY} FOR UPDATE"
        row = conn.execute(query, params).fetchone()
        if row is not None:
            return row[0], int(row[1])
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key.lower,))
        row = conn.execute(query, params).fetchone()
        if row is not None:
            return row[0], int(row[1])
        return None, -1

    @staticmethod
    def write(conn: Connection, key: MachineKey, existed: bool, new: MachineDoc | None) -> None:
        params = key_params(key)
        if new is None:
            conn.execute(f"DELETE FROM machines WHERE {_KEY}", params)
        elif existed:
            conn.execute(f"UPDATE machines SET doc = %s WHERE {_KEY}", (Jsonb(new), *params))
        else:
            conn.execute(
                "INSERT INTO machines (subscription, resource_group, name, doc) VALUES (%s, %s, %s, %s)",
                (*params, Jsonb(new)),
            )

    @staticmethod
    def write_extension(conn: Connection, key: MachineKey, extension: str, record: ExtensionRecord | None) -> None:
        """Replace (or with None remove) one extension's record, leaving the rest of the document as stored."""
        conn.execute(*MachineTable.extension_change(key, extension, record))

    @staticmethod
    def extension_change(
        key: MachineKey, extension: str, record: ExtensionRecord | None
    ) -> tuple[str, tuple[Any, ...]]:
        """The statement (and its parameters) of ``write_extension``, to run on its own or along another."""
        params = key_params(key)
        if record is None:
            return f"UPDATE machines SET doc = doc #- ARRAY['extensions', %s] WHERE {_KEY}", (extension, *params)
        return (
            f"UPDATE machines SET doc = jsonb_set(doc, ARRAY['extensions', %s], %s) WHERE {_KEY}",
            (extension, Jsonb(record), *params),
        )
