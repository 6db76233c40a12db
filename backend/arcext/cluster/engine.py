"""The upgrade engine of a node in a cluster: the Engine, with leadership, shared jobs and forwarded calls.

Only the leader schedules (``advance``, ``audit``, ``recover`` and the bookkeeping of results); its
``_submit`` queues a job in ``engine_jobs`` instead of its own pool, and every node runs the jobs it
claims (``run_job``). On a follower the engine's public methods that change something are calls forwarded
to the leader (arcext.cluster.calls); what the views read (``rollouts``, ``wave_of``, ``held``, ``stalled``)
a follower reads from the store itself (``refresh``, arcext.cluster.rollout_mirror), so a view or a metrics
scrape on a follower sees every change made through any node and costs the leader nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar, cast

import psycopg

from .. import errors
from ..activity import ActivityLog
from ..catalog import Catalog
from ..clock import Clock
from ..crypto import SecretBox
from ..heartbeat import Heartbeat
from ..ids import MachineKey
from ..records import OperationRecord, RolloutRecord, UpgradeJob, Wave
from ..store.base import MachineDoc, Record
from ..store.postgres.store import PostgresStore
from ..upgrades import job_state as J
from ..upgrades.base import DriverResolver
from ..upgrades.engine import Engine, Repair
from ..upgrades.jobs import JobResult
from ..upgrades.recovery import Rider
from ..upgrades.settings import EngineSettings
from ..upgrades.workers import WorkerPool
from . import extension_reads
from .node import ClusterNode, Job, Target
from .rollout_mirror import RolloutMirror
from .settings import ClusterSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the engine methods a follower forwards to the leader
FORWARDED: Final = frozenset(
    {"manual_upgrade", "on_version_published", "reconsider", "set_rollout_state", "run_until_idle", "reset"}
)


class ClusterEngine(Engine):
    def __init__(
        self,
        store: PostgresStore,
        box: SecretBox,
        clock: Clock,
        catalog: Catalog,
        activity: ActivityLog,
        drivers: DriverResolver,
        settings: EngineSettings | None = None,
        cluster: ClusterSettings | None = None,
        mirror: RolloutMirror | None = None,
    ) -> None:
        self._mirror = mirror or RolloutMirror(store.db)
        super().__init__(store, box, clock, catalog, activity, drivers, settings, self._mirror.read())
        self._leading = False
        self._following = True  # the views read the store (False from the start of a take-over)
        self._rider: Rider | None = None  # rides on the recovery of an election during start()
        self._carried: list[Any] | None = None
        self._outbox: list[Job] = []
        self._batch = threading.local()  # the results being booked on this thread: their records as read together
        self.node = ClusterNode(store.url, store.db, self, cluster or ClusterSettings(), self.settings.concurrency)

    def heartbeats(self) -> list[Heartbeat]:
        return [*super().heartbeats(), *self.node.heartbeats()]

    def resign(self) -> None:
        self.node.resign()

    def _new_pool(self) -> WorkerPool | None:
        return None  # jobs go to engine_jobs; every node's ClusterNode runs the ones it claims

    # --- life cycle ------------------------------------------------------------------------------
    def start(self, background: bool = True, rider: Rider | None = None) -> list[Any] | None:
        """Join the cluster. ``recover()`` runs when this node is elected; the node tries once in this call, and
        if it leads now, ``rider`` rides on that recovery's scan (else None: a follower scans nothing here)."""
        with self._lock:
            self._rider, self._carried = rider, None
        self.node.start()
        with self._lock:
            carried, self._rider, self._carried = self._carried, None, None
        if background:
            self._thread = threading.Thread(target=self._loop, name="arcext-engine", daemon=True)
            self._thread.start()
        return carried

    def stop(self) -> None:
        self.node.stop()
        super().stop()

    # --- leadership (called by the node) ---------------------------------------------------------
    def take_over(self, inflight: set[Target]) -> None:
        """Lead: indexes rebuilt from the store; jobs still in engine_jobs count as running."""
        try:
            with self._lock:
                self._following = False
                self._clear_indexes()
                self._rollouts = {r["id"]: r for r in self._mirror.read()}  # only what changed is fetched again
                self._mirror.forget()  # the records are the leader's now: it changes them in place
                self._inflight.update(inflight)
                rider, self._rider = self._rider, None
            carried = self.recover(rider)
            if rider is not None:
                self._carried = carried
            self._flush_jobs()
        except BaseException:  # the lock is given back (arcext.cluster.leader): a follower again
            self.step_down()
            raise
        self._leading = True
        self.kick()

    def step_down(self) -> None:
        """No longer the leader: stop scheduling and drop the indexes (the next leader rebuilds them)."""
        self._leading = False
        with self._lock:
            self._clear_indexes()
            self._following = True
            self._idle.notify_all()

    def _clear_indexes(self) -> None:
        super()._clear_indexes()
        self._outbox = []

    def wake(self) -> None:
        self._wake.set()

    # --- scheduling: the leader only -------------------------------------------------------------
    def advance(self, automatic: bool = True) -> int:
        """One pass of the scheduler, its looks at machines cached for the pass (``Database.cached_views``): a
        wave's start reads its targets' machines together and the dispatch of those same targets, in the same
        pass, looks at them again; each machine is read once per pass (its writes in the pass drop it). Under
        the engine's lock nothing else changes a target that is not running meanwhile: a job on it is
        dispatched by this pass only, and one running elsewhere (``_inflight``) is not dispatched."""
        if not self._leading:
            return 0
        with self.node.db.cached_views():
            dispatched = super().advance(automatic)
        self._flush_jobs()
        return dispatched

    def audit(self) -> list[Repair]:
        if not self._leading:
            return []
        repairs = super().audit()
        self._flush_jobs()
        return repairs

    def _submit(self, key: MachineKey, ext: str, resume: bool = False, template: UpgradeJob | None = None) -> None:
        with self._lock:
            if (key.lower, ext) in self._inflight:
                return  # queued or running on some node already
            self._inflight.add((key.lower, ext))
            self._outbox.append((key, ext, resume, template))

    def _flush_jobs(self) -> None:
        with self._lock:
            batch, self._outbox = self._outbox, []
            if not batch:
                return
            try:
                self.node.enqueue(batch)
            except psycopg.Error as exc:
                log.warning("Queueing %d jobs failed (%s); trying again", len(batch), type(exc).__name__)
                self._outbox[:0] = batch

    def jobs_ended(self, results: list[tuple[MachineKey, str, JobResult | None]]) -> None:
        """Book a batch of jobs' ends, in order (the node's results loop). Each booking's first look at its
        extension's record (``_view_record``) sees the record as one read for the whole batch left it, after every
        job of the batch had written its end (``extension_reads.records``: that record only, not the machine).
        A result's first look concerns its own extension, which nothing else changes until it is booked; later
        looks read again, the batch's machines cached (``Database.cached_views``: the leader's writes drop them)."""
        if not self._leading:
            return
        ended = [(key, ext) for key, ext, result in results if result is not None]
        try:
            read = extension_reads.records(self.node.db, ended)
            self._batch.records = {(key.lower, ext): doc for (key, ext), doc in zip(ended, read, strict=True)}
        except psycopg.Error as exc:  # each look reads on its own: the results are booked anyway
            log.warning("Reading the results' records failed (%s)", type(exc).__name__)
            self._batch.records = {}
        try:
            with self.node.db.cached_views():
                for key, ext, result in results:
                    self.job_ended(key, ext, result)
        finally:
            self._batch.records = {}

    def job_ended(self, key: MachineKey, ext: str, result: JobResult | None) -> None:
        if self._leading:
            self._job_ended(key, ext, result)

    def _view_record(self, key: MachineKey, ext: str, view: Callable[[MachineDoc | None], T]) -> T:
        records: dict[tuple[str, str], MachineDoc | None] = getattr(self._batch, "records", {})
        if (key.lower, ext) in records:
            return view(records.pop((key.lower, ext)))
        return super()._view_record(key, ext, view)

    def _outcomes(self, rollout_id: str, targets: Sequence[tuple[MachineKey, str]]) -> list[str | None]:
        """Only the outcomes are read (arcext.cluster.extension_reads), not the targets' machines."""
        return extension_reads.outcomes(self.node.db, rollout_id, targets)

    # --- jobs: every node ------------------------------------------------------------------------
    def run_job(
        self,
        key: MachineKey,
        ext: str,
        resume: bool,
        reclaimed: bool,
        template: UpgradeJob | None,
        host_done: Callable[[], None] | None = None,
    ) -> JobResult | None:
        """Run a claimed job. One queued for a restart's reconciliation (``resume``), or taken over from a
        node that stopped renewing its lease (``reclaimed``), is reconciled with the host when its record
        says Running; a reclaimed job that never started runs from the beginning. ``host_done``: the job's
        last host operation is over (arcext.upgrades.jobs.JobRunner.run)."""
        if resume or reclaimed:
            doc = self.store.get_machine(key)
            record = doc["extensions"].get(ext) if doc else None
            running = bool(record and (record.get("upgrade") or {}).get("state") == J.RUNNING)
            if running or resume:
                driver = self.drivers(key, doc) if doc and running else None
                return self.runner.resume(key, ext, driver)
        return self.runner.run(key, ext, template=template, host_done=host_done)

    def abandon_job(self, key: MachineKey, ext: str, template: UpgradeJob | None, claims: int) -> JobResult | None:
        """A poison job (its runs never ended): given up as failed (arcext.upgrades.jobs.JobRunner.abandon)."""
        return self.runner.abandon(key, ext, template, claims)

    # --- engine calls: direct on the leader, forwarded from a follower ---------------------------
    def execute_call(self, method: str, args: list[Any]) -> Any:
        if method not in FORWARDED:
            raise errors.ArmError(400, "UnknownEngineCall", f"'{method}' is not an engine call.")
        if not self._leading:
            raise errors.ArmError(503, "ServiceUnavailable", "This node no longer leads the engine.")
        return getattr(super(), method)(*args)

    def _forward(self, method: str, *args: Any) -> Any:
        return self.node.call(method, list(args))

    def manual_upgrade(self, key: MachineKey, targets: dict[str, Any], principal: str) -> OperationRecord:
        if self._leading:
            return super().manual_upgrade(key, targets, principal)
        return cast(OperationRecord, self._forward("manual_upgrade", key, targets, principal))

    def on_version_published(self, version: Record) -> RolloutRecord | None:
        if self._leading:
            return super().on_version_published(version)
        return cast("RolloutRecord | None", self._forward("on_version_published", version))

    def reconsider(self, key: MachineKey, ext: str) -> bool:
        if self._leading:
            return super().reconsider(key, ext)
        return bool(self._forward("reconsider", key, ext))

    def set_rollout_state(self, rollout_id: str, action: str) -> RolloutRecord:
        if self._leading:
            return super().set_rollout_state(rollout_id, action)
        return cast(RolloutRecord, self._forward("set_rollout_state", rollout_id, action))

    def run_until_idle(self, max_rounds: int = 10_000) -> dict[str, Any]:
        if self._leading:
            return super().run_until_idle(max_rounds)
        return cast(dict[str, Any], self._forward("run_until_idle", max_rounds))

    # --- what the views read: a follower's from the store ----------------------------------------
    def refresh(self) -> None:
        """On a follower: the rollouts as the store holds them now (one small query when nothing changed).
        The leader's are current: it writes every change itself."""
        if not self._following:
            return
        try:
            fresh = self._mirror.read()
        except psycopg.Error as exc:
            log.warning("Reading the rollouts failed (%s); the views show the last ones read", type(exc).__name__)
            return
        with self._lock:
            if self._following:  # (not while a take-over rebuilds them)
                self._rollouts = {r["id"]: r for r in fresh}

    def rollouts(self, targets: bool = False) -> list[Record]:
        self.refresh()
        return super().rollouts(targets)

    def _wave_of(self, rollout: RolloutRecord, key: MachineKey, ext: str) -> Wave | None:
        if not self._following:
            return super()._wave_of(rollout, key, ext)
        # a follower keeps no open targets: a running wave's target is open until the extension's record holds
        # an outcome for the rollout, which ``wave_of``'s caller checks (``outcomes``)
        wave = self._planned_wave(rollout, key, ext)
        return None if wave is None or wave["state"] == "Completed" else wave

    def reset(self) -> None:
        if self._leading:
            super().reset()
        else:
            self._forward("reset")
        with self.node.db.connection() as conn:
            conn.execute("DELETE FROM engine_jobs")
            conn.execute("DELETE FROM engine_results")

    def kick(self) -> None:
        if self._leading:
            super().kick()
            return
        try:
            self.node.kick()
        except psycopg.Error:
            log.warning("Could not wake the leader's scheduler")
