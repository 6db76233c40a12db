"""Which driver reaches which machine."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from ..crypto import SecretBox
from ..ids import MachineKey
from ..store.base import MachineDoc
from . import connections
from .agent import DriverTuning
from .base import HostDriver
from .packages import PackageStore
from .simulated import SimulatedFleet

log = logging.getLogger(__name__)


class HostResolver:
    """A machine with host-connection settings gets its real driver (psrp, or winrm for WinRS-only
    hosts, or ssh for Linux hosts); with ``simulate`` every other machine is a simulated host; otherwise it
    has none.

    ``box`` is the service's one SecretBox (it opens the stored host credentials); ``packages``
    defaults to the data directory the simulated fleet lives in (``<data-dir>/simhosts``); ``now`` is
    the engine's clock, which the drivers write into the host journal."""

    def __init__(
        self,
        fleet: SimulatedFleet,
        simulate: bool,
        box: SecretBox,
        packages: PackageStore | None = None,
        tuning: DriverTuning | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.fleet = fleet
        self.simulate = simulate
        self.box = box
        self.packages = packages or PackageStore(fleet.directory.parent / "packages")
        self.tuning = tuning  # for every real driver (tests shorten the status poll); ssh takes its part
        self.now = now

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
            ssh_tuning = (
                SshTuning(t.status_poll_s, t.deadline_margin_s, t.reconnect_attempts) if t is not None else None
            )
            known_hosts = self.fleet.directory.parent / "ssh_known_hosts"
            return SshDriver(key.name, conn, self.packages, handlers, ssh_tuning, known_hosts, now=self.now)
        if conn.driver == "winrm":
            from .winrm import WinrmDriver

            return WinrmDriver(key.name, conn, self.packages, handlers, self.tuning, now=self.now)
        from .psrp import PsrpDriver

        return PsrpDriver(key.name, conn, self.packages, handlers, self.tuning, now=self.now)
