"""Read-only look-ups of stored machines and operations for the API and the portal.

The views that need a machine's raw document (its maintenance windows, its pending upgrades, the portal's
machine page) or an operation's record ask here, so nothing above the domain layer reaches the store.
Writes go through arcext.resources (machines, extensions, operations).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .ids import MachineKey
from .records import OperationRecord
from .store.base import MachineDoc, Store

T = TypeVar("T")


class Lookups:
    def __init__(self, store: Store) -> None:
        self._store = store

    def machine(self, key: MachineKey) -> MachineDoc | None:
        """The machine's stored document (machine resource, extensions, host state), or None."""
        return self._store.get_machine(key)

    def machine_count(self) -> int:
        return self._store.count_machines()

    def over_machines(self, project: Callable[[MachineDoc], T | None]) -> list[T]:
        """``project`` applied to every machine document (not copied: read, never change it); the non-None
        results."""
        return self._store.project_machines(project)

    def operation(self, op_id: str) -> OperationRecord | None:
        """The long-running operation's record (arcext.records.OperationRecord holds its fields), or None."""
        return self._store.get_operation(op_id)
