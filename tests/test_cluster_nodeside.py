"""A node's own costs per job, and what they must not change: the jobs' ends as one JSON parameter, the
channels a follower listens on (not the results, which only the leader books) and a new leader hearing them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from arcext.cluster.node import RESULTS, ClusterNode, Job
from arcext.cluster.schema import migrate_cluster
from arcext.cluster.settings import ClusterSettings
from arcext.cluster.wire import ENDED_ROWS, ends_to_json, result_from_json, result_to_json
from arcext.ids import MachineKey
from arcext.store.postgres.db import Database
from arcext.upgrades.jobs import JobResult
from test_cluster_parts import SETTINGS, Recorder, wait_for


def test_ends_travel_as_one_json_array_in_order_quotes_and_backslashes_intact(db: Database) -> None:
    key = MachineKey("Sub", "RG", 'm"1\\')
    tricky = JobResult(key, "ama", "Failed", {"message": 'quote " backslash \\ brace { comma , \u00e9', "n": 3})
    ends = [(7, result_to_json(key, "ama", tricky)), (3, result_to_json(key, "ama", None))]
    with db.connection() as conn:
        rows = conn.execute(f"SELECT id, result, n FROM ({ENDED_ROWS}) AS e ORDER BY n", (Jsonb(ends_to_json(ends)),))
        got = rows.fetchall()
    assert [(row[0], row[2]) for row in got] == [(7, 1), (3, 2)]
    assert result_from_json(got[0][1]) == (key, "ama", tricky)
    assert result_from_json(got[1][1]) == (key, "ama", None)


class Heard:
    """The channels a node's listener handed on (wrapping its ``_on_notify``)."""

    def __init__(self, node: ClusterNode) -> None:
        self.channels: list[str] = []
        self._lock = threading.Lock()
        own = node._on_notify

        def on_notify(channel: str, payload: str) -> None:
            with self._lock:
                self.channels.append(channel)
            own(channel, payload)

        node._on_notify = on_notify  # type: ignore[method-assign]

    def count(self, channel: str) -> int:
        with self._lock:
            return self.channels.count(channel)


def notify_results(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, '')", (RESULTS,))


def test_a_follower_does_not_listen_for_results_and_a_new_leader_does(pg_url: str, db: Database) -> None:
    engines = [Recorder(), Recorder()]
    nodes = [ClusterNode(pg_url, db, engine, SETTINGS, workers=2) for engine in engines]
    heard = [Heard(node) for node in nodes]
    nodes[0].start()
    wait_for(lambda: nodes[0].leading)
    nodes[1].start()
    stopped = [False, False]
    try:
        time.sleep(1.5)  # the leader's listener has matched its channels to its leading (within a second)
        notify_results(pg_url)
        wait_for(lambda: heard[0].count(RESULTS) >= 1)
        time.sleep(0.3)
        assert heard[1].count(RESULTS) == 0, "a follower is not woken by results"
        # jobs still reach both nodes, and their results the leader
        jobs: list[Job] = [(MachineKey("sub", "rg", f"m{i:02d}"), "ama", False, None) for i in range(12)]
        nodes[1].enqueue(jobs)
        wait_for(lambda: len(engines[0].ended) == 12)
        assert heard[1].count(RESULTS) == 0
        nodes[0].stop()  # the follower takes over: it books results from now on
        stopped[0] = True
        wait_for(lambda: nodes[1].leading)
        nodes[1].enqueue([(MachineKey("sub", "rg", "after"), "ama", False, None)])
        wait_for(lambda: ("after", "ama", "Succeeded") in engines[1].ended, timeout=5)
        deadline = time.monotonic() + 3
        while heard[1].count(RESULTS) == 0 and time.monotonic() < deadline:
            notify_results(pg_url)  # once its listener listens for them, the new leader hears them
            time.sleep(0.1)
        assert heard[1].count(RESULTS) >= 1
    finally:
        for node, done in zip(nodes, stopped, strict=True):
            if not done:
                node.stop()


