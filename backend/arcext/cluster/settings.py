"""Settings of a node in a cluster (arcext serve --database)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterSettings:
    leader_poll: float = 1.0  # seconds between a follower's tries to take the leadership lock
    job_lease: float = 30.0  # seconds a claimed job stays this node's without a renewal (renewed every third)
    leader_wait: float = 5.0  # seconds a forwarded engine call waits for a leader to take it, then 503
    call_timeout: float = 600.0  # seconds a forwarded engine call may run on the leader
    reclaim_poll: float = 1.0  # seconds between looks for jobs whose lease expired (besides NOTIFY wake-ups)
