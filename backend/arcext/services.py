"""The domain objects one server holds, wired together (no Flask here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .activity import ActivityLog
from .auth import TokenService
from .catalog import Catalog
from .clock import Clock, ManualClock, SystemClock
from .cluster.settings import ClusterSettings
from .crypto import SecretBox
from .heartbeat import DEFAULT_BOUND, Watchdog
from .hosts.connections import HostConnectionService
from .hosts.registry import HostResolver
from .hosts.simulated import SimulatedFleet
from .lookups import Lookups
from .maintenance import MaintenanceService
from .metrics import Metrics
from .request_log import RequestLog
from .resources import ResourceService
from .resources.recovery import writes_in_flight
from .store import Store
from .store.capabilities import JournalFigures, ObservableStore
from .store.factory import open_store
from .telemetry import Telemetry
from .upgrades.engine import Engine
from .upgrades.settings import EngineSettings
from .webhooks import Settings as WebhookSettings
from .webhooks import WebhookService

if TYPE_CHECKING:
    from .store.postgres.db import Database


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
    host_connections: HostConnectionService
    engine: Engine
    metrics: Metrics
    telemetry: Telemetry
    webhooks: WebhookService
    maintenance: MaintenanceService
    lookups: Lookups
    #: one line per HTTP request, handed to logging by a thread of its own (arcext.request_log)
    request_log: RequestLog
    #: the database every node shares (PostgreSQL), None on the embedded store: for the parts that keep tables of
    #: their own in it (the webhooks here, the portal's sessions)
    shared_db: Database | None = None
    #: names the background loops that stopped coming round (arcext.heartbeat): health answers 503 while one has
    watchdog: Watchdog | None = None

    def stalled_loops(self) -> list[str]:
        """The names of the loops the watchdog finds stalled now (none without a watchdog; each stall logged once)."""
        return [stall.loop for stall in self.watchdog.check()] if self.watchdog is not None else []

    def loops_waiting_for_database(self) -> list[str]:
        """The loops silent past the watchdog's bound while they wait for the database (not stalls)."""
        return self.watchdog.waiting_for_database() if self.watchdog is not None else []

    def resign(self) -> None:
        """Give up the engine's leadership now, if this node holds it (a worker about to leave)."""
        self.engine.resign()

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
        webhook_settings: WebhookSettings | None = None,
        database_url: str | None = None,
        cluster_settings: ClusterSettings | None = None,
        watchdog_seconds: float = DEFAULT_BOUND,
    ) -> Services:
        store = open_store(data_dir, database_url)
        box = SecretBox.from_data_dir(data_dir)
        shared = None
        if database_url:  # several nodes may share the database: one clock, one simulated fleet, one engine
            from .cluster.wiring import cluster_parts

            shared = cluster_parts(store, data_dir, manual_clock, simulated_latency_ms, host_timeout_s)
        clock: Clock
        fleet: SimulatedFleet
        if shared:
            clock, fleet = shared.clock, shared.fleet
        else:
            clock = ManualClock(path=data_dir / "clock.json") if manual_clock else SystemClock()
            fleet = SimulatedFleet(data_dir / "simhosts", simulated_latency_ms, host_timeout_s)
        catalog = Catalog(store)
        if seed_catalog:
            catalog.seed(clock.now())
        packages = None
        if shared:  # every node attaches and reads the same packages (arcext.hosts.pg_packages)
            from .hosts.pg_packages import DatabasePackageStore

            packages = DatabasePackageStore(shared.store.db, data_dir / "packages")
        hosts = HostResolver(fleet, simulate, box, now=clock.now, packages=packages)
        activity = ActivityLog(store)
        settings = engine_settings or EngineSettings()
        # the operations surface (arcext.telemetry): observers on the store's event and rollout writes,
        # and a timing wrapper around the engine's host drivers
        metrics = Metrics()
        shared_db = shared.store.db if shared else None
        rollouts = shared.rollouts.read() if shared else store.list_rollouts()  # read once, for all of these
        telemetry = Telemetry(metrics, clock.now, rollouts, settings.breaker_fraction)
        webhooks = WebhookService.open(  # on a database: its tables, shared with every node
            data_dir, box, clock.now, metrics, webhook_settings, shared_db
        )
        telemetry.event_sinks.append(webhooks.on_events)
        if isinstance(store, ObservableStore):
            store.set_event_listener(telemetry.on_events)
            store.rollout_listener = telemetry.on_rollout
            store.set_write_observer(metrics.store_write.observe)
        if isinstance(store, JournalFigures):
            metrics.store_source = store.journal_figures
        metrics.outbox_source = webhooks.pending_counts
        engine: Engine
        if shared:
            from .cluster.engine import ClusterEngine

            engine = ClusterEngine(
                shared.store,
                box,
                clock,
                catalog,
                activity,
                telemetry.instrument(hosts),
                settings,
                cluster_settings,
                shared.rollouts,
            )
        else:
            engine = Engine(store, box, clock, catalog, activity, telemetry.instrument(hosts), settings, rollouts)
        metrics.rollouts_source = engine.rollouts
        maintenance = MaintenanceService(store)
        engine.window_gate = maintenance.gate
        engine.windows_in_use = maintenance.in_use
        engine.open_windows = maintenance.open_windows
        webhooks.rollout_states = lambda: {r["id"]: r["state"] for r in engine.rollouts()}
        webhooks.events_at = lambda stamp: [
            e["eventDataId"] for e in store.iter_events(stamp[:10], stamp[:10], where=("eventTimestamp", stamp))
        ]
        claims = None
        if shared:  # a node's claims on the long-running operations it runs (docs/multinode.md)
            from .cluster.operation_claims import PostgresOperationClaims

            operations = cluster_settings or ClusterSettings()
            claims = PostgresOperationClaims(shared.store.url, operations.operation_sweep, operations.orphan_sweep)
        resources = ResourceService(store, box, clock, hosts, catalog, claims)
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
            host_connections=HostConnectionService(store, hosts.box),
            engine=engine,
            metrics=metrics,
            telemetry=telemetry,
            webhooks=webhooks,
            maintenance=maintenance,
            lookups=Lookups(store),
            request_log=RequestLog(),
            shared_db=shared_db,
            watchdog=Watchdog(engine.heartbeats, watchdog_seconds),
        )

    def start(self) -> None:
        self.activity.prune(self.clock.now())
        self.activity.prepare(self.clock.now())
        # one scan of the machines at start: the engine's recovery, with the writes a crash left in flight riding
        # along (a cluster's follower does not recover: the resources scan for theirs themselves)
        in_flight = self.engine.start(rider=writes_in_flight)
        self.resources.start(in_flight)
        # the rollouts' states as they are now, not as ``open`` read them before the scan above (seconds at scale):
        # the webhooks announce what differs from what was announced, and a stale state would be announced as a
        # change back (a follower's refresh asks the store for the rows that changed since; a leader's are current)
        self.engine.refresh()
        rollouts = self.engine.rollout_records()
        self.webhooks.reconcile(
            lambda day: self.store.iter_events(day, "9999-12-31"), rollouts, self.telemetry.rollout_event
        )
        self.webhooks.start()

    def close(self) -> None:
        self.request_log.close()  # the lines of the last requests, before anything else stops
        self.fleet.shutdown()
        self.engine.stop()
        self.resources.stop()
        self.webhooks.close()
        self.store.close()
