"""The leader's side of the multi-node engine: what it reads and writes per job, on a scratch PostgreSQL database.

In process, a real node (services with ``--database``, simulated hosts, a manual clock): one pass of the
scheduler that starts a wave and dispatches its targets reads each machine once; jobs are queued in the
order they were dispatched, with their wave templates, as one statement; and the rollout still completes
with the figures it always had.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from arcext.cluster import extension_reads
from arcext.cluster.engine import ClusterEngine
from arcext.cluster.node import ClusterNode, Job
from arcext.cluster.schema import migrate_cluster
from arcext.cluster.settings import ClusterSettings
from arcext.cluster.wire import jobs_to_json
from arcext.ids import MachineKey
from arcext.records import UpgradeJob
from arcext.services import Services
from arcext.store.base import MachineDoc
from arcext.store.postgres.db import Database
from arcext.store.postgres.machines import MachineTable
from arcext.upgrades.settings import EngineSettings
from arcext.upgrades.targets import booking_look, outcome_of
from pgdb import fresh_database

SUB = "00000000-0000-0000-0000-0000000000a7"
PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
PROPS = {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.22.0", "enableAutomaticUpgrade": True}
MACHINE = {"location": "eastus", "properties": {"osName": "windows", "osType": "windows"}}
PRINCIPAL = "leader@example.com"
MACHINES = 8


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    opened = Services.open(
        tmp_path,
        manual_clock=True,
        simulate=True,
        engine_settings=EngineSettings(
            concurrency=4, tick_seconds=3600.0, standard_window=timedelta(0), critical_window=timedelta(0)
        ),
        database_url=fresh_database(),
    )
    yield opened
    opened.close()


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def leading(services: Services) -> ClusterEngine:
    engine = services.engine
    assert isinstance(engine, ClusterEngine)
    engine.start(background=False)
    wait_for(lambda: engine.node.leading)
    return engine


def fleet(services: Services) -> list[MachineKey]:
    keys = [MachineKey(SUB, "rg-leader", f"m-{i}") for i in range(MACHINES)]
    for key in keys:
        services.resources.put_machine(key, MACHINE, PRINCIPAL)
        op = services.resources.put_extension(key, "ama", {"location": "eastus", "properties": PROPS}, PRINCIPAL)
        services.resources.complete_operation(op["id"])
    return keys


class ReadCounter:
    """The machine documents a thread reads (MachineTable.get and get_many), per machine: this thread's, or
    those of the threads named ``thread_name``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, thread_name: str | None = None) -> None:
        self.reads: Counter[str] = Counter()
        self.thread = threading.get_ident()
        self.thread_name = thread_name
        get, get_many = MachineTable.get, MachineTable.get_many

        def counted_get(table: MachineTable, key: MachineKey) -> MachineDoc | None:
            self._count([key])
            return get(table, key)

        def counted_get_many(
            table: MachineTable, keys: Iterable[MachineKey], chunk: int = 1000
        ) -> dict[str, MachineDoc | None]:
            wanted = list(keys)
            self._count(wanted)
            return get_many(table, wanted, chunk)

        monkeypatch.setattr(MachineTable, "get", counted_get)
        monkeypatch.setattr(MachineTable, "get_many", counted_get_many)

    def _count(self, keys: list[MachineKey]) -> None:
        if self.thread_name is not None:
            counted = threading.current_thread().name == self.thread_name
        else:
            counted = threading.get_ident() == self.thread
        if counted:
            self.reads.update(key.lower for key in keys)


