"""Engine settings (defaults follow Azure Arc's documented behaviour)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class EngineSettings:
    concurrency: int = 16  # upgrade jobs running at once
    retry_delay: timedelta = timedelta(hours=1)  # next attempt after a rolled-back failure
    standard_window: timedelta = timedelta(weeks=8)  # a standard version reaches the whole fleet within this
    critical_window: timedelta = timedelta(weeks=3)  # a critical version within this
    batch_fraction: float = 0.2  # of a subscription's eligible machines in a phase, minimum 1
    breaker_fraction: float = 0.2  # a batch failing more than this freezes the version's rollout
    breaker_min_failures: int = 2  # ... once at least this many of its machines failed
    busy_delay: timedelta = timedelta(minutes=1)  # extension busy with another operation: try again after
    tick_seconds: float = 1.0  # how often the background scheduler looks for due work
    stall_after: timedelta = timedelta(days=1)  # a running wave still open after this shows its rollout Stalled
    audit_seconds: float = 60.0  # how often (wall clock) the background scheduler checks the engine's invariants
