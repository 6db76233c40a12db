"""The stores: the Store contract, run on both the embedded TinyDB store and PostgreSQL (fixture
``stores``), then what is particular to the embedded store (journal, checkpoints, snapshot files:
TinyDB only). PostgreSQL's own (migrations, several nodes, partitions) is in test_store_postgres.py."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from arcext.ids import MachineKey
from arcext.store import Store, TinyDBStore
from arcext.store.capabilities import ObservableStore
from arcext.store.factory import open_store
from arcext.store.groupcommit import GroupCommitFile
from arcext.store.machines import shard_of
from pgdb import fresh_database

SUB = "00000000-0000-0000-0000-000000000000"


def doc(key: MachineKey, **props: Any) -> dict[str, Any]:
    return {"machine": {"id": key.id, "name": key.name, "location": "eastus", "properties": props}, "extensions": {}}


def put(store: Store, key: MachineKey, **props: Any) -> None:
    store.mutate_machine(key, lambda _old: (doc(key, **props), None))


class Stores:
    """One store's data (a directory, or a database) and its instances: ``open()`` gives another one on
    the same data, as a restarted server (or a second node) would have; all are closed at the end."""

    def __init__(self, kind: str, data_dir: Path, database_url: str | None) -> None:
        self.kind = kind
        self.data_dir = data_dir
        self.database_url = database_url
        self.opened: list[Store] = []

    def open(self, tokens_only: bool = False) -> Store:
        store = open_store(self.data_dir, self.database_url, tokens_only=tokens_only)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in reversed(self.opened):
            store.close()


@pytest.fixture(params=["tinydb", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    url = fresh_database() if request.param == "postgres" else None
    opened = Stores(request.param, tmp_path / "data", url)
    try:
        yield opened
    finally:
        opened.close_all()


def test_changes_survive_reopen_and_deletes_stick(stores: Stores) -> None:
    store = stores.open()
    a, b = MachineKey(SUB, "rg", "A"), MachineKey(SUB, "rg", "b")
    put(store, a, n=1)
    put(store, b, n=2)
    store.mutate_machine(b, lambda _old: (None, None))
    store.close()
    stores.opened.remove(store)
    reopened = stores.open()
    assert reopened.get_machine(MachineKey(SUB, "RG", "a"))["machine"]["properties"] == {"n": 1}  # type: ignore[index]
    assert reopened.get_machine(b) is None
    assert reopened.count_machines() == 1


def test_a_failing_change_leaves_the_document_untouched(stores: Stores) -> None:
    store = stores.open()
    key = MachineKey(SUB, "rg", "m")
    put(store, key, n=1)

    def broken(current: Any) -> Any:
        current["machine"]["properties"]["n"] = 99
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.mutate_machine(key, broken)
    assert store.get_machine(key)["machine"]["properties"] == {"n": 1}  # type: ignore[index]
    returned = store.get_machine(key)
    assert returned is not None
    returned["machine"]["properties"]["n"] = 5  # callers get copies
    assert store.get_machine(key)["machine"]["properties"] == {"n": 1}  # type: ignore[index]


def test_concurrent_increments_are_not_lost(stores: Stores) -> None:
    store = stores.open()
    key = MachineKey(SUB, "rg", "m")
    put(store, key, n=0)

    def bump(current: Any) -> Any:
        current["machine"]["properties"]["n"] += 1
        return current, None

    threads = [threading.Thread(target=lambda: [store.mutate_machine(key, bump) for _ in range(25)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_machine(key)["machine"]["properties"]["n"] == 100  # type: ignore[index]
    assert stores.open().get_machine(key)["machine"]["properties"]["n"] == 100  # type: ignore[index]


def test_listing_orders_by_group_then_name_and_pages(stores: Stores) -> None:
    store = stores.open()
    for rg, name in [("b", "z"), ("a", "y"), ("a", "X"), ("c", "w")]:
        put(store, MachineKey(SUB, rg, name))
    put(store, MachineKey("11111111-1111-1111-1111-111111111111", "a", "other"))
    first, token = store.list_machines(SUB, None, None, 2)
    assert [d["machine"]["name"] for d in first] == ["X", "y"] and token is not None
    rest, end = store.list_machines(SUB, None, token, 10)
    assert [d["machine"]["name"] for d in rest] == ["z", "w"] and end is None
    in_a, _ = store.list_machines(SUB, "A", None, 10)
    assert [d["machine"]["name"] for d in in_a] == ["X", "y"]


def _event(key: MachineKey, n: int) -> dict[str, Any]:
    return {"eventDataId": f"event-{n}", "eventTimestamp": "2026-11-25T03:00:00.000000Z", "resourceId": key.id, "n": n}


def test_tokens_written_by_another_process_are_seen(stores: Stores) -> None:
    """`arcext token create|revoke` runs in a process of its own: the server sees its writes at once."""
    server_view = stores.open()
    cli_view = stores.open(tokens_only=True)
    cli_view.put_token({"id": "t1", "hash": "h1", "name": "n", "role": "Reader", "scope": "/", "createdAt": "x"})
    assert server_view.get_token_by_hash("h1") is not None
    assert [t["id"] for t in server_view.list_tokens()] == ["t1"]
    assert cli_view.delete_token("t1") and not cli_view.delete_token("t1")
    assert server_view.get_token_by_hash("h1") is None


def test_a_token_revoked_by_another_process_fails_once_the_revocation_returns_under_load(stores: Stores) -> None:
    """The embedded server looks at the tokens file at most every TOKENS_RECHECK_SECONDS, not on every lookup; the
    command's write waits that long, so even while other requests keep the server looking, the first lookup after
    the revocation returns no longer finds the token (and the same on PostgreSQL, which has no such wait)."""
    server_view = stores.open()
    cli_view = stores.open(tokens_only=True)
    stop = threading.Event()
    looked = [0]

    def other_requests() -> None:
        while not stop.is_set():
            server_view.get_token_by_hash("h-other")
            looked[0] += 1

    busy = threading.Thread(target=other_requests)
    busy.start()
    try:
        for n in range(5):
            cli_view.put_token(
                {"id": f"t{n}", "hash": f"h{n}", "name": "n", "role": "Reader", "scope": "/", "createdAt": "x"}
            )
            assert server_view.get_token_by_hash(f"h{n}") is not None
            assert cli_view.delete_token(f"t{n}")
            assert server_view.get_token_by_hash(f"h{n}") is None
    finally:
        stop.set()
        busy.join()
    assert looked[0] > 10  # the server kept looking up tokens throughout


def test_the_embedded_server_does_not_stat_the_tokens_file_on_every_lookup(tmp_path: Path, monkeypatch: Any) -> None:
    from arcext.store import metadata

    stats: list[Path] = []
    real = metadata._file_identity

    def counted(path: Path) -> tuple[int, int, int]:
        stats.append(path)
        return real(path)

    store = TinyDBStore(tmp_path)
    monkeypatch.setattr(metadata, "_file_identity", counted)
    started = time.monotonic()
    lookups = 0
    while time.monotonic() - started < 0.3:
        store.get_token_by_hash("absent")
        lookups += 1
    assert lookups > 1000
    assert 1 <= len(stats) <= 0.3 / metadata.TOKENS_RECHECK_SECONDS + 2


def test_concurrent_writers_lose_nothing(stores: Stores) -> None:
    store = stores.open()
    keys = [MachineKey(SUB, "rg", f"m{i}") for i in range(32)]

    def writer(key: MachineKey) -> None:
        for n in range(20):
            put(store, key, n=n)

    threads = [threading.Thread(target=writer, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reopened = stores.open()  # embedded store: replay only, no checkpoint ran
    assert all(reopened.get_machine(k)["machine"]["properties"] == {"n": 19} for k in keys)  # type: ignore[index]
    assert reopened.count_machines() == 32


def test_events_of_a_change_that_changed_nothing_are_still_recorded(stores: Stores) -> None:
    store = stores.open()
    key = MachineKey(SUB, "rg", "absent")
    store.mutate_machine(key, lambda current: (current, None), events=[_event(key, 7)])
    assert [e["n"] for e in stores.open().iter_events("2026-11-25", "2026-11-25")] == [7]


def test_a_batch_of_ten_thousand_events_is_recorded_whole(stores: Stores) -> None:
    """A leader's audit after a crash records its repairs' events in one call: more than one statement's worth
    of parameters on PostgreSQL (9 per event, 65,535 at most), with and without a machine's change."""
    store = stores.open()
    key = MachineKey(SUB, "rg", "big")
    store.append_events([_event(key, n) for n in range(10_000)])
    store.mutate_machine(
        key, lambda current: (doc(key, n=1), None), events=[_event(key, n) for n in range(10_000, 17_500)]
    )
    got = [e["n"] for e in stores.open().iter_events("2026-11-25", "2026-11-25")]
    assert sorted(got) == list(range(17_500))