class Counted:
    """Wraps a node's ``_claim``: the number of claims and of rows they returned."""

    def __init__(self, node: ClusterNode) -> None:
        self.claims = 0
        self.rows = 0
        own = node._claim

        def claim(limit: int) -> list[tuple[Any, ...]]:
            rows = own(limit)
            if rows:
                self.claims += 1
                self.rows += len(rows)
            return rows

        node._claim = claim  # type: ignore[method-assign]


def test_a_busy_node_claims_several_jobs_at_once_and_runs_each_once(pg_url: str, db: Database) -> None:
    engine = Recorder(job_seconds=0.03)
    node = ClusterNode(pg_url, db, engine, SETTINGS, workers=32)  # claims once 4 slots are free, or 3 ms after one
    counted = Counted(node)
    node.start()
    try:
        # queued once it leads: a node elected after some jobs ended drops their results (its engine reads them from the
        # extensions' records, which this test's engine has not), and the test would wait for them for ever
        wait_for(lambda: node.leading)
        node.enqueue([(MachineKey("sub", "rg", f"m{i:03d}"), "ama", False, None) for i in range(300)])
        wait_for(lambda: len(engine.ended) == 300, timeout=30)
        assert sorted(name for name, *_ in engine.ran) == [f"m{i:03d}" for i in range(300)], "each ran once"
        assert counted.rows == 300
        # each job's end freed a slot: one claim per end would be 300 claims (less the first full one)
        assert counted.claims <= 300 / 2, counted.claims
    finally:
        node.stop()


def test_a_slot_freed_alone_is_filled_at_once_not_at_the_next_poll(pg_url: str, db: Database) -> None:
    slow = ClusterSettings(leader_poll=0.2, job_lease=5.0, leader_wait=1.0, reclaim_poll=30.0)
    engine = Recorder(job_seconds=0.0)
    started: dict[str, float] = {}
    ran = engine.run_job

    def run_job(
        key: MachineKey, ext: str, resume: bool, reclaimed: bool, template: Any, host_done: Any = None
    ) -> JobResult | None:
        started[key.name] = time.monotonic()
        time.sleep(1.5 if key.name.startswith("long") else 0.3 if key.name == "short" else 0.0)
        return ran(key, ext, resume, reclaimed, template)

    engine.run_job = run_job  # type: ignore[method-assign]
    node = ClusterNode(pg_url, db, engine, slow, workers=32)  # claims once 4 slots are free, or 3 ms after one
    node.enqueue([(MachineKey("sub", "rg", "short"), "ama", False, None)])
    node.enqueue([(MachineKey("sub", "rg", f"long{i:02d}"), "ama", False, None) for i in range(31)])
    node.start()
    try:
        wait_for(lambda: len(started) == 32)
        node.enqueue([(MachineKey("sub", "rg", "next"), "ama", False, None)])  # no slot free: it waits
        wait_for(lambda: "next" in started, timeout=5)
        # the short job's end freed one slot, the long ones still ran: the queued job started then, not 30 s later
        assert started["next"] - started["short"] < 0.3 + 0.25
    finally:
        node.stop()


