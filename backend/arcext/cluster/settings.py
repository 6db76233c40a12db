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
    #: seconds the claim loop of a node of 32 workers or more, woken by a job's end with fewer than an eighth of them
    #: free, waits for more to free up so that one claim fills them (a claim costs about as much for 1 job as for 8)
    claim_gather: float = 0.003
    #: seconds the leader, woken by a job's result, waits before it reads the results, so that those that come
    #: together are read and booked together (one statement and one batch for several instead of one each)
    results_gather: float = 0.005
    call_workers: int = 4  # forwarded engine calls the leader runs at once (the others wait their turn)
    call_poll: float = 2.0  # seconds between a caller's looks at its call (the answer comes by NOTIFY before)
    call_keep: float = 60.0  # seconds a call's row outlives the longest a call may wait, then it is swept
    call_sweep: float = 60.0  # seconds between the leader's sweeps of the calls' rows
    operation_sweep: float = 5.0  # seconds between a node's looks for long-running operations of nodes gone

    def __post_init__(self) -> None:
        if not 0.05 <= self.operation_sweep <= 600:
            raise ValueError("ARCEXT_OPERATION_SWEEP must be between 0.05 and 600 seconds")

    @property
    def orphan_sweep(self) -> float:
        """Seconds between a node's scans of the machines for writes a node gone left without a record (the database
        reads every machine row for it, though it sends only those naming an operation, so it is rarer than the
        look at the operations' records)."""
        return 12 * self.operation_sweep

    @property
    def call_retention(self) -> float:
        """Rows of engine calls older than this have no caller waiting for them (answered and never read,
        of a leader or a caller that died, never taken)."""
        return max(self.call_timeout, self.leader_wait) + self.call_keep
