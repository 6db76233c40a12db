"""A poison job (its run takes down every node that claims it) is given up after ``MAX_CLAIMS`` claims.

In process, on a scratch PostgreSQL database: a real node (services with ``--database`` and the simulated fleet)
finds a job that three nodes claimed and never finished (``claims`` = 3, its lease expired, its record left
Running with its Started event, as a node killed mid-upgrade leaves it). The node's fourth claim does not run it
again: the extension ends Failed with an error that says why, out of automatic upgrade until it is updated,
the attempt's end event is logged, the host is not touched, and the job's row is gone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from arcext.cluster.engine import ClusterEngine
from arcext.cluster.node import MAX_CLAIMS
from arcext.ids import MachineKey, new_uuid
from arcext.records import UpgradeJob
from arcext.services import Services
from arcext.upgrades.jobs import JobResult
from arcext.upgrades.settings import EngineSettings
from pgdb import fresh_database

KEY = MachineKey("00000000-0000-0000-0000-0000000000p1", "rg-poison", "m-poison")
EXT = "ama"
PROPS = {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorWindowsAgent", "typeHandlerVersion": "1.22.0"}
MACHINE = {"location": "eastus", "properties": {"osName": "windows", "osType": "windows"}}


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    opened = Services.open(
        tmp_path,
        manual_clock=True,
        simulate=True,
        engine_settings=EngineSettings(concurrency=2, tick_seconds=3600.0),
        database_url=fresh_database(),
    )
    yield opened
    opened.close()


def started_then_crashed(services: Services) -> UpgradeJob:
    """The extension's job as a node killed mid-upgrade leaves it: Running (step upgrade), Started logged.
    The node is started (it leads) first: creating the extension asks the leader to reconsider it."""
    engine = services.engine
    assert isinstance(engine, ClusterEngine)
    engine.start(background=False)
    wait_for(lambda: engine.node.leading)
    services.resources.put_machine(KEY, MACHINE, "poison@example.com")
    op = services.resources.put_extension(KEY, EXT, {"location": "eastus", "properties": PROPS}, "poison@example.com")
    services.resources.complete_operation(op["id"])
    template: UpgradeJob = {
        "correlationId": new_uuid(),
        "rolloutId": new_uuid(),
        "toVersion": "1.23.0",
        "wave": 0,
        "caller": "poison@example.com",
    }
    claimed = services.engine.runner.claim(KEY, EXT, template)
    assert not isinstance(claimed, JobResult), (claimed.outcome, claimed.job.get("reason"))
    job, _doc = claimed
    return job


def queue_poison(services: Services, claims: int) -> None:
    engine = services.engine
    assert isinstance(engine, ClusterEngine)
    with engine.node.db.connection() as conn:
        conn.execute(
            "INSERT INTO engine_jobs (subscription, resource_group, name, ext, claimed_by, lease_until, claims)"
            " VALUES (%s, %s, %s, %s, 'dead-node', now() - interval '1 second', %s)",
            (KEY.subscription, KEY.resource_group, KEY.name, EXT, claims),
        )


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def upgrade_events(services: Services, operation_id: str) -> list[str]:
    day = datetime.now(UTC).date()
    start, end = (day - timedelta(days=400)).isoformat(), (day + timedelta(days=400)).isoformat()
    return [
        e["status"]["value"]
        for e in services.store.iter_events(start, end)
        if e.get("operationId") == operation_id or (e.get("properties") or {}).get("operationId") == operation_id
    ]


def test_a_job_claimed_max_claims_times_without_ending_is_given_up_as_failed(services: Services) -> None:
    job = started_then_crashed(services)
    commands_before = list((services.fleet.snapshot(KEY) or {}).get("commands") or [])
    queue_poison(services, claims=MAX_CLAIMS)
    engine = services.engine
    assert isinstance(engine, ClusterEngine)

    def job_gone() -> bool:
        with engine.node.db.connection() as conn:
            return conn.execute("SELECT count(*) FROM engine_jobs").fetchone() == (0,)

    wait_for(job_gone)
    doc = services.store.get_machine(KEY)
    assert doc is not None
    record = doc["extensions"][EXT]
    props = record["resource"]["properties"]
    assert props["provisioningState"] == "Failed"
    assert props["typeHandlerVersion"] == "1.22.0", "the host was never upgraded"
    assert record.get("operation") is None
    assert record.get("droppedOut") is True, "out of automatic upgrade until the extension is updated"
    ended = record["upgrade"]
    assert ended is not None and ended["state"] == "Failed"
    assert ended["lastError"]["code"] == "UpgradeJobCrashed"
    assert f"after {MAX_CLAIMS} runs that never finished" in ended["lastError"]["message"]
    assert "Provisioning failed" in props["instanceView"]["status"]["displayStatus"]
    assert record["outcomes"][job["correlationId"]] == "RollbackFailed", "the rollout counts it failed"
    assert upgrade_events(services, job["operationId"]) == ["Started", "Failed"]
    commands_after = list((services.fleet.snapshot(KEY) or {}).get("commands") or [])
    assert commands_after == commands_before, "a given-up job does not touch the host"


def test_a_job_below_the_claim_cap_is_reconciled_not_given_up(services: Services) -> None:
    started_then_crashed(services)
    queue_poison(services, claims=MAX_CLAIMS - 1)
    engine = services.engine
    assert isinstance(engine, ClusterEngine)

    def job_gone() -> bool:
        with engine.node.db.connection() as conn:
            return conn.execute("SELECT count(*) FROM engine_jobs").fetchone() == (0,)

    wait_for(job_gone)
    doc = services.store.get_machine(KEY)
    assert doc is not None
    record = doc["extensions"][EXT]
    assert record["resource"]["properties"]["provisioningState"] == "Succeeded"
    assert not record.get("droppedOut")
    # the host never started the upgrade: the reconcile requeues the attempt (or rolls it back), never Failed
    assert (record.get("upgrade") or {}).get("state") != "Failed"
