"""The parts of a server that change when it shares a database with other nodes (Services.open)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..clock import Clock, SystemClock
from ..hosts.simulated import SimulatedFleet
from ..store.base import Store
from ..store.postgres.store import PostgresStore
from .clock import SharedManualClock
from .rollout_mirror import RolloutMirror
from .schema import migrate_cluster
from .simhosts import DatabaseFleet


@dataclass
class ClusterParts:
    store: PostgresStore
    clock: Clock
    fleet: SimulatedFleet
    rollouts: RolloutMirror  # the rollouts as the store holds them (read once at start, then kept current)


def cluster_parts(
    store: Store, data_dir: Path, manual_clock: bool, latency_ms: float, timeout_s: float
) -> ClusterParts | None:
    """The shared clock and simulated fleet of a node on PostgreSQL (None on the embedded store)."""
    if not isinstance(store, PostgresStore):
        return None
    with store.db.connection() as conn:
        migrate_cluster(conn)
    clock: Clock = SharedManualClock(store) if manual_clock else SystemClock()
    fleet = DatabaseFleet(store.db, data_dir / "simhosts", latency_ms, timeout_s)
    return ClusterParts(store, clock, fleet, RolloutMirror(store.db))
