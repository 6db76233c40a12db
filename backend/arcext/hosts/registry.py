"""Which driver reaches which machine."""

from __future__ import annotations

import logging

from ..crypto import SecretBox
from ..ids import MachineKey
from ..store.base import MachineDoc
from . import connections
from .base import HostDriver
from .packages import PackageStore
from .simulated import SimulatedFleet

log = logging.getLogger(__name__)


class HostResolver:
    """A machine with host-connection settings gets its real driver (psrp, or winrm for WinRS-only
    hosts, or ssh for Linux hosts); with ``simulate`` every other machine is a simulated host; otherwise it has none.

    ``box`` and ``packages`` default to the data directory the simulated fleet lives in
    (``<data-dir>/simhosts``), so ``HostResolver(fleet, simulate)`` keeps working unchanged."""

    def __init__(
        self,
        fleet: SimulatedFleet,
        simulate: bool,
        box: SecretBox | None = None,
        packages: PackageStore | None = None,
        tuning: object | None = None,
    ) -> None:
        self.fleet = fleet
        self.simulate = simulate
        data_dir = fleet.directory.parent
        self.box = box or SecretBox.from_data_dir(data_dir)
        self.packages = packages or PackageStore(data_dir / "packages")
        self.tuning = tuning  # a psrp.DriverTuning for either real driver (tests shorten the status poll)

    def __call__(self, key: MachineKey, doc: MachineDoc) -> HostDriver | None:
        record = connections.stored(doc)
        if record:
            return self.real_driver(key, doc, record)
        if self.simulate:
            return self.fleet.driver(key)
        return None

    def available(self, doc: MachineDoc) -> bool:
        """Whether the machine has a driver, without building one (the scheduler asks per due job)."""
        return bool(connections.stored(doc)) or self.simulate

    def real_driver(self, key: MachineKey, doc: MachineDoc, record: dict[str, object]) -> HostDriver:
        conn = connections.load(dict(record), self.box)
        handlers = {
            name: f"{r['resource']['properties'].get('publisher', '')}.{r['resource']['properties'].get('type', '')}"
            for name, r in (doc.get("extensions") or {}).items()
        }
        if conn.driver == "ssh":
            from .ssh import SshDriver, SshTuning

            t = self.tuning
            ssh_tuning = SshTuning(
                status_poll_s=getattr(t, "status_poll_s", SshTuning.status_poll_s),
                deadline_margin_s=getattr(t, "deadline_margin_s", SshTuning.deadline_margin_s),
                reconnect_attempts=getattr(t, "reconnect_attempts", SshTuning.reconnect_attempts),
            )
            known_hosts = self.fleet.directory.parent / "ssh_known_hosts"
            return SshDriver(key.name, conn, self.packages, handlers, ssh_tuning, known_hosts)
        from .psrp import DriverTuning, PsrpDriver

        tuning = self.tuning if isinstance(self.tuning, DriverTuning) else None
        if conn.driver == "winrm":
            from .winrm import WinrmDriver

            return WinrmDriver(key.name, conn, self.packages, handlers, tuning)
        return PsrpDriver(key.name, conn, self.packages, handlers, tuning)
