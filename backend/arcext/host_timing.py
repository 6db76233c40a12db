"""A host-driver resolver whose drivers time every host operation (installed, install, upgrade, rollback,
remove) and report it, with the driver's name and the error code of a failure, to a callback
(arcext.telemetry's ``host_operation``). Reporting never fails the operation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .hosts.base import ExtensionSpec, HostDriver, HostDriverError, InstalledExtension
from .ids import MachineKey
from .store.base import MachineDoc

log = logging.getLogger(__name__)

#: (driver, step, machine, extension, seconds, error code or None)
Report = Callable[[str, str, MachineKey, str, float, str | None], None]


def driver_name(driver: object) -> str:
    """The driver's label in metrics and logs: its ``driver_label``, or its class name without "Driver"."""
    label = getattr(driver, "driver_label", None)
    if isinstance(label, str):
        return label
    name = type(driver).__name__.lower()
    return name[: -len("driver")] if name.endswith("driver") and len(name) > 6 else name


class InstrumentedResolver:
    """The engine's driver resolver, with every host operation timed and reported."""

    def __init__(self, inner: Callable[[MachineKey, MachineDoc], HostDriver | None], report: Report) -> None:
        self.inner = inner
        self.report = report
        available = getattr(inner, "available", None)
        if available is not None:
            self.available: Callable[[MachineDoc], bool] = available

    def __call__(self, key: MachineKey, doc: MachineDoc) -> HostDriver | None:
        driver = self.inner(key, doc)
        return None if driver is None else InstrumentedDriver(driver, key, self.report)


class InstrumentedDriver:
    def __init__(self, inner: HostDriver, key: MachineKey, report: Report) -> None:
        self.inner = inner
        self.key = key
        self.report = report
        self.name = driver_name(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextmanager
    def _timed(self, step: str, extension: str) -> Iterator[None]:
        started, error = time.perf_counter(), None
        try:
            yield
        except HostDriverError as exc:
            error = exc.code
            raise
        finally:
            try:
                self.report(self.name, step, self.key, extension, time.perf_counter() - started, error)
            except Exception:  # telemetry never fails a host operation
                log.exception("Could not record a host operation")

    def installed(self, name: str) -> InstalledExtension | None:
        with self._timed("installed", name):
            return self.inner.installed(name)

    def install(self, spec: ExtensionSpec, version: str) -> None:
        with self._timed("install", spec.name):
            self.inner.install(spec, version)

    def upgrade(self, spec: ExtensionSpec, from_version: str, to_version: str) -> None:
        with self._timed("upgrade", spec.name):
            self.inner.upgrade(spec, from_version, to_version)

    def rollback(self, spec: ExtensionSpec, failed_version: str, good_version: str) -> None:
        with self._timed("rollback", spec.name):
            self.inner.rollback(spec, failed_version, good_version)

    def remove(self, name: str) -> None:
        with self._timed("remove", name):
            self.inner.remove(name)

    def close(self) -> None:
        self.inner.close()