def test_jobs_ends_and_lease_renewals_of_one_node_do_not_deadlock(pg_url: str, db: Database) -> None:
    """A batch of jobs' ends and the node's lease renewal lock the same rows: both lock them in id order, so ends
    sent in any order while the leases are renewed over and over never meet PostgreSQL's deadlock detector (with
    the ends' rows locked in the batch's order and the renewal's in the table's, they did)."""
    from arcext.cluster.node import _End

    node = ClusterNode(pg_url, db, Recorder(), SETTINGS, workers=4)  # not started: the test drives it
    key = MachineKey("sub", "rg", "m")
    with db.connection() as conn:
        ids = [
            int(r[0])
            for r in conn.execute(
                "INSERT INTO engine_jobs (subscription, resource_group, name, ext, claimed_by, lease_until)"
                " SELECT 'sub', 'rg', 'm' || n, 'ama', %s, now() + interval '1 hour' FROM generate_series(1, 1200) n"
                " RETURNING id",
                (node.node_id,),
            )
        ]
        # a fleet's queue around them (another node's claims), as in a rollout: the ends then find their rows by
        # id, one by one in the batch's order, and the renewal by a scan in the table's order
        conn.execute(
            "INSERT INTO engine_jobs (subscription, resource_group, name, ext, claimed_by, lease_until)"
            " SELECT 'sub', 'rg', 'q' || n, 'ama', 'other-node', now() + interval '1 hour'"
            " FROM generate_series(1, 20000) n"
        )
        conn.execute("ANALYZE engine_jobs")
        (deadlocks_before,) = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone() or (0,)
    done = threading.Event()

    def renew() -> None:
        while not done.is_set():
            node.renew_leases()

    renewers = [threading.Thread(target=renew) for _ in range(2)]
    for thread in renewers:
        thread.start()
    try:
        batches = [sorted(ids[i : i + 20], reverse=True) for i in range(0, len(ids), 20)]  # against the table's order
        senders = [
            threading.Thread(
                target=node._send_ends,
                args=([_End(job_id, result_to_json(key, "ama", None), "ama on m") for job_id in batch],),
            )
            for batch in batches
        ]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(timeout=60)
    finally:
        done.set()
        for thread in renewers:
            thread.join(timeout=10)
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM engine_jobs WHERE claimed_by = %s", (node.node_id,)).fetchone() == (
            0,
        )
        assert conn.execute("SELECT count(*) FROM engine_results").fetchone() == (len(ids),)
        time.sleep(0.6)  # the statistics collector's report (stats_fetch_consistency: snapshot per transaction)
        (deadlocks_after,) = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone() or (0,)
    assert deadlocks_after == deadlocks_before


