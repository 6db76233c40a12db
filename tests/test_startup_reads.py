"""A server's start-up reads the fleet once: the upgrade engine's recovery and the resources' search for writes
a crash left in flight share one scan of the machines, and the rollouts are read once, on either store.
(On PostgreSQL the node leads at once, so it recovers within ``start``; scripts/bench_startup.py times it.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from arcext.clock import SystemClock
from arcext.crypto import SecretBox
from arcext.ids import MachineKey
from arcext.resources import ResourceService
from arcext.services import Services
from arcext.store.base import MachineDoc
from arcext.store.factory import open_store
from arcext.store.tinydb_store import TinyDBStore
from pgdb import fresh_database

SUB = "00000000-0000-0000-0000-0000000057a7"
AMA = {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorWindowsAgent", "typeHandlerVersion": "1.0.0"}


@pytest.fixture(params=["embedded", "postgres"])
def database(request: pytest.FixtureRequest) -> str | None:
    return fresh_database() if request.param == "postgres" else None


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How often any store scanned the machines and listed the rollouts (every store class counted)."""
    from arcext.cluster.rollout_mirror import RolloutMirror
    from arcext.store.postgres.store import PostgresStore

    counts = {"scans": 0, "list_rollouts": 0, "rollout_fetches": 0}

    def counting(cls: type, name: str, key: str) -> None:
        original: Callable[..., Any] = getattr(cls, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts[key] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    for cls in (TinyDBStore, PostgresStore):
        counting(cls, "project_machines", "scans")
        counting(cls, "list_rollouts", "list_rollouts")
    original_read = RolloutMirror.read

    def mirror_read(self: RolloutMirror) -> Any:
        before = self.fetched
        try:
            return original_read(self)
        finally:
            counts["rollout_fetches"] += self.fetched - before

    monkeypatch.setattr(RolloutMirror, "read", mirror_read)
    yield counts


def build(data_dir: Path, database: str | None) -> None:
    """Two machines with the agent, one rollout planned over them, and a write a crash left in flight on m2:
    its extension names an operation no record describes."""
    store = open_store(data_dir, database)
    service = ResourceService(store, SecretBox.from_data_dir(data_dir), SystemClock())
    for m in ("m1", "m2"):
        key = MachineKey(SUB, "rg1", m)
        service.put_machine(key, {"location": "eastus"}, "tester")
        op = service.put_extension(key, "ama", {"location": "eastus", "properties": dict(AMA)}, "tester")
        service.complete_operation(op["id"])

    def orphan(doc: MachineDoc | None) -> tuple[MachineDoc | None, None]:
        assert doc is not None
        record = doc["extensions"]["ama"]
        record["operation"] = "op-orphan"
        record["resource"]["properties"]["provisioningState"] = "Updating"
        return doc, None

    store.mutate_machine(MachineKey(SUB, "rg1", "m2"), orphan, extension="ama")
    store.close()
    services = Services.open(data_dir, manual_clock=True, database_url=database)
    services.start()
    version, _ = services.catalog.publish_version(AMA["publisher"], AMA["type"], "1.1.0", False, services.clock.now())
    assert services.engine.on_version_published(version) is not None
    services.close()


def test_start_up_scans_the_machines_once_and_reads_the_rollouts_once(
    tmp_path: Path, database: str | None, counted: dict[str, int]
) -> None:
    build(tmp_path, database)
    for key in counted:
        counted[key] = 0
    services = Services.open(tmp_path, manual_clock=True, database_url=database)
    try:
        services.start()
        leading = getattr(services.engine, "node", None)
        assert leading is None or leading.leading, "the only node leads once started (it recovered in start)"
        assert counted["scans"] == 1, counted
        # the rollouts: one list on the embedded store; on PostgreSQL the rollout mirror fetched each once
        assert counted["list_rollouts"] + counted["rollout_fetches"] == 1, counted
        assert [r["version"] for r in services.engine.rollout_records()] == ["1.1.0"]
        assert services.store.get_operation("op-orphan") is not None, "the in-flight write has its record back"
    finally:
        services.close()