def test_activity_log_queries_by_resource_and_caller(stores: Stores) -> None:
    """The activity log's query (``Store.query_events`` under ``ActivityLog.query``): a resource means it and what
    is under it, not a sibling whose name starts the same or matches as a LIKE pattern would; resource and caller
    compare without case; other subscriptions and days stay out."""
    from arcext.activity import ActivityLog, EventFilter

    base = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.HybridCompute/machines"
    rows = [
        (f"{base}/m1", "Alice@example.com", SUB, "2026-11-25"),
        (f"{base}/m1/extensions/e1", "alice@EXAMPLE.com", SUB, "2026-11-25"),
        (f"{base.upper()}/M1/EXTENSIONS/E2", "bob", SUB, "2026-11-25"),
        (f"{base}/m10", "alice@example.com", SUB, "2026-11-25"),
        (f"{base}/a_b%", "bob", SUB, "2026-11-25"),
        (f"{base}/axb%", "bob", SUB, "2026-11-25"),
        (f"{base}/axbx", "bob", SUB, "2026-11-25"),
        (f"{base}/m1", "alice@example.com", "11111111-1111-1111-1111-111111111111", "2026-11-25"),
        (f"{base}/m1", "alice@example.com", SUB, "2026-11-20"),
    ]
    store = stores.open()
    store.append_events(
        [
            {
                "eventDataId": f"event-{n}",
                "eventTimestamp": f"{day}T03:00:00.000000Z",
                "subscriptionId": sub,
                "resourceId": rid,
                "caller": caller,
                "n": n,
            }
            for n, (rid, caller, sub, day) in enumerate(rows)
        ]
    )
    log = ActivityLog(stores.open())
    window = {"start": "2026-11-24T00:00:00.000000Z", "end": "2026-11-26T00:00:00.000000Z"}

    def found(**narrow: str) -> list[int]:
        return sorted(e["n"] for e in log.query(SUB, EventFilter(**window, **narrow)))  # type: ignore[arg-type]

    assert found() == [0, 1, 2, 3, 4, 5, 6]
    assert found(resource_uri=f"{base}/M1/") == [0, 1, 2]
    assert found(resource_uri=f"{base}/m1/extensions/e1") == [1]
    assert found(resource_uri=f"{base}/a_b%") == [4]
    assert found(resource_uri=f"{base}/a") == []
    assert found(caller="ALICE@example.COM") == [0, 1, 3]
    assert found(resource_uri=f"{base}/m1", caller="bob") == [2]


