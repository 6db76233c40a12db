"""One node of a cluster: the leadership lease, the job claimer, the results and calls channels.

Every node (the leader included) claims jobs from ``engine_jobs`` (``FOR UPDATE SKIP LOCKED``) up to
its free worker slots (the claim reads each job's machine and simulated host too, for its first write and
host operation), runs them, renews their leases every third of ``job_lease`` while they run, and ends
each in one statement with the others ending at the same moment (group commit): its row deleted, its
result inserted into ``engine_results``, ``NOTIFY arcext_results``. A row whose lease expired (its node
died) is claimed again and reconciled with the host (``reclaimed``). The leader feeds results to the
engine's bookkeeping and serves the engine calls followers forward (``engine_calls``, arcext.cluster.calls).
Wake-ups come by LISTEN/NOTIFY on one connection; the only timed look is for expired leases, once every
``reclaim_poll`` seconds.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final, Protocol

import psycopg
from psycopg.types.json import Jsonb

from ..heartbeat import Heartbeat
from ..ids import MachineKey
from ..records import UpgradeJob
from ..store.postgres.db import Database, GroupCommit, SeenRow
from ..store.postgres.records import CATALOG_VERSION
from ..upgrades.jobs import JobResult
from ..upgrades.workers import WorkerPool
from .calls import CALL_DONE, CALLS, ForwardedCalls
from .clock import CLOCK_COLUMN, SharedManualClock
from .connect import Connection, dedicated
from .leader import LeaderLease
from .settings import ClusterSettings
from .simhosts import offered_key
from .wire import ENDED_ROWS, QUEUED_ROWS, ends_to_json, jobs_to_json, result_from_json, result_to_json

log = logging.getLogger(__name__)

JOBS: Final = "arcext_jobs"
RESULTS: Final = "arcext_results"
KICK: Final = "arcext_kick"
CHANNELS: Final = frozenset({JOBS, RESULTS, CALLS, CALL_DONE, KICK})  # the leader's
FOLLOWER_CHANNELS: Final = CHANNELS - {RESULTS}
#: a job claimed this often without its run ever ending (each run took its node down, or outlived its
#: lease) is not run again: it ends as failed (a poison job, arcext.upgrades.jobs.JobRunner.abandon)
MAX_CLAIMS: Final = 3

Target = tuple[str, str]  # (machine key, lower case; extension)
Job = tuple[MachineKey, str, bool, UpgradeJob | None]  # key, extension, resume, wave template


class NodeEngine(Protocol):
    """What the node needs of the engine (arcext.cluster.engine.ClusterEngine)."""

    def run_job(
        self,
        key: MachineKey,
        ext: str,
        resume: bool,
        reclaimed: bool,
        template: UpgradeJob | None,
        host_done: Callable[[], None] | None = None,
    ) -> JobResult | None: ...

    def abandon_job(self, key: MachineKey, ext: str, template: UpgradeJob | None, claims: int) -> JobResult | None: ...

    def jobs_ended(self, results: list[tuple[MachineKey, str, JobResult | None]]) -> None: ...

    def take_over(self, inflight: set[Target]) -> None: ...

    def step_down(self) -> None: ...

    def execute_call(self, method: str, args: list[Any]) -> Any: ...

    def wake(self) -> None: ...


#: results the leader reads at once
RESULTS_BATCH = 500

#: The leader's read of the jobs' results: the oldest ``RESULTS_BATCH``, taken (deleted) as they are read. The ids go
#: as an array, so the primary key's index finds the rows; ``id IN (SELECT ...)`` was planned as a hash join over a
#: scan of the whole table, dead rows included (tests/test_cluster_plans.py).
TAKE_RESULTS: Final = (
    f"DELETE FROM engine_results WHERE id = ANY(ARRAY(SELECT id FROM engine_results ORDER BY id LIMIT {RESULTS_BATCH}))"
    " RETURNING id, result"
)

#: A batch of jobs' ends (``ClusterNode._send_ends``), one statement: the jobs' rows go (only those this node still
#: holds), their results go to the leader, and a NOTIFY wakes it. Parameters: the ends (``ends_to_json``), their ids
#: as an array, this node's id twice, the channel. The rows are found by the id array (the primary key's index): a
#: join with ``e`` was planned as a hash join over a scan of the whole queue, dead rows included, which took about a
#: fifth of PostgreSQL's CPU in the two-node rollout benchmark (tests/test_cluster_plans.py).
SEND_ENDS: Final = (
    f"WITH e AS ({ENDED_ROWS}),"
    # the rows locked in id order, as the lease renewal locks them: the two cannot deadlock
    " l AS (SELECT j.id FROM engine_jobs j WHERE j.id = ANY(%s::bigint[]) AND j.claimed_by = %s"
    "  ORDER BY j.id FOR UPDATE),"
    " d AS (DELETE FROM engine_jobs j USING l WHERE j.id = l.id RETURNING j.id),"
    " r AS (INSERT INTO engine_results (node, result)"
    "  SELECT %s, e.result FROM e JOIN d ON d.id = e.id ORDER BY e.n RETURNING id)"
    " SELECT pg_notify(%s, '') FROM r LIMIT 1"
)


class _End:
    """A job's end waiting to be sent (``ClusterNode._finish``): its row's id and its result as JSON."""

    __slots__ = ("job_id", "payload", "what")

    def __init__(self, job_id: int, payload: dict[str, Any], what: str) -> None:
        self.job_id = job_id
        self.payload = payload
        self.what = what


class ClusterNode:
    def __init__(self, url: str, db: Database, engine: NodeEngine, settings: ClusterSettings, workers: int) -> None:
        self.url = url
        self.db = db
        self.engine = engine
        self.settings = settings
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.workers = max(1, workers)
        #: free slots worth a claim of their own (_claim_loop): an eighth of many workers; with fewer than 32 a slot's
        #: wait for others costs more throughput than the claims it saves (16 workers: no gain measured, one slot)
        self._gather = self.workers // 8 if self.workers >= 32 else 1
        self.ready = False  # leading, indexes rebuilt: engine calls run here
        self.jobs_run = 0  # jobs this node ran (any node's dispatch)
        self.busy_seconds = 0.0  # worker slots' time taken by jobs: from a job's start to the end of its host work
        self.election_seconds: float | None = None  # the last take-over: lock taken to ready
        self._lease = LeaderLease(url, settings.leader_poll, self._elected, self._deposed)
        self._running = 0  # jobs claimed here and not ended (queued for a worker, running, or ending)
        #: of those, jobs whose host work is over (they record their outcome and send their end): their slots are
        #: claimed for again already (_run), so the next job is there when they end, not a claim's round trip later
        self._ending = 0
        #: threads for twice the slots: a job claimed for an ending job's slot starts while that job's thread still
        #: records its outcome and waits for its end's commit (at most ``workers`` jobs work on hosts at once)
        self._pool = WorkerPool(2 * self.workers, "arcext-job")
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        #: set once the jobs running here have ended: until then their leases are renewed, even while stopping (a
        #: lease let lapse during a graceful stop would have another node reclaim a job still running here)
        self._renew_stop = threading.Event()
        self._claim_wake = threading.Event()
        self._results_wake = threading.Event()
        self._ends: GroupCommit[_End] = GroupCommit(self._send_ends)  # jobs' ends (_finish)
        self.calls = ForwardedCalls(db, settings, engine.execute_call, self._serving_pid)
        self._threads: list[threading.Thread] = []
        self._listening = threading.Event()
        # the loops' heartbeats (arcext.heartbeat), each with the longest it waits between two rounds by design
        self._listen_beat = Heartbeat("cluster listener", 1.0)
        self._claim_beat = Heartbeat("job claims", settings.reclaim_poll)
        self._renew_beat = Heartbeat("job lease renewal", settings.job_lease / 3)
        self._results_beat = Heartbeat("job results", 1.0)

    def heartbeats(self) -> list[Heartbeat]:
        """The heartbeats of this node's loops: its own, its leadership's and its forwarded calls'."""
        own = [self._listen_beat, self._claim_beat, self._renew_beat, self._results_beat]
        return [*own, self._lease.heartbeat, self.calls.heartbeat]

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        for name, target in (
            ("listen", self._listen),
            ("claim", self._claim_loop),
            ("renew", self._renew_loop),
            ("results", self._results_loop),
        ):
            thread = threading.Thread(target=target, name=f"arcext-cluster-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.calls.start()
        self._listening.wait(5)
        self._lease.start()

    def stop(self) -> None:
        """Stop claiming and leading; jobs running here finish (their results go out), queued ones stay."""
        self._stop.set()
        self._lease.stop()
        for event in (self._claim_wake, self._results_wake):
            event.set()
        self.calls.stop()
        self._pool.shutdown(cancel_pending=True)  # running jobs end and report; queued ones are dropped here
        self._renew_stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        try:  # ... and handed back at once, not after their leases expire
            with self.db.connection() as conn:
                # never started here: the claim does not count against the job (rows locked in id order, as below)
                conn.execute(
                    "UPDATE engine_jobs SET claimed_by = NULL, lease_until = NULL, claims = greatest(claims - 1, 0)"
                    " WHERE id IN (SELECT id FROM engine_jobs WHERE claimed_by = %s ORDER BY id FOR UPDATE)",
                    (self.node_id,),
                )
        except psycopg.Error:
            log.warning("Could not hand back the jobs this node had claimed; their leases will expire")

    def resign(self) -> None:
        """Stop leading and trying to (a worker leaving because a loop of its is stuck): the engine steps down, then
        the lock goes, at once rather than after the worker's requests drained. Jobs go on running until ``stop``."""
        self._lease.stop()

    @property
    def leading(self) -> bool:
        return self._lease.leading and self.ready

    def view(self) -> dict[str, Any]:
        """This node as the cluster view shows it."""
        with self._count_lock:
            running = self._running
        return {
            "node": self.node_id,
            "leader": self.leading,
            "jobsRun": self.jobs_run,
            "jobsRunning": running,
            "electionSeconds": self.election_seconds,
            "leaderPollSeconds": self.settings.leader_poll,
            "jobLeaseSeconds": self.settings.job_lease,
        }

    # --- leadership ------------------------------------------------------------------------------
    def _elected(self, backend_pid: int) -> None:
        taken = time.monotonic()
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = conn.execute("SELECT subscription, resource_group, name, ext FROM engine_jobs").fetchall()
            # results of jobs that ended before now are in the extension records recover() reads
            conn.execute("DELETE FROM engine_results")
        inflight = {(MachineKey(s, g, n).lower, str(e)) for s, g, n, e in rows}
        self.engine.take_over(inflight)
        self.ready = True
        self.election_seconds = round(time.monotonic() - taken, 3)
        self._results_wake.set()
        self.calls.wake()

    def _serving_pid(self) -> int | None:
        """The leadership connection's backend pid while this node leads (and is ready), else None."""
        return self._lease.backend_pid if self.leading else None

    def _deposed(self) -> None:
        self.ready = False
        self.engine.step_down()

    # --- notifications ---------------------------------------------------------------------------
    def listened(self) -> frozenset[str]:
        """The channels this node's listener should hear now: a follower does not hear ``RESULTS`` (only the
        leader books results; one wake-up of the listener per batch of ends in the cluster, for nothing)."""
        return CHANNELS if self.leading else FOLLOWER_CHANNELS

    def _listen(self) -> None:
        """The listener: every notification handed on as it comes; once a second (``notifies``' timeout), the
        channels it listens on made to match ``listened()`` (so a new leader hears results within a second; its
        results loop looks at the table every second besides)."""
        conn: Connection | None = None
        heard: set[str] = set()
        while not self._stop.is_set():
            self._listen_beat.beat()
            try:
                if conn is None:
                    conn = dedicated(self.url)
                    heard = set()
                    self._listen_to(conn, heard)
                    self._listening.set()
                    for event in (self._claim_wake, self._results_wake):
                        event.set()  # whatever was announced while this node was not listening
                    self.calls.wake()
                elif heard != self.listened():
                    if RESULTS not in heard:
                        self._results_wake.set()  # results announced before it listened
                    self._listen_to(conn, heard)
                for note in conn.notifies(timeout=1.0):
                    self._listen_beat.beat()
                    self._on_notify(note.channel, note.payload)
            except psycopg.Error as exc:
                log.warning("Cluster listener connection failed (%s); reconnecting", type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.5)
        self._listen_beat.rest()
        if conn is not None:
            conn.close()

    def _listen_to(self, conn: Connection, heard: set[str]) -> None:
        """LISTEN to the channels of ``listened()`` not in ``heard``, UNLISTEN the others; ``heard`` updated."""
        want = self.listened()
        for channel in sorted(want - heard):
            conn.execute(f"LISTEN {channel}")
        for channel in sorted(heard - want):
            conn.execute(f"UNLISTEN {channel}")
        heard.clear()
        heard.update(want)

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == JOBS:
            self._claim_wake.set()
        elif channel == RESULTS:
            self._results_wake.set()
        elif channel in (CALLS, CALL_DONE):
            self.calls.on_notify(channel, payload)
        elif channel == KICK and self.leading:
            self.engine.wake()

    def kick(self) -> None:
        """Wake the leader's scheduler (the manual clock moved)."""
        with self.db.connection() as conn:
            conn.execute("SELECT pg_notify(%s, '')", (KICK,))

    # --- jobs: the leader's side -----------------------------------------------------------------
    def enqueue(self, jobs: list[Job]) -> None:
        """Queue jobs for any node to claim (one statement: the rows as one JSON array, and the NOTIFY)."""
        with self.db.connection() as conn:
            conn.execute(
                "WITH i AS (INSERT INTO engine_jobs (subscription, resource_group, name, ext, resume, template)"
                f"  {QUEUED_ROWS}"
                "  ON CONFLICT (subscription, resource_group, name, ext) DO NOTHING)"
                " SELECT pg_notify(%s, '')",
                (Jsonb(jobs_to_json(jobs)), JOBS),
            )

    # --- jobs: every node's side -----------------------------------------------------------------
    def _claim(self, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` claimable jobs, one statement: each row ends with whether it is reclaimed, its
        claims so far (this one included), on a shared manual clock the clock as the claim saw it, and the
        job's machine as the claim saw it (its document as text, its row version, the catalog's version: the
        job's first write starts from it instead of reading it, ``Database.offer_row``) and its simulated host's
        row (arcext.cluster.simhosts; none when the host has none yet), which its first host operation starts from."""
        clock = CLOCK_COLUMN if self._shared_clock() is not None else "NULL::timestamptz"
        with self.db.connection() as conn:
            return conn.execute(
                "WITH c AS (SELECT id, claimed_by, subscription, resource_group, name FROM engine_jobs"
                # the limit written in: with a parameter there, the server planned the statement again at every call
                # (a generic plan's guess of the limit costs more than each call's own plan); one prepared
                # statement per limit instead, each planned once
                "  WHERE claimed_by IS NULL OR lease_until < now()"
                f"  ORDER BY id LIMIT {int(limit)} FOR UPDATE SKIP LOCKED)"
                " UPDATE engine_jobs j SET claimed_by = %s, lease_until = now() + make_interval(secs => %s),"
                "  claims = j.claims + 1"
                " FROM c LEFT JOIN machines m ON m.subscription = lower(c.subscription)"
                "  AND m.resource_group = lower(c.resource_group) AND m.name = lower(c.name)"
                " LEFT JOIN simhosts h ON h.key = lower(c.subscription || '/' || c.resource_group || '/' || c.name)"
                " WHERE j.id = c.id"
                " RETURNING j.id, j.subscription, j.resource_group, j.name, j.ext, j.resume, j.template,"
                f"  c.claimed_by IS NOT NULL, j.claims, {clock}, m.doc::text, m.xmin::text, {CATALOG_VERSION},"
                "  coalesce(h.doc::text, 'null'), h.xmin::text",
                (self.node_id, self.settings.job_lease),
            ).fetchall()

    def _shared_clock(self) -> SharedManualClock | None:
        clock = getattr(self.engine, "clock", None)
        return clock if isinstance(clock, SharedManualClock) else None

    def _free(self) -> int:
        """Slots free for a claim: not taken by a claimed job, or taken by one whose host work is over.

        A slot is claimed for as soon as its job's host work is over, while the job records its outcome and its end
        is committed, so the claim's round trip overlaps those writes (a slot stood idle for the writes and then the
        claim, one after the other: about 3 ms per job at 16 workers, 5% of a 50 ms host operation)."""
        with self._count_lock:
            return self.workers - self._running + self._ending

    def _claim_loop(self) -> None:
        """Claim up to the free worker slots whenever there may be something to claim: woken by new jobs
        (``JOBS``), by a job's end that frees the first slot or makes ``_gather`` free (``_run``: not by every
        end, each wake-up of this thread costs CPU), and every ``reclaim_poll`` for expired leases. With fewer
        than ``_gather`` slots free it waits ``claim_gather`` for more first, so that one claim fills them."""
        while not self._stop.is_set():
            self._claim_beat.beat()
            self._claim_wake.clear()
            free = self._free()
            if 0 < free < self._gather:
                self._claim_wake.wait(self.settings.claim_gather)  # cut short once ``_gather`` are free
                self._claim_wake.clear()
                free = self._free()
            claimed: list[tuple[Any, ...]] = []
            if free > 0:
                try:
                    claimed = self._claim(free)
                except psycopg.Error as exc:
                    log.warning("Claiming jobs failed (%s)", type(exc).__name__)
            for row in claimed:
                with self._count_lock:
                    self._running += 1
                try:
                    self._pool.submit(self._run, row)
                except RuntimeError:  # shutting down: the lease will expire, another node takes it
                    self._claim_beat.rest()
                    return
            if claimed and not self._stop.is_set():
                continue  # there may be more (or, full, a job's end wakes the loop)
            self._claim_wake.wait(self.settings.reclaim_poll)
        self._claim_beat.rest()

    def _run(self, row: tuple[Any, ...]) -> None:
        began = time.perf_counter()
        job_id, sub, group, name, ext, resume, template, reclaimed, claims, moment, doc, xmin, catalog = row[:13]
        host_doc, host_xmin = row[13:]
        key = MachineKey(sub, group, name)
        result: JobResult | None = None
        clock = self._shared_clock()
        released = False

        def release() -> None:
            """The job's slot is free for a claim: its host work is over (it only records its outcome and sends its
            end now), or its run is (``_free``)."""
            nonlocal released
            if released:
                return
            released = True
            with self._count_lock:
                self._ending += 1
                self.busy_seconds += time.perf_counter() - began
                free = self.workers - self._running + self._ending
            if free in (1, self._gather):  # (_claim_loop)
                self._claim_wake.set()

        if doc is not None:
            self.db.offer_row(key.lower, SeenRow(doc, xmin, int(catalog)))
        self.db.offer_row(offered_key(key.lower), SeenRow(host_doc, host_xmin or "", 0))
        try:
            scope: AbstractContextManager[None] = clock.pinned(moment) if clock is not None else nullcontext()
            with scope:
                if int(claims) > MAX_CLAIMS:
                    # claimed that often, it ended no run: its run takes its node down (a poison job)
                    log.error("Giving up the job for %s on %s: claimed %d times, never finished", ext, name, claims)
                    result = self.engine.abandon_job(key, ext, template, int(claims) - 1)
                else:
                    if reclaimed:
                        log.info("Reconciling the job for %s on %s whose node stopped renewing its lease", ext, name)
                    result = self.engine.run_job(key, ext, bool(resume), bool(reclaimed), template, release)
        except Exception:
            log.exception("Upgrade job for %s on %s crashed", ext, name)
        finally:
            self.db.forget_rows()
            release()
            self._finish(int(job_id), key, ext, result)
            with self._count_lock:
                self._running -= 1
                self._ending -= 1
                self.jobs_run += 1

    def _finish(self, job_id: int, key: MachineKey, ext: str, result: JobResult | None) -> None:
        """The job's row goes and its result goes to the leader, committed before this returns (retried while the
        database is away; if the lease was lost meanwhile, the node that took it over reports instead).

        Group commit: the ends of the jobs that finish while one statement is on its way go together in the next
        one (a worker whose end is pending sends the batch, the others wait for it), one statement and one commit
        for them all instead of one each."""
        end = _End(job_id, result_to_json(key, ext, result), f"{ext} on {key.name}")
        self._ends.submit(end)

    def _send_ends(self, batch: list[_End]) -> None:
        for attempt in itertools.count():
            try:
                with self.db.connection() as conn:
                    conn.execute(
                        SEND_ENDS,
                        (
                            Jsonb(ends_to_json((e.job_id, e.payload) for e in batch)),
                            [e.job_id for e in batch],
                            self.node_id,
                            self.node_id,
                            RESULTS,
                        ),
                    )
                return
            except psycopg.Error as exc:
                if self._stop.is_set() or attempt > 600:
                    for end in batch:
                        log.error("Could not report the end of a job for %s", end.what)
                    return
                log.warning("Reporting %d jobs' ends failed (%s); retrying", len(batch), type(exc).__name__)
                time.sleep(0.5)

    def _renew_loop(self) -> None:
        period = self.settings.job_lease / 3
        self._renew_beat.beat()
        while not self._renew_stop.wait(period):
            self._renew_beat.beat()
            with self._count_lock:
                running = self._running
            if not running:
                continue
            try:
                self.renew_leases()
            except psycopg.Error as exc:
                log.warning("Renewing job leases failed (%s)", type(exc).__name__)
        self._renew_beat.rest()

    def renew_leases(self) -> None:
        """Extend the lease of every job this node holds (its rows locked in id order, as a batch of jobs' ends
        locks them: the two cannot deadlock)."""
        with self.db.connection() as conn:
            conn.execute(
                "UPDATE engine_jobs SET lease_until = now() + make_interval(secs => %s) WHERE id IN"
                " (SELECT id FROM engine_jobs WHERE claimed_by = %s ORDER BY id FOR UPDATE)",
                (self.settings.job_lease, self.node_id),
            )

    # --- results: the leader's side --------------------------------------------------------------
    def _results_loop(self) -> None:
        while not self._stop.is_set():
            self._results_beat.beat()
            woken = self._results_wake.wait(1.0)
            if not self.leading:
                self._results_wake.clear()
                continue
            if woken and self._stop.wait(self.settings.results_gather):
                break  # the results that come together are read together; stopping: nothing more to book
            # cleared before the read: a result's NOTIFY that comes after it wakes the next round
            self._results_wake.clear()
            try:
                while self.leading:
                    self._results_beat.beat()  # (a stream of full batches keeps the loop here)
                    with self.db.connection() as conn:
                        rows = conn.execute(TAKE_RESULTS).fetchall()
                    if rows:
                        results = [result_from_json(data) for _id, data in sorted(rows, key=lambda r: int(r[0]))]
                        self.engine.jobs_ended(results)  # booked in order, their records read together
                    if len(rows) < RESULTS_BATCH:
                        break  # all read (a result written since has woken the next round)
            except psycopg.Error as exc:
                log.warning("Reading job results failed (%s)", type(exc).__name__)
        self._results_beat.rest()

    # --- engine calls (arcext.cluster.calls) -----------------------------------------------------
    def call(self, method: str, args: list[Any]) -> Any:
        """Run an engine method on the leader and return its result (its ArmError raised here); 503 when no
        leader takes it within ``leader_wait`` or the leader that took it goes away."""
        return self.calls.call(method, args)