def test_a_pass_that_starts_a_wave_and_dispatches_it_reads_each_machine_once(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = leading(services)
    keys = fleet(services)
    record, created = services.catalog.publish_version(PUB, TYPE, "1.23.0", False, services.clock.now())
    assert created
    rollout = engine.on_version_published(record)
    assert rollout is not None and rollout["eligible"] == MACHINES
    counter = ReadCounter(monkeypatch)
    dispatched = engine.advance()
    assert dispatched > 0
    assert counter.reads, "the wave's start read its targets"
    assert max(counter.reads.values()) == 1, f"a machine read twice in one pass: {counter.reads.most_common(3)}"
    summary = engine.run_until_idle()
    assert summary["rollouts"][0]["state"] == "Completed"
    waves = engine._rollouts[rollout["id"]]["waves"]
    counts = [(b["succeeded"], b["failed"], b["skipped"]) for w in waves for b in w["batches"]]
    assert sum(s for s, _, _ in counts) == MACHINES and not any(f or k for _, f, k in counts)
    for key in keys:
        doc = services.store.get_machine(key)
        assert doc is not None
        assert doc["extensions"]["ama"]["resource"]["properties"]["typeHandlerVersion"] == "1.23.0"


def test_a_rollout_reads_each_machine_once_and_books_its_results_without_reading_machines(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader reads a target's machine when its wave starts (and dispatches it); a job's end is booked from
    its extension's record and a wave's completion from its targets' outcomes, neither from machine documents."""
    engine = leading(services)
    keys = fleet(services)
    record, _ = services.catalog.publish_version(PUB, TYPE, "1.23.0", False, services.clock.now())
    rollout = engine.on_version_published(record)
    assert rollout is not None and len(rollout["waves"]) > 1
    scheduler = ReadCounter(monkeypatch)
    results = ReadCounter(monkeypatch, thread_name="arcext-cluster-results")
    summary = engine.run_until_idle()
    assert summary["rollouts"][0]["state"] == "Completed" and summary["succeeded"] == MACHINES
    assert scheduler.reads == Counter({key.lower: 1 for key in keys})
    assert not results.reads
    waves = engine._rollouts[rollout["id"]]["waves"]
    assert sum(b["succeeded"] for w in waves for b in w["batches"]) == MACHINES


def test_a_write_in_the_pass_makes_the_next_look_read_the_machine_again(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target with an older version's job waiting: the wave's start supersedes it (a write), and the
    dispatch of that target reads its machine again (it sees the new job, not the one read before)."""
    engine = leading(services)
    keys = fleet(services)
    newer, _ = services.catalog.publish_version(PUB, TYPE, "1.23.0", False, services.clock.now())
    rollout = engine.on_version_published(newer)
    assert rollout is not None
    first = rollout["waves"][0]["batches"][0]["targets"][0]
    target = MachineKey(first[0], first[1], first[2])
    # an older version's job waits on a target of the first wave (say a retry), due later
    job: UpgradeJob = {"toVersion": "1.22.5", "rolloutId": "older", "correlationId": "older", "caller": None}
    job.update({"critical": False, "wave": None, "retry": True, "firstAttemptDone": True})
    later = services.clock.now() + timedelta(days=1)
    assert engine._queue_job(target, "ama", job, services.clock.now(), automatic=True, due=later.isoformat())
    counter = ReadCounter(monkeypatch)
    assert engine.advance() > 0
    assert counter.reads[target.lower] == 2, "read by the wave's start, and again after its write"
    assert all(counter.reads[k.lower] <= 1 for k in keys if k.lower != target.lower)
    summary = engine.run_until_idle()
    assert summary["rollouts"][0]["state"] == "Completed"
    doc = services.store.get_machine(target)
    assert doc is not None
    record = doc["extensions"]["ama"]
    assert record["resource"]["properties"]["typeHandlerVersion"] == "1.23.0"
    assert record["outcomes"][rollout["id"]] == "Succeeded", "the wave's own job ran, the older one never did"


def test_jobs_are_queued_in_their_order_with_their_templates() -> None:
    pg_url = fresh_database()
    db = Database(pg_url, max_size=2)
    try:
        with db.connection() as conn:
            migrate_cluster(conn)
        template: UpgradeJob = {"toVersion": "1.23.0", "rolloutId": "r1", "correlationId": "r1", "wave": 2}
        names = ["m-c", "m-a", "m-d", "m-b"]
        jobs: list[Job] = [
            (MachineKey(SUB, "RG-1", names[0]), "ama", False, template),
            (MachineKey(SUB, "RG-1", names[1]), "ama", True, None),
            (MachineKey(SUB, "RG-1", names[2]), "mde", False, {}),  # (an empty template is none)
            (MachineKey(SUB, "RG-1", names[3]), "ama", False, template),
        ]
        assert jobs_to_json(jobs)[1] == [SUB, "RG-1", "m-a", "ama", True, None]
        node = ClusterNode(pg_url, db, _Nothing(), ClusterSettings(), workers=1)  # not started: nothing claims
        node.enqueue(jobs)
        node.enqueue(jobs[:1])  # queued once however often
        with db.connection() as conn:
            rows = conn.execute(
                "SELECT subscription, resource_group, name, ext, resume, template FROM engine_jobs ORDER BY id"
            ).fetchall()
        assert rows == [
            (SUB, "RG-1", "m-c", "ama", False, template),
            (SUB, "RG-1", "m-a", "ama", True, None),
            (SUB, "RG-1", "m-d", "mde", False, None),
            (SUB, "RG-1", "m-b", "ama", False, template),
        ]
    finally:
        db.close()


class _Nothing:
    """An engine for a node that is never started: nothing is asked of it."""

    def execute_call(self, method: str, args: list[Any]) -> Any:
        raise AssertionError(f"the node asked its engine to run {method}")


def test_projected_reads_answer_as_the_whole_documents_do(services: Services) -> None:
    """``extension_reads``: the outcomes and the single-extension documents read in the database give what the
    same looks give on the whole documents (a machine missing, an extension missing, no outcome yet)."""
    keys = fleet(services)
    rollout_id = "r-projected"

    def remember(doc: MachineDoc | None, outcome: str) -> tuple[MachineDoc | None, None]:
        assert doc is not None
        doc["extensions"]["ama"].setdefault("outcomes", {})[rollout_id] = outcome
        return doc, None

    services.store.mutate_machine(keys[0], partial(remember, outcome="Succeeded"), extension="ama")
    services.store.mutate_machine(keys[1], partial(remember, outcome="RolledBack"), extension="ama")
    missing = MachineKey(SUB, "rg-leader", "m-missing")
    shouting = MachineKey(SUB.upper(), "RG-LEADER", "M-0")  # keys[0], in another case, without that extension
    targets = [(keys[1], "ama"), (keys[0], "ama"), (missing, "ama"), (keys[2], "ama"), (shouting, "mde")]
    store = services.store
    db = services.engine.node.db  # type: ignore[attr-defined]
    whole = [store.view_machine(key, partial(outcome_of, ext=ext, rollout_id=rollout_id)) for key, ext in targets]
    assert whole == ["RolledBack", "Succeeded", None, None, None]
    assert extension_reads.outcomes(db, rollout_id, targets) == whole
    looks = [partial(booking_look, ext=ext, newest={}, rollout_ids=[rollout_id, "other"]) for _, ext in targets]
    projected = extension_reads.records(db, targets)
    assert projected[2] is None and projected[4] == {"extensions": {}}
    assert [look(doc) for look, doc in zip(looks, projected, strict=True)] == [
        store.view_machine(key, look) for (key, _), look in zip(targets, looks, strict=True)
    ]
    record = store.view_machine(keys[0], lambda doc: doc["extensions"]["ama"] if doc else None)
    assert projected[1] == {"extensions": {"ama": record}}