def test_events_a_change_adds_are_logged_with_it_and_a_failed_change_logs_none(stores: Stores) -> None:
    store = stores.open()
    key = MachineKey(SUB, "rg", "m")
    filled: list[dict[str, Any]] = []

    def change(current: Any) -> Any:
        filled.append(_event(key, 1))  # a change may add its events as it decides
        return doc(key, n=1), "done"

    assert store.mutate_machine(key, change, events=filled) == "done"

    def broken(current: Any) -> Any:
        filled.append(_event(key, 2))
        raise RuntimeError("boom")

    failed: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError):
        store.mutate_machine(key, broken, events=failed)
    reopened = stores.open()
    assert [e["n"] for e in reopened.iter_events("2026-11-25", "2026-11-25")] == [1]
    assert reopened.get_machine(key)["machine"]["properties"] == {"n": 1}  # type: ignore[index]


def test_an_extension_scoped_change_writes_only_that_extension(stores: Stores) -> None:
    store = stores.open()
    key = MachineKey(SUB, "rg", "m")
    base = doc(key, n=1)
    base["extensions"] = {"a": {"resource": {"name": "A"}, "v": 1}, "b": {"resource": {"name": "B"}, "v": 1}}
    store.mutate_machine(key, lambda _old: (base, None))

    def bump_a(current: Any) -> Any:
        current["extensions"]["a"]["v"] = 2  # (the rest of the document is not the change's to touch)
        return current, current["extensions"]["a"]["v"]

    assert store.mutate_machine(key, bump_a, extension="a") == 2
    after = store.get_machine(key)
    assert after is not None
    assert after["extensions"]["a"]["v"] == 2 and after["extensions"]["b"]["v"] == 1
    assert after["machine"]["properties"] == {"n": 1}

    def unchanged(current: Any) -> Any:
        return current, None

    store.mutate_machine(key, unchanged, extension="absent")  # nothing there, nothing written
    assert "absent" not in store.get_machine(key)["extensions"]  # type: ignore[index]

    def add_c(current: Any) -> Any:
        current["extensions"]["c"] = {"resource": {"name": "C"}, "v": 3}
        return current, None

    def remove_b(current: Any) -> Any:
        del current["extensions"]["b"]
        return current, None

    store.mutate_machine(key, add_c, extension="c")
    store.mutate_machine(key, remove_b, extension="b")
    with pytest.raises(ValueError):
        store.mutate_machine(key, lambda _current: (None, None), extension="a")
    reopened = stores.open()
    assert sorted(reopened.get_machine(key)["extensions"]) == ["a", "c"]  # type: ignore[index]


def test_reads_views_scans_and_counts(stores: Stores) -> None:
    store = stores.open()
    keys = [MachineKey(SUB, f"rg{i % 3}", f"m{i}") for i in range(7)]
    for i, key in enumerate(keys):
        put(store, key, n=i)
    assert store.view_machine(MachineKey(SUB, "rg0", "absent"), lambda d: d is None) is True
    assert store.view_machine(keys[3], lambda d: d["machine"]["properties"]["n"] if d else None) == 3
    assert store.count_machines() == 7
    assert sorted(d["machine"]["properties"]["n"] for d in store.iter_machines()) == list(range(7))
    odd = store.project_machines(lambda d: d["machine"]["name"] if d["machine"]["properties"]["n"] % 2 else None)
    assert sorted(odd) == ["m1", "m3", "m5"]
    store.mutate_machine(keys[0], lambda _old: (None, None))
    assert store.count_machines() == 6 and store.get_machine(keys[0]) is None


