"""host_timing: every host operation is timed and reported with the driver's name and, for a failure, its
error code; the failure still reaches the engine, and a failing report never fails the operation."""

from __future__ import annotations

from typing import Any

import pytest

from arcext.host_timing import InstrumentedResolver
from arcext.hosts.base import HostDriverError
from arcext.ids import MachineKey, machine_key


class BusyError(HostDriverError):
    code = "HostBusy"


class FakeDriver:
    def __init__(self) -> None:
        self.removed: list[str] = []

    def installed(self, name: str) -> None:
        raise BusyError("host", "installed", "busy")

    def remove(self, name: str) -> None:
        self.removed.append(name)

    def close(self) -> None:
        pass


def test_operations_are_reported_and_failures_pass_through() -> None:
    reports: list[tuple[Any, ...]] = []

    def report(driver: str, step: str, key: MachineKey, extension: str, seconds: float, error: str | None) -> None:
        reports.append((driver, step, key.name, extension, seconds >= 0, error))

    inner = FakeDriver()
    resolver = InstrumentedResolver(lambda key, doc: inner, report)  # type: ignore[arg-type,return-value]
    driver = resolver(machine_key("00000000-0000-0000-0000-000000000000", "rg", "m1"), {})
    assert driver is not None
    driver.remove("ext")
    with pytest.raises(BusyError):
        driver.installed("ext")
    assert inner.removed == ["ext"]
    assert reports == [
        ("fake", "remove", "m1", "ext", True, None),
        ("fake", "installed", "m1", "ext", True, "HostBusy"),
    ]


def test_a_failing_report_does_not_fail_the_operation() -> None:
    def report(*_args: Any) -> None:
        raise RuntimeError("metrics are down")

    inner = FakeDriver()
    driver = InstrumentedResolver(lambda key, doc: inner, report)(  # type: ignore[arg-type,return-value]
        machine_key("00000000-0000-0000-0000-000000000000", "rg", "m1"), {}
    )
    assert driver is not None
    driver.remove("ext")
    assert inner.removed == ["ext"]
