"""Which driver reaches which machine."""

from __future__ import annotations

from ..ids import MachineKey
from ..store.base import MachineDoc
from .base import HostDriver
from .simulated import SimulatedFleet


class HostResolver:
    """A machine with host-connection settings gets its real driver (a later milestone); with
    ``simulate`` every other machine is a simulated host; otherwise it has none (record only)."""

    def __init__(self, fleet: SimulatedFleet, simulate: bool) -> None:
        self.fleet = fleet
        self.simulate = simulate

    def __call__(self, key: MachineKey, doc: MachineDoc) -> HostDriver | None:
        if doc["machine"].get("hostConnection"):
            return None  # real drivers (psrp, winrm) arrive with the host-driver milestone
        if self.simulate:
            return self.fleet.driver(key)
        return None