def test_a_part_a_view_returned_is_never_changed_by_later_writes(stores: Stores) -> None:
    """``view_machine``'s promise (a GET serves the stored resource without a copy): a write replaces the
    document, or the one extension's record it changes, and never changes what a view already returned."""
    store = stores.open()
    key = MachineKey(SUB, "rg", "m")
    first = doc(key, n=1)
    first["extensions"] = {"a": {"resource": {"properties": {"v": "1.0"}, "tags": {"t": "1"}}}, "b": {"resource": {}}}
    store.mutate_machine(key, lambda _old: (first, None))
    held = store.view_machine(key, lambda d: (d["machine"], d["extensions"]["a"]["resource"]) if d else None)
    assert held is not None
    before = orjson.dumps(held)

    def change_a(d: Any) -> tuple[Any, None]:
        d["extensions"]["a"]["resource"]["properties"]["v"] = "2.0"
        d["extensions"]["a"]["resource"]["tags"]["t"] = "2"
        return d, None

    store.mutate_machine(key, change_a, extension="a")  # the job path: one extension's record

    def change_all(d: Any) -> tuple[Any, None]:
        d["machine"]["properties"]["n"] = 2
        d["extensions"]["a"]["resource"]["properties"]["v"] = "3.0"
        return d, None

    store.mutate_machine(key, change_all)
    assert orjson.dumps(held) == before
    now = store.get_machine(key)
    assert now is not None and now["extensions"]["a"]["resource"]["properties"]["v"] == "3.0"
    assert now["machine"]["properties"]["n"] == 2


def test_projection_over_machines_naming_operations(stores: Stores) -> None:
    """The orphan search's scan: only documents where the machine or an extension names an operation (a
    non-empty one) reach the projection, across more rows than one batch of the database's scan."""
    store = stores.open()
    keys = [MachineKey(SUB, "rg", f"m{i:04d}") for i in range(1203)]
    named = {7: "machine", 600: "extension", 1202: "both"}
    for i, key in enumerate(keys):
        record = doc(key, n=i)
        record["machine"]["operation"] = "op-m" if named.get(i) in ("machine", "both") else ("" if i == 8 else None)
        record["extensions"] = {
            "a": {"name": "a", "operation": "op-e" if named.get(i) in ("extension", "both") else None},
            "b": {"name": "b", "operation": ""},
        }
        store.mutate_machine(key, lambda _old, record=record: (record, None))
    seen = store.project_machines_naming_operations(lambda d: d["machine"]["name"])
    assert sorted(seen) == ["m0007", "m0600", "m1202"]
    kept = store.project_machines_naming_operations(
        lambda d: d["machine"]["name"] if d["machine"]["operation"] else None
    )
    assert sorted(kept) == ["m0007", "m1202"]


def test_view_machines_reads_many_machines_as_view_machine_reads_each(stores: Stores) -> None:
    """The batch read: each view on its own machine, in the order asked, absent machines seen as None, a
    key asked twice (or in another case) answered twice, and what changed since the last batch seen."""
    store = stores.open()
    keys = [MachineKey(SUB, f"rg{i % 3}", f"m{i}") for i in range(9)]
    for i, key in enumerate(keys):
        put(store, key, n=i)
    absent = MachineKey(SUB, "rg0", "absent")

    def n_of(doc: Any) -> int | None:
        return int(doc["machine"]["properties"]["n"]) if doc is not None else None

    asked = [keys[5], absent, keys[0], MachineKey(SUB.upper(), "RG2", "M8"), keys[5], keys[7]]
    views = [(key, n_of) for key in asked]
    assert store.view_machines(views) == [5, None, 0, 8, 5, 7]
    assert store.view_machines(views) == [store.view_machine(key, n_of) for key in asked]
    assert store.view_machines([(keys[1], lambda d: d is None), (keys[2], lambda d: d["machine"]["name"])]) == [
        False,
        "m2",
    ]
    assert store.view_machines([]) == []
    put(store, keys[5], n=50)
    store.mutate_machine(keys[0], lambda _old: (None, None))
    assert store.view_machines(views) == [50, None, None, 8, 50, 7]


def test_listing_pages_every_machine_once_in_case_insensitive_code_point_order(stores: Stores) -> None:
    """Names that sort differently under a language collation (case, '-', '_', ' ', digits, non-ASCII)."""
    store = stores.open()
    names = ["b-1", "B_2", "a b", "A-B", "aB", "a_b", "Z9", "z10", "émile", "Eve", "m0", "M00"]
    groups = ["rg-B", "rg_a", "RG-a"]
    for rg in groups:
        for name in names:
            put(store, MachineKey(SUB, rg, name))
    expected = sorted((rg.lower(), name.lower()) for rg in groups for name in names)
    seen: list[tuple[str, str]] = []
    token: str | None = None
    while True:
        page, token = store.list_machines(SUB, None, token, 5)
        seen += [(d["machine"]["id"].split("/")[4].lower(), d["machine"]["name"].lower()) for d in page]
        if token is None:
            break
    assert seen == expected
    in_group, end = store.list_machines(SUB, "RG-B", None, 100)
    assert [d["machine"]["name"].lower() for d in in_group] == sorted(n.lower() for n in names) and end is None
    assert store.list_machines("11111111-1111-1111-1111-111111111111", None, None, 10) == ([], None)


