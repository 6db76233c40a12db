"""Finishing operations (completion.py) and start-up recovery of in-flight ones (recovery.py), on a real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from arcext.clock import SystemClock
from arcext.crypto import SecretBox
from arcext.hosts.base import ExtensionSpec, HostDriver, HostDriverError
from arcext.ids import MachineKey
from arcext.operations import FAILED, IN_PROGRESS, SUCCEEDED
from arcext.resources import ResourceService
from arcext.resources.completion import OperationCompletion
from arcext.resources.recovery import reconcile_orphans
from arcext.store import MachineDoc, TinyDBStore

SUB = "00000000-0000-0000-0000-000000000000"
KEY = MachineKey(SUB, "rg", "m1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TinyDBStore]:
    opened = TinyDBStore(tmp_path)
    yield opened
    opened.close()


def _machine_with_extension(store: TinyDBStore) -> ResourceService:
    service = ResourceService(store, SecretBox.from_data_dir(store.data_dir), SystemClock())
    service.put_machine(KEY, {"location": "eastus", "properties": {"osType": "linux"}}, "someone")
    body = {"location": "eastus", "properties": {"publisher": "Contoso", "type": "Agent", "typeHandlerVersion": "1.0"}}
    op = service.put_extension(KEY, "agent", body, "someone")
    service.complete_operation(op["id"])
    return service


class _RefusingHost:
    """A host that refuses every change (what a driver raises for a failed handler command)."""

    def __init__(self) -> None:
        self.closed = False

    def install(self, spec: ExtensionSpec, version: str) -> None:
        raise HostDriverError("m1", "install", "handler exited with 1")

    def remove(self, name: str) -> None:
        raise HostDriverError("m1", "remove", "handler exited with 1")

    def close(self) -> None:
        self.closed = True


def test_a_host_failure_fails_the_operation_and_frees_the_extension(store: TinyDBStore) -> None:
    service = _machine_with_extension(store)
    host = _RefusingHost()
    completion = OperationCompletion(store, service.box, service.clock, lambda _key, _doc: cast(HostDriver, host))
    op = service.patch_extension(KEY, "agent", {"properties": {"typeHandlerVersion": "1.1"}}, "someone")
    completion.complete(op["id"])
    finished = store.get_operation(op["id"])
    assert finished is not None and finished["status"] == FAILED
    assert finished["httpStatus"] == 400 and "handler exited with 1" in finished["error"]["message"]
    assert host.closed
    record = cast(MachineDoc, store.get_machine(KEY))["extensions"]["agent"]
    assert record["operation"] is None
    assert record["resource"]["properties"]["provisioningState"] == "Failed"


def test_completion_runs_once_and_tells_the_engine(store: TinyDBStore) -> None:
    service = _machine_with_extension(store)
    ready: list[tuple[MachineKey, str]] = []
    service.on_extension_ready = lambda key, ext: ready.append((key, ext))
    op = service.patch_extension(KEY, "agent", {"properties": {"typeHandlerVersion": "1.1"}}, "someone")
    service.complete_operation(op["id"])
    service.complete_operation(op["id"])  # as after a crash: already finished, nothing more happens
    assert ready == [(KEY, "agent")]
    finished = store.get_operation(op["id"])
    assert finished is not None and finished["status"] == SUCCEEDED
    assert finished["result"]["properties"]["instanceView"]["typeHandlerVersion"] == "1.1"


def test_an_in_flight_write_without_its_record_gets_one_back(store: TinyDBStore) -> None:
    """A crash between the resource's write and its operation record's: recovery writes the record."""
    _machine_with_extension(store)

    def orphan(doc: MachineDoc | None) -> tuple[MachineDoc | None, None]:
        assert doc is not None
        record: dict[str, Any] = doc["extensions"]["agent"]
        record["operation"] = "lost-op"
        record["resource"]["properties"]["provisioningState"] = "Deleting"
        return doc, None

    store.mutate_machine(KEY, orphan)
    reconcile_orphans(store, SystemClock())
    recreated = store.get_operation("lost-op")
    assert recreated is not None
    assert (recreated["kind"], recreated["status"], recreated["extension"]) == (
        "extension.delete",
        IN_PROGRESS,
        "agent",
    )
    assert recreated["initiatedBy"] == "arcext"
