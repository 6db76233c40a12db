"""The domain objects one server holds, wired together (no Flask here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .activity import ActivityLog
from .auth import TokenService
from .catalog import Catalog
from .crypto import SecretBox
from .hosts.registry import HostResolver
from .hosts.simulated import SimulatedFleet
from .resources import ResourceService
from .store import Store, TinyDBStore
from .upgrades.clock import Clock, ManualClock, SystemClock
from .upgrades.engine import Engine
from .upgrades.settings import EngineSettings


@dataclass
class Services:
    store: Store
    box: SecretBox
    clock: Clock
    tokens: TokenService
    catalog: Catalog
    resources: ResourceService
    activity: ActivityLog
    fleet: SimulatedFleet
    hosts: HostResolver
    engine: Engine

    @classmethod
    def open(
        cls,
        data_dir: Path,
        manual_clock: bool = False,
        seed_catalog: bool = True,
        simulate: bool = False,
        engine_settings: EngineSettings | None = None,
        simulated_latency_ms: float = 0.0,
        host_timeout_s: float = 600.0,
    ) -> Services:
        store = TinyDBStore(data_dir)
        box = SecretBox.from_data_dir(data_dir)
        clock: Clock = ManualClock(path=data_dir / "clock.json") if manual_clock else SystemClock()
        catalog = Catalog(store)
        if seed_catalog:
            catalog.seed(clock.now())
        fleet = SimulatedFleet(data_dir / "simhosts", simulated_latency_ms, host_timeout_s)
        hosts = HostResolver(fleet, simulate)
        activity = ActivityLog(store)
        engine = Engine(store, box, clock, catalog, activity, hosts, engine_settings)
        resources = ResourceService(store, box, clock, hosts, catalog)
        resources.on_extension_ready = engine.reconsider
        return cls(
            store=store,
            box=box,
            clock=clock,
            tokens=TokenService(store),
            catalog=catalog,
            resources=resources,
            activity=activity,
            fleet=fleet,
            hosts=hosts,
            engine=engine,
        )

    def start(self) -> None:
        self.activity.prune(self.clock.now())
        self.resources.start()
        self.engine.start()

    def close(self) -> None:
        self.fleet.shutdown()
        self.engine.stop()
        self.resources.stop()
        self.store.close()