def test_operations_are_kept_listed_by_status_and_old_ended_ones_pruned(stores: Stores) -> None:
    store = stores.open()
    store.put_operation({"id": "op1", "status": "InProgress", "startTime": "2026-01-01T00:00:00Z"})
    store.put_operation({"id": "op2", "status": "Succeeded", "endTime": "2026-01-02T00:00:00Z"})
    store.put_operation({"id": "op3", "status": "Failed", "endTime": "2026-03-01T00:00:00Z"})
    store.put_operation({"id": "op1", "status": "InProgress", "startTime": "2026-01-01T00:00:00Z", "percent": 5})
    assert store.get_operation("op1") == {
        "id": "op1",
        "status": "InProgress",
        "startTime": "2026-01-01T00:00:00Z",
        "percent": 5,
    }
    assert store.get_operation("nope") is None
    assert [o["id"] for o in store.list_operations("InProgress")] == ["op1"]
    assert sorted(o["id"] for o in store.list_operations()) == ["op1", "op2", "op3"]
    assert store.delete_operations_before("2026-02-01T00:00:00Z") == 1
    assert sorted(o["id"] for o in stores.open().list_operations()) == ["op1", "op3"]


def test_the_catalog_is_keyed_case_insensitively(stores: Stores) -> None:
    store = stores.open()
    store.put_extension_type({"publisher": "Microsoft.Compute", "type": "CSE", "autoUpgradeSupported": False})
    store.put_extension_type({"publisher": "Contoso", "type": "Agent", "autoUpgradeSupported": True})
    store.put_extension_type({"publisher": "microsoft.compute", "type": "cse", "autoUpgradeSupported": True})
    found = store.get_extension_type("MICROSOFT.COMPUTE", "Cse")
    assert found == {"publisher": "microsoft.compute", "type": "cse", "autoUpgradeSupported": True}
    assert store.get_extension_type("Contoso", "Other") is None
    assert [t["publisher"] for t in store.list_extension_types()] == ["microsoft.compute", "Contoso"]
    for version in ["1.0", "1.1", "1.0"]:
        store.put_extension_version({"publisher": "Contoso", "type": "Agent", "version": version, "v": version})
    store.put_extension_version({"publisher": "Microsoft.Compute", "type": "CSE", "version": "9.9"})
    assert [v["version"] for v in stores.open().list_extension_versions("contoso", "AGENT")] == ["1.0", "1.1"]


def test_maintenance_records_are_kept_per_table_with_their_key(stores: Stores) -> None:
    store = stores.open()
    store.put_maintenance("configurations", "c1", {"name": "C1"})
    store.put_maintenance("configurations", "c2", {"name": "C2"})
    store.put_maintenance("assignments", "c1", {"name": "A1"})
    store.put_maintenance("configurations", "c1", {"name": "C1b"})
    assert store.list_maintenance("configurations") == [{"name": "C1b", "key": "c1"}, {"name": "C2", "key": "c2"}]
    assert store.delete_maintenance("configurations", "c2") and not store.delete_maintenance("configurations", "c2")
    reopened = stores.open()
    assert reopened.list_maintenance("configurations") == [{"name": "C1b", "key": "c1"}]
    assert reopened.list_maintenance("assignments") == [{"name": "A1", "key": "c1"}]


def _rollout(rollout_id: str, state: str) -> dict[str, Any]:
    return {
        "id": rollout_id,
        "state": state,
        "waves": [
            {"index": 0, "batches": [{"index": 0, "targets": [["k1", "ext"]]}, {"index": 1, "targets": []}]},
            {"index": 1, "batches": [{"index": 0, "targets": [["k2", "ext"], ["k3", "ext"]]}]},
        ],
    }


def test_rollouts_keep_their_plan_and_every_state_and_observers_hear_of_each(stores: Stores) -> None:
    store = stores.open()
    assert isinstance(store, ObservableStore)
    heard: list[str] = []
    store.rollout_listener = lambda rollout: heard.append(rollout["state"])
    store.put_rollout(_rollout("r1", "Active"))
    store.put_rollout(_rollout("r2", "Active"))
    store.put_rollout(_rollout("r1", "Paused"))
    assert heard == ["Active", "Active", "Paused"]
    reopened = stores.open()
    assert reopened.get_rollout("r1") == _rollout("r1", "Paused")
    assert reopened.get_rollout("nope") is None
    assert sorted((r["id"], r["state"]) for r in reopened.list_rollouts()) == [("r1", "Paused"), ("r2", "Active")]


