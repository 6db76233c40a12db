"""``JobRunner.run``'s ``host_done``: called once the job's last host operation is over, before its outcome is
recorded, so that a cluster node can claim the next job for the slot meanwhile (arcext.cluster.node). Not called
on the path that still works on the host after the upgrade (a failed upgrade's rollback). Embedded store, the
simulated fleet, manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arcext.ids import MachineKey, new_uuid
from arcext.records import UpgradeJob
from arcext.services import Services
from arcext.upgrades.settings import EngineSettings

KEY = MachineKey("00000000-0000-0000-0000-0000000000h1", "rg-host-done", "m-host-done")
EXT = "ama"
PROPS = {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorWindowsAgent", "typeHandlerVersion": "1.22.0"}
MACHINE = {"location": "eastus", "properties": {"osName": "windows", "osType": "windows"}}


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    opened = Services.open(
        tmp_path, manual_clock=True, simulate=True, engine_settings=EngineSettings(concurrency=2, tick_seconds=3600.0)
    )
    opened.resources.put_machine(KEY, MACHINE, "host-done@example.com")
    op = opened.resources.put_extension(KEY, EXT, {"location": "eastus", "properties": PROPS}, "host-done@example.com")
    opened.resources.complete_operation(op["id"])
    yield opened
    opened.close()


def template() -> UpgradeJob:
    return {
        "correlationId": new_uuid(),
        "rolloutId": new_uuid(),
        "toVersion": "1.23.0",
        "wave": 0,
        "caller": "host-done@example.com",
    }


class Seen:
    """What ``host_done`` saw when it was called: the host's version of the extension and the stored state."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.calls: list[tuple[str | None, str]] = []

    def __call__(self) -> None:
        host = self.services.fleet.snapshot(KEY)
        assert host is not None
        installed: dict[str, Any] = host["extensions"][EXT]
        doc = self.services.store.get_machine(KEY)
        assert doc is not None
        state = doc["extensions"][EXT]["resource"]["properties"]["provisioningState"]
        self.calls.append((installed.get("version"), state))


def test_called_once_after_the_upgrade_before_the_outcome_is_recorded(services: Services) -> None:
    seen = Seen(services)
    result = services.engine.runner.run(KEY, EXT, template=template(), host_done=seen)
    assert result.outcome == "Succeeded"
    assert seen.calls == [("1.23.0", "Updating")], "the host was upgraded; the record still said Updating"


def test_called_once_when_nothing_ran_on_the_host(services: Services) -> None:
    services.fleet.set_faults(KEY, {"unreachable": True})
    seen = Seen(services)
    result = services.engine.runner.run(KEY, EXT, template=template(), host_done=seen)
    assert result.outcome != "Succeeded"
    assert len(seen.calls) == 1 and seen.calls[0][1] == "Updating"


def test_not_called_when_a_failed_upgrade_is_rolled_back_on_the_host(services: Services) -> None:
    services.fleet.set_faults(KEY, {"failUpgrade": 1})
    seen = Seen(services)
    result = services.engine.runner.run(KEY, EXT, template=template(), host_done=seen)
    assert result.outcome == "RolledBack", result.outcome
    assert seen.calls == [], "the rollback still worked on the host: the slot was not free before it"
