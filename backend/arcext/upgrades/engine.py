"""The upgrade engine: rollouts of published versions, due jobs, manual upgrades, recovery.

State lives in the store (rollout records; each extension's job, and its outcome per rollout, on
its own record); the engine keeps only indexes it can rebuild at any time: a heap of due jobs, the
open targets of running waves, and the manual operations still waiting for their jobs. Whether a
wave's target is done is always read from its record (``target_status``), after every job's end
and by the invariant check (``audit``) that runs after every ``run_until_idle`` and every minute on
the wall clock, so nothing a restart would repair ever needs a restart.

One rule orders the upgrades of one extension: one job at a time; a manual upgrade's first attempt
is never replaced by an automatic job; a newer automatic job a manual upgrade displaced comes back
when the manual job has ended.

The parts, one job each: ``rollouts`` (plans, waves, breaker, operator controls), ``manual``
(upgradeExtensions), ``dispatch`` (the due heap, the workers, the bookkeeping of a job's end), ``recovery`` (restart and
``audit``), ``rollout_views``; ``base`` holds the state they share under one lock and ``targets`` the pure
reads of a machine document. ``Engine`` composes them and runs the background loop.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from functools import partial
from typing import Any

from ..clock import iso
from ..heartbeat import Heartbeat
from . import job_state as J
from .base import DriverResolver
from .recovery import Recovery, Repair, Rider
from .rollout_views import RolloutViews
from .targets import ACTIVE, COMPLETED, FROZEN, HELD, PAUSED

__all__ = ["ACTIVE", "COMPLETED", "FROZEN", "HELD", "PAUSED", "DriverResolver", "Engine", "Repair"]

log = logging.getLogger(__name__)


class Engine(Recovery, RolloutViews):
    """The upgrade engine services.py builds: its parts (see the module docstring) over one shared state,
    plus the life cycle (``start``, ``stop``, the background loop) and ``run_until_idle``."""

    def start(self, background: bool = True, rider: Rider | None = None) -> list[Any] | None:
        """Recover, then run the background loop. Returns what ``rider`` projected from the recovery's scan of
        the machines (None when this engine did not scan them: a cluster's follower)."""
        carried = self.recover(rider)
        if background:
            self._thread = threading.Thread(target=self._loop, name="arcext-engine", daemon=True)
            self._thread.start()
        return carried

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(cancel_pending=True)

    def _loop(self) -> None:
        # On a manual clock the background pass only starts what a user asked for (manual upgrades);
        # automatic work moves when POST /arcext/v1/engine/run says so, which keeps tests deterministic.
        from ..clock import ManualClock

        automatic = not isinstance(self.clock, ManualClock)
        pruned_on = ""
        audit_at = time.monotonic() + self.settings.audit_seconds
        while not self._stop.is_set():
            self.heartbeat.beat()
            try:
                today = iso(self.clock.now())[:10]
                if today != pruned_on:  # the activity log keeps 90 days
                    self.activity.prune(self.clock.now())
                    pruned_on = today
                self.advance(automatic=automatic)
                if automatic and time.monotonic() >= audit_at:
                    audit_at = time.monotonic() + self.settings.audit_seconds
                    self.audit()
            except Exception:  # the scheduler must outlive one bad tick
                log.exception("Engine tick failed")
            try:
                self.activity.prepare(self.clock.now())  # tomorrow's activity-log partition, a day early
            except Exception:
                log.exception("Making room for the activity log's next days failed")
            self._wake.wait(self.settings.tick_seconds)
            self._wake.clear()
        self.heartbeat.rest()

    def resign(self) -> None:
        """Give up leading the engine (a node of a cluster); one engine alone leads nothing to give up."""

    def heartbeats(self) -> list[Heartbeat]:
        """The heartbeats of the loops this engine runs (arcext.heartbeat)."""
        return [self.heartbeat]

    def reset(self) -> None:
        """Forget every index (tests' reset; the store is cleared by the caller)."""
        self.wait_idle()
        with self._lock:
            self._clear_indexes()
            self._rollouts.clear()
            self._stats.clear()

    def jobs_run(self) -> int:
        """Upgrade jobs this process ran to their end (the cluster view's per-node count)."""
        return self._completions

    def now(self) -> datetime:
        return self.clock.now()

    def _run_rounds(self, max_rounds: int) -> None:
        for _ in range(max_rounds * 100):
            dispatched = self.advance()
            with self._idle:
                if self._inflight:
                    # advance again as jobs finish (a few at a time), so one rollout's next wave starts
                    # when its current one ends, not when every rollout's jobs have ended
                    self._idle.wait_for(partial(self._progressed, self._completions), 5.0)
                    continue
            if dispatched:
                continue
            # nothing runs and nothing was due: one more advance may complete waves and start the next
            if self.advance() == 0:
                self.wait_idle()
                with self._lock:
                    if not self._inflight:
                        break

    def run_until_idle(self, max_rounds: int = 10_000) -> dict[str, Any]:
        """Run everything that is due now, round after round, until nothing more happens."""
        before = dict(self._stats)
        repairs = 0
        for _check in range(4):
            self._run_rounds(max_rounds)
            # idle: check the engine's invariants; a repair may have made work due now
            found = len(self.audit())
            repairs += found
            if not found:
                break
        summary = {k: self._stats.get(k, 0) - before.get(k, 0) for k in self._stats}
        return {
            "now": iso(self.clock.now()),
            "dispatched": summary.get("dispatched", 0),
            "succeeded": summary.get(J.SUCCEEDED, 0),
            "rolledBack": summary.get(J.ROLLED_BACK, 0),
            "rollbackFailed": summary.get(J.DROPPED, 0),
            "notRun": summary.get(J.NOT_RUN, 0),
            "cancelled": summary.get(J.CANCELLED, 0),
            "repairs": repairs,
            "pending": len(self._due),
            "rollouts": [
                {"id": r["id"], "type": r["type"], "version": r["version"], "state": r["state"]}
                for r in self._rollout_list()
            ],
        }