def test_the_activity_log_by_day_and_field_oldest_first_and_pruned_by_day(stores: Stores) -> None:
    store = stores.open()
    assert isinstance(store, ObservableStore)
    heard: list[list[str]] = []
    store.set_event_listener(lambda events: heard.append([e["eventDataId"] for e in events]))
    key = MachineKey(SUB, "rg", "m")

    def event(n: int, day: str, **fields: Any) -> dict[str, Any]:
        return {"eventDataId": f"e{n}", "eventTimestamp": f"{day}T0{n % 10}:00:00.000000Z", "n": n, **fields}

    store.append_events([event(1, "2026-11-24", operationId="op-a"), event(2, "2026-11-25", operationId="op-b")])
    store.mutate_machine(
        key,
        lambda _old: (doc(key), None),
        events=[event(3, "2026-11-25", operationId="op-a", caller="x"), event(4, "2026-11-27", level=7)],
    )
    store.append_events([event(5, "2026-11-25", operationId="op-a", caller="y")])
    assert heard == [["e1", "e2"], ["e3", "e4"], ["e5"]]
    assert [e["n"] for e in store.iter_events("2026-11-01", "2026-11-30")] == [1, 2, 3, 5, 4]
    assert [e["n"] for e in store.iter_events("2026-11-25", "2026-11-25")] == [2, 3, 5]
    assert [e["n"] for e in store.iter_events("2026-11-24", "9999-12-31", ("operationId", "op-a"))] == [1, 3, 5]
    assert [e["n"] for e in store.iter_events("2026-11-24", "9999-12-31", ("caller", "y"))] == [5]
    assert [e["n"] for e in store.iter_events("2026-11-24", "9999-12-31", ("n", "3"))] == []  # 3, not "3"
    assert store.prune_events_before("2026-11-25") == 1
    assert [e["n"] for e in stores.open().iter_events("2026-11-01", "2026-11-30")] == [2, 3, 5, 4]


def test_clear_forgets_everything_but_tokens_unless_told(stores: Stores) -> None:
    store = stores.open()
    key = MachineKey(SUB, "rg", "m")
    put(store, key)
    store.put_operation({"id": "op", "status": "Succeeded"})
    store.put_extension_type({"publisher": "p", "type": "t"})
    store.put_extension_version({"publisher": "p", "type": "t", "version": "1"})
    store.put_maintenance("configurations", "c", {})
    store.put_rollout(_rollout("r", "Active"))
    store.append_events([_event(key, 1)])
    store.put_token({"id": "t1", "hash": "h1", "name": "n", "role": "Reader", "scope": "/", "createdAt": "x"})
    store.clear()
    assert store.count_machines() == 0 and store.get_machine(key) is None
    assert store.list_operations() == [] and store.list_extension_types() == []
    assert store.list_extension_versions("p", "t") == [] and store.list_maintenance("configurations") == []
    assert store.list_rollouts() == [] and list(store.iter_events("2000-01-01", "9999-12-31")) == []
    assert store.get_token_by_hash("h1") is not None
    put(store, key)  # usable after clearing, the activity log included
    store.append_events([_event(key, 2)])
    assert [e["n"] for e in store.iter_events("2026-11-25", "2026-11-25")] == [2]
    store.clear(keep_tokens=False)
    assert store.list_tokens() == [] and store.get_token_by_hash("h1") is None


# --- the embedded store only: journal, checkpoints, snapshot files, group commit ------------------------------


def test_leftover_temp_files_are_discarded_at_start(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path)
    key = MachineKey(SUB, "rg", "m")
    put(store, key, n=1)
    store.close()
    assert [p.name for p in (tmp_path / "machines").iterdir()] == [f"{shard_of(key.lower)}.json"]
    stray = tmp_path / "machines" / "ab.json.123.456.tmp"
    stray.write_text("{half a write")
    reopened = TinyDBStore(tmp_path)
    assert not stray.exists()
    assert reopened.get_machine(key)["machine"]["properties"] == {"n": 1}  # type: ignore[index]


def test_journal_replays_changes_that_no_checkpoint_covered(tmp_path: Path) -> None:
    """A crash (no close, no checkpoint) loses nothing acknowledged; a torn last line is ignored."""
    store = TinyDBStore(tmp_path)
    a, b = MachineKey(SUB, "rg", "a"), MachineKey(SUB, "rg", "b")
    put(store, a, n=1)
    put(store, b, n=2)
    store.mutate_machine(b, lambda _old: (None, None))
    put(store, a, n=3)
    assert not any((tmp_path / "machines").rglob("*.json")), "nothing checkpointed yet: all in the journal"
    (segment,) = sorted((tmp_path / "journal").glob("*.log"))
    with open(segment, "ab") as fh:
        fh.write(b'{"k": "torn')  # a write cut by the crash, never acknowledged
    reopened = TinyDBStore(tmp_path)
    assert reopened.get_machine(a)["machine"]["properties"] == {"n": 3}  # type: ignore[index]
    assert reopened.get_machine(b) is None
    assert reopened.count_machines() == 1