def test_the_leader_reads_results_that_come_together_in_one_batch(pg_url: str, db: Database) -> None:
    """Woken by a result, the leader waits ``results_gather`` before it reads: results written meanwhile are read
    and booked together (one statement and one batch), and none is left behind or booked twice."""

    class Batches(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def jobs_ended(self, results: list[Any]) -> None:
            self.batches.append(len(results))
            super().jobs_ended(results)

    engine = Batches()
    settings = ClusterSettings(leader_poll=0.2, job_lease=1.5, leader_wait=1.0, reclaim_poll=0.2, results_gather=0.3)
    node = ClusterNode(pg_url, db, engine, settings, workers=1)
    node.start()
    try:
        wait_for(lambda: node.leading)
        time.sleep(1.5)  # its listener has matched its channels to its leading (within a second): it hears results
        for i in range(8):  # eight jobs ending 10 ms apart, each with its NOTIFY, as other nodes' ends come
            with db.connection() as conn:
                conn.execute(
                    "INSERT INTO engine_results (node, result) VALUES ('other-node', %s)",
                    (Jsonb(result_to_json(MachineKey("sub", "rg", f"m{i}"), "ama", None)),),
                )
                conn.execute("SELECT pg_notify(%s, '')", (RESULTS,))
            time.sleep(0.01)
        wait_for(lambda: len(engine.ended) == 8)
        time.sleep(0.5)
        assert engine.batches == [8], engine.batches
        assert [name for name, _ext, _outcome in engine.ended] == [f"m{i}" for i in range(8)]
    finally:
        node.stop()


class HostTimed(Recorder):
    """An engine whose jobs work on the host for 0.1 s, say so through ``host_done`` when ``signals`` (as
    JobRunner.run does), then record their outcome for ``recording`` seconds; it notes when each job started and
    when its host work ended, and the most jobs on a host at once."""

    def __init__(self, recording: float, signals: bool) -> None:
        super().__init__(job_seconds=0.0)
        self.recording = recording
        self.signals = signals
        self.started: dict[str, float] = {}
        self.host_over: dict[str, float] = {}
        self.on_host = [0, 0]  # now, most at once

    def run_job(
        self,
        key: MachineKey,
        ext: str,
        resume: bool,
        reclaimed: bool,
        template: Any,
        host_done: Callable[[], None] | None = None,
    ) -> JobResult | None:
        with self.lock:
            self.started[key.name] = time.monotonic()
            self.on_host[0] += 1
            self.on_host[1] = max(self.on_host)
        time.sleep(0.1)  # the host operation
        with self.lock:
            self.on_host[0] -= 1
            self.host_over[key.name] = time.monotonic()
        if self.signals and host_done is not None:
            host_done()
        time.sleep(self.recording)  # recording the outcome
        return super().run_job(key, ext, resume, reclaimed, template)


def run_two_jobs(node: ClusterNode, engine: HostTimed) -> float:
    """Two jobs on a node of one worker; the seconds from the first's host work's end to the second's start. Two:
    the node has threads for twice its slots, so the second starts on the other thread (a third would wait for a
    thread while both are still ending). Queued once the node leads (results of jobs ended before are dropped)."""
    node.start()
    try:
        wait_for(lambda: node.leading)
        node.enqueue([(MachineKey("sub", "rg", f"m{i}"), "ama", False, None) for i in range(2)])
        wait_for(lambda: len(engine.ended) == 2, timeout=15)
    finally:
        node.stop()
    assert sorted(engine.started, key=engine.started.__getitem__) == ["m0", "m1"]
    assert [outcome for _name, _ext, outcome in engine.ended] == ["Succeeded", "Succeeded"]
    assert engine.on_host[1] == 1, "one worker: one job works on a host at a time"
    return engine.started["m1"] - engine.host_over["m0"]


def test_a_jobs_slot_is_claimed_for_while_its_end_is_committed(pg_url: str, db: Database) -> None:
    """A job's slot is claimed for as soon as its run is over: the next job starts while the ended job's end is still
    being committed (the claim and the end overlap)."""
    engine = HostTimed(recording=0.0, signals=False)
    node = ClusterNode(pg_url, db, engine, SETTINGS, workers=1)
    send = node._ends._send

    def slow_send(batch: list[Any]) -> None:
        time.sleep(1.0)  # an end's commit that takes long (a busy database)
        send(batch)

    node._ends._send = slow_send  # type: ignore[method-assign]
    gap = run_two_jobs(node, engine)
    assert gap < 0.6, f"without the overlap the second job waited for the first's 1 s end (and the claim): {gap}"


def test_the_claim_is_planned_once_not_at_every_call(pg_url: str) -> None:
    """The claim's statement (with its limit written in) gets the server's generic plan once prepared; with the limit
    as a parameter every call was planned again (each call's own plan looked cheaper than a generic one)."""
    one = Database(pg_url, max_size=1)  # one connection: its prepared statements are the ones the claims made
    try:
        with one.connection() as conn:
            migrate_cluster(conn)
            conn.execute("DELETE FROM engine_jobs")
        node = ClusterNode(pg_url, one, Recorder(), SETTINGS, workers=4)  # not started: the test claims
        node.enqueue([(MachineKey("sub", "rg", f"m{i:03d}"), "ama", False, None) for i in range(40)])
        for _ in range(14):  # psycopg prepares a statement at its 6th run; the server plans generically from the 6th
            assert len(node._claim(2)) == 2
        with one.connection() as conn:
            plans = conn.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%%engine_jobs%%'"
                " AND statement LIKE '%%SKIP LOCKED%%'"
            ).fetchall()
        assert plans, "the claim was prepared"
        assert sum(generic for generic, _custom in plans) >= 1, plans
    finally:
        one.close()


def test_a_jobs_slot_is_claimed_for_once_its_host_work_is_over(pg_url: str, db: Database) -> None:
    """The engine tells the node when a job's host work is over (``host_done``): the next job is claimed and starts
    while the first still records its outcome."""
    engine = HostTimed(recording=1.0, signals=True)
    gap = run_two_jobs(ClusterNode(pg_url, db, engine, SETTINGS, workers=1), engine)
    assert gap < 0.6, f"without the signal the second job waited for the first's 1 s of recording (and more): {gap}"
