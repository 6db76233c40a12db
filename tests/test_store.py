"""The embedded TinyDB store: atomic changes, persistence across reopen, ordering and paging."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from arcext.ids import MachineKey
from arcext.store import TinyDBStore
from arcext.store.groupcommit import GroupCommitFile
from arcext.store.machines import shard_of

SUB = "00000000-0000-0000-0000-000000000000"


def doc(key: MachineKey, **props: Any) -> dict[str, Any]:
    return {"machine": {"id": key.id, "name": key.name, "location": "eastus", "properties": props}, "extensions": {}}


def put(store: TinyDBStore, key: MachineKey, **props: Any) -> None:
    store.mutate_machine(key, lambda _old: (doc(key, **props), None))


def test_changes_survive_reopen_and_deletes_stick(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path)
    a, b = MachineKey(SUB, "rg", "A"), MachineKey(SUB, "rg", "b")
    put(store, a, n=1)
    put(store, b, n=2)
    store.mutate_machine(b, lambda _old: (None, None))
    store.close()
    reopened = TinyDBStore(tmp_path)
    assert reopened.get_machine(MachineKey(SUB, "RG", "a"))["machine"]["properties"] == {"n": 1}  # type: ignore[index]
    assert reopened.get_machine(b) is None
    assert reopened.count_machines() == 1


def test_a_failing_change_leaves_the_document_untouched(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path)
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


def test_concurrent_increments_are_not_lost(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path)
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
    assert TinyDBStore(tmp_path).get_machine(key)["machine"]["properties"]["n"] == 100  # type: ignore[index]


def test_listing_orders_by_group_then_name_and_pages(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path)
    for rg, name in [("b", "z"), ("a", "y"), ("a", "X"), ("c", "w")]:
        put(store, MachineKey(SUB, rg, name))
    put(store, MachineKey("11111111-1111-1111-1111-111111111111", "a", "other"))
    first, token = store.list_machines(SUB, None, None, 2)
    assert [d["machine"]["name"] for d in first] == ["X", "y"] and token is not None
    rest, end = store.list_machines(SUB, None, token, 10)
    assert [d["machine"]["name"] for d in rest] == ["z", "w"] and end is None
    in_a, _ = store.list_machines(SUB, "A", None, 10)
    assert [d["machine"]["name"] for d in in_a] == ["X", "y"]


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


def test_tokens_written_by_another_process_are_seen(tmp_path: Path) -> None:
    server_view = TinyDBStore(tmp_path)
    cli_view = TinyDBStore(tmp_path, tokens_only=True)
    cli_view.put_token({"id": "t1", "hash": "h1", "name": "n", "role": "Reader", "scope": "/", "createdAt": "x"})
    assert server_view.get_token_by_hash("h1") is not None
    cli_view.delete_token("t1")
    assert server_view.get_token_by_hash("h1") is None


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


def test_concurrent_writers_share_fsyncs_and_lose_nothing(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path)
    keys = [MachineKey(SUB, "rg", f"m{i}") for i in range(32)]

    def writer(key: MachineKey) -> None:
        for n in range(20):
            put(store, key, n=n)

    threads = [threading.Thread(target=writer, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reopened = TinyDBStore(tmp_path)  # replay only: no checkpoint ran
    assert all(reopened.get_machine(k)["machine"]["properties"] == {"n": 19} for k in keys)  # type: ignore[index]


def _event(key: MachineKey, n: int) -> dict[str, Any]:
    return {"eventDataId": f"event-{n}", "eventTimestamp": "2026-11-25T03:00:00.000000Z", "resourceId": key.id, "n": n}


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


def test_events_of_a_change_that_changed_nothing_are_still_recorded(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path)
    key = MachineKey(SUB, "rg", "absent")
    store.mutate_machine(key, lambda current: (current, None), events=[_event(key, 7)])
    assert [e["n"] for e in TinyDBStore(tmp_path).iter_events("2026-11-25", "2026-11-25")] == [7]


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