def test_checkpoint_moves_changes_into_snapshots_and_drops_the_journal(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path)
    keys = [MachineKey(SUB, "rg", f"m{i}") for i in range(5)]
    for i, key in enumerate(keys):
        put(store, key, n=i)
    store.mutate_machine(keys[0], lambda _old: (None, None))
    assert store.checkpoint() == 5
    shards = sorted((tmp_path / "machines").glob("*.json"))
    assert [p.name for p in shards] == sorted({f"{shard_of(k.lower)}.json" for k in keys[1:]})
    stored = [d["key"] for p in shards for d in orjson.loads(p.read_bytes())["machines"].values()]
    assert sorted(stored) == sorted(k.lower for k in keys[1:])  # TinyDB layout: {"machines": {id: doc}}
    assert all(p.stat().st_size == 0 for p in (tmp_path / "journal").glob("*.log"))
    put(store, keys[1], n=10)  # after the checkpoint: journal only
    reopened = TinyDBStore(tmp_path)
    assert reopened.count_machines() == 4
    assert reopened.get_machine(keys[1])["machine"]["properties"] == {"n": 10}  # type: ignore[index]
    assert reopened.get_machine(keys[4])["machine"]["properties"] == {"n": 4}  # type: ignore[index]
    reopened.close()
    assert TinyDBStore(tmp_path).get_machine(keys[1])["machine"]["properties"] == {"n": 10}  # type: ignore[index]


def test_events_of_a_change_are_restored_from_the_journal_when_the_log_lost_them(tmp_path: Path) -> None:
    """Events handed in with a change are durable with it: a crash that lost the activity log's unsynced
    tail puts them back from the journal at start, once each."""
    store = TinyDBStore(tmp_path)
    key = MachineKey(SUB, "rg", "m")
    store.mutate_machine(key, lambda _old: (doc(key, n=1), None), events=[_event(key, 1)])
    filled: list[dict[str, Any]] = []

    def change(current: Any) -> Any:
        current["machine"]["properties"]["n"] = 2
        filled.append(_event(key, 2))  # a change may add its events as it decides
        return current, None

    store.mutate_machine(key, change, events=filled)
    assert [e["n"] for e in store.iter_events("2026-11-25", "2026-11-25")] == [1, 2]
    for log_file in (tmp_path / "activity").glob("*.jsonl"):
        log_file.write_bytes(b"")  # the crash: the log's writes never reached the disk
    reopened = TinyDBStore(tmp_path)
    assert reopened.get_machine(key)["machine"]["properties"] == {"n": 2}  # type: ignore[index]
    assert [e["n"] for e in reopened.iter_events("2026-11-25", "2026-11-25")] == [1, 2]
    reopened.close()
    again = TinyDBStore(tmp_path)  # restoring twice adds nothing twice
    assert [e["n"] for e in again.iter_events("2026-11-25", "2026-11-25")] == [1, 2]


def test_a_checkpoint_syncs_the_events_before_dropping_the_journal_that_carried_them(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path)
    key = MachineKey(SUB, "rg", "m")
    store.mutate_machine(key, lambda _old: (doc(key, n=1), None), events=[_event(key, 1)])
    assert store.checkpoint() == 1
    assert all(p.stat().st_size == 0 for p in (tmp_path / "journal").glob("*.log"))
    (log_file,) = (tmp_path / "activity").glob("*.jsonl")
    assert b'"event-1"' in log_file.read_bytes()  # on disk, not only in memory
    assert [e["n"] for e in TinyDBStore(tmp_path).iter_events("2026-11-25", "2026-11-25")] == [1]


