"""The row a compare-and-set write keeps for the thread's next change (store/postgres/db.py ``SeenRow``): the
document it started from and the records it wrote, not the document sent back by the database. The next change
starts from exactly what the database holds."""

from __future__ import annotations

from typing import Any

import orjson

from arcext.ids import MachineKey
from arcext.store.postgres import PostgresStore
from arcext.store.postgres.db import SeenRow
from pgdb import fresh_database

KEY = MachineKey("00000000-0000-0000-0000-000000000000", "rg", "m")


def test_a_kept_row_is_its_document_with_the_records_written_into_it() -> None:
    base = SeenRow(orjson.dumps({"machine": {}, "extensions": {"a": {"v": 1}, "b": {"v": 1}}}).decode(), "10", 3)
    row = base.written("11", 3, "a", orjson.dumps({"v": 2})).written("12", 4, "c", orjson.dumps({"v": 1}))
    row = row.written("13", 4, "b", None).written("14", 4, "a", orjson.dumps({"v": 3}))
    assert (row.xmin, row.catalog_version) == ("14", 4)
    assert [name for name, _record in row.changes] == ["c", "b", "a"]  # one change per extension, the last one
    assert row.document() == {"machine": {}, "extensions": {"a": {"v": 3}, "c": {"v": 1}}}
    assert row.document() is not row.document()  # a private copy each time
    assert base.document() == {"machine": {}, "extensions": {"a": {"v": 1}, "b": {"v": 1}}}  # unchanged


def test_changes_made_from_kept_rows_match_the_database() -> None:
    store = PostgresStore(fresh_database())
    try:
        store.mutate_machine(KEY, lambda _old: ({"machine": {"name": "m"}, "extensions": {"x": {"n": 0}}}, None))
        seen = store._machines.read_versioned(KEY)
        assert seen is not None
        store.db.offer_row(KEY.lower, seen)

        def change(name: str, n: int | None) -> Any:
            def apply(doc: Any) -> Any:
                if n is None:
                    doc["extensions"].pop(name, None)
                else:
                    doc["extensions"][name] = {"n": n, "nested": {"list": [n, "é"]}}
                doc["machine"]["name"] = "not stored"  # an extension-scoped change stores its record only
                return doc, dict(doc["extensions"])

            return apply

        steps = [("x", 1), ("y", 1), ("x", None), ("y", 2)]
        for name, n in steps:
            seen_before = store.db.take_row(KEY.lower)
            assert seen_before is not None  # every write below started from the row the previous one kept
            assert seen_before.document() == store.get_machine(KEY)
            store.db.offer_row(KEY.lower, seen_before)
            store.mutate_extension(KEY, name, change(name, n))
        kept = store.db.take_row(KEY.lower)
        assert kept is not None
        assert kept.document() == store.get_machine(KEY)
        assert kept.document() == {
            "machine": {"name": "m"},
            "extensions": {"y": {"n": 2, "nested": {"list": [2, "é"]}}},
        }
    finally:
        store.close()