def test_group_commit_writes_unwaited_appends_in_order_and_soon(tmp_path: Path) -> None:
    """Unwaited appends are buffered: they reach the file ahead of the next waited one, and on their own
    within ``lazy_seconds``."""
    path = tmp_path / "log"
    writer = GroupCommitFile(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    writer.lazy_seconds = 0.05
    try:
        writer.append(b"a\n", wait=False)
        writer.append(b"b\n", wait=False)
        writer.append(b"c\n")  # returns once a, b and c are on disk, in that order
        assert path.read_bytes() == b"a\nb\nc\n"
        writer.append(b"d\n", wait=False)
        deadline = time.monotonic() + 5
        while path.read_bytes() != b"a\nb\nc\nd\n" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert path.read_bytes() == b"a\nb\nc\nd\n"
        writer.append(b"e\n", wait=False)
    finally:
        writer.close()
        os.close(writer.swap(-1))
    assert path.read_bytes() == b"a\nb\nc\nd\ne\n"  # close writes what is still buffered


def test_snapshots_of_the_first_layout_are_read_and_moved_into_shards(tmp_path: Path) -> None:
    """Data directories written before shard files (one TinyDB file per machine) open unchanged."""
    keys = [MachineKey(SUB, "rg", f"old{i}") for i in range(3)]
    for i, key in enumerate(keys):
        digest = hashlib.sha1(key.lower.encode()).hexdigest()
        folder = tmp_path / "machines" / digest[:2]
        folder.mkdir(parents=True, exist_ok=True)
        legacy = {
            "machine": {"1": doc(key, n=i)["machine"]},
            "extensions": {"1": {"key": "ext", "record": {"resource": {"name": "ext"}, "n": i}}},
        }
        (folder / f"{digest}.json").write_bytes(orjson.dumps(legacy))
    store = TinyDBStore(tmp_path)
    assert [store.get_machine(k)["extensions"]["ext"]["n"] for k in keys] == [0, 1, 2]  # type: ignore[index]
    assert store.checkpoint() == 3
    assert not [p for p in (tmp_path / "machines").iterdir() if p.is_dir()], "first-layout folders removed"
    store.close()
    reopened = TinyDBStore(tmp_path)
    assert [reopened.get_machine(k)["machine"]["properties"] for k in keys] == [{"n": 0}, {"n": 1}, {"n": 2}]  # type: ignore[index]


def test_a_torn_last_event_line_is_cut_off_so_later_appends_stay_readable(tmp_path: Path) -> None:
    """A crash can leave the day's log ending in half a line; the next append must not continue it."""
    key = MachineKey(SUB, "rg", "m")
    store = TinyDBStore(tmp_path)
    store.append_events([_event(key, 1)])
    store.close()
    (log_file,) = (tmp_path / "activity").glob("*.jsonl")
    with open(log_file, "ab") as fh:
        fh.write(orjson.dumps(_event(key, 2))[:25])  # the crash tore the second event
    reopened = TinyDBStore(tmp_path)
    assert [e["n"] for e in reopened.iter_events("2026-11-25", "2026-11-25")] == [1]
    reopened.append_events([_event(key, 3)])
    reopened.close()
    again = TinyDBStore(tmp_path)
    assert [e["n"] for e in again.iter_events("2026-11-25", "2026-11-25")] == [1, 3]


def test_events_of_a_change_whose_journal_write_failed_are_not_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log gets a change's events only once the journal holds the change: an event logged first could
    outlive a journal write that failed or never reached the disk (a Started with no Running job)."""
    store = TinyDBStore(tmp_path)
    key = MachineKey(SUB, "rg", "m")

    def failing_append(record: dict[str, Any]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.machines.journal, "append", failing_append)
    with pytest.raises(OSError):
        store.mutate_machine(key, lambda _old: (doc(key, n=1), None), events=[_event(key, 1)])
    assert list(store.iter_events("2026-11-25", "2026-11-25")) == []
    assert store.get_machine(key) is None


def _keys_in_two_shards() -> tuple[MachineKey, MachineKey]:
    first = MachineKey(SUB, "rg", "a0")
    for i in range(1, 100):
        other = MachineKey(SUB, "rg", f"b{i}")
        if shard_of(other.lower) != shard_of(first.lower):
            return first, other
    raise AssertionError("no second shard")


def test_a_failed_checkpoint_leaves_its_machines_for_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint that fails after taking the changed set must give it back: the next checkpoint drops
    every old journal segment, including the records of the machines the failed one did not write."""
    from arcext.store import machines

    store = TinyDBStore(tmp_path)
    a, b = _keys_in_two_shards()
    put(store, a, n=1)
    real_write = machines.atomic_write_bytes
    failures = [OSError(28, "No space left on device")]

    def write(path: Any, payload: bytes, sync: bool = True) -> None:
        if failures:
            raise failures.pop()
        real_write(path, payload, sync)

    monkeypatch.setattr(machines, "atomic_write_bytes", write)
    with pytest.raises(OSError):
        store.checkpoint()
    put(store, b, n=2)
    assert store.checkpoint() == 2
    crashed = TinyDBStore(tmp_path)  # no close: what is on disk now is all a restart has
    assert crashed.get_machine(a)["machine"]["properties"] == {"n": 1}  # type: ignore[index]
    assert crashed.get_machine(b)["machine"]["properties"] == {"n": 2}  # type: ignore[index]


def test_a_machine_deleted_before_the_migrating_checkpoint_stays_deleted_after_a_crash_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First-layout files are removed before the journal segments: a crash between the two must not bring
    back a machine that was deleted (its shard no longer holds it; only the journal says it is gone)."""
    key = MachineKey(SUB, "rg", "old")
    digest = hashlib.sha1(key.lower.encode()).hexdigest()
    folder = tmp_path / "machines" / digest[:2]
    folder.mkdir(parents=True)
    legacy = {"machine": {"1": doc(key, n=1)["machine"]}, "extensions": {}}
    (folder / f"{digest}.json").write_bytes(orjson.dumps(legacy))
    store = TinyDBStore(tmp_path)
    assert store.get_machine(key) is not None
    store.mutate_machine(key, lambda _old: (None, None))

    def crash() -> None:
        raise SystemExit("crash")

    monkeypatch.setattr(store.machines, "_remove_legacy_files", crash)
    with pytest.raises(SystemExit):
        store.checkpoint()
    assert TinyDBStore(tmp_path).get_machine(key) is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_new_uuid_works_in_a_child_forked_while_another_thread_held_the_pool(tmp_path: Path) -> None:
    """The pooled random bytes behind event and operation ids: a fork while a thread was taking some
    (its lock held) must not leave the child's pool locked forever."""
    from arcext import ids

    taken = (tmp_path / "child").as_posix()
    ids.new_uuid()
    with ids._random_pool._lock:  # another thread in the middle of take16() at the moment of the fork
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                Path(taken).write_text(ids.new_uuid())
            finally:
                os._exit(0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child blocked on the random pool's lock")
    assert len(Path(taken).read_text()) == 36
