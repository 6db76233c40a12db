"""The cluster's parts in one process, on a scratch database: the leadership lock, the job claim with leases,
results to the leader, forwarded engine calls, and the wire format. The engine behind the nodes is a small
recording one (``Recorder``), so that each part's own promise is what is checked; the whole (three
`arcext serve` processes) is tests/test_multinode.py."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from arcext import errors
from arcext.cluster.leader import LeaderLease, leader_backend
from arcext.cluster.node import ClusterNode, Job, Target
from arcext.cluster.settings import ClusterSettings
from arcext.cluster.wire import decode, encode, result_from_json, result_to_json
from arcext.hosts.base import ExtensionSpec
from arcext.ids import MachineKey
from arcext.records import UpgradeJob
from arcext.store.postgres.db import Database
from arcext.upgrades.jobs import JobResult

SETTINGS = ClusterSettings(leader_poll=0.2, job_lease=1.5, leader_wait=1.0, reclaim_poll=0.2)


class Recorder:
    """An engine that records what the node asks of it."""

    def __init__(self, job_seconds: float = 0.02) -> None:
        self.job_seconds = job_seconds
        self.ran: list[tuple[str, str, bool, bool]] = []
        self.ended: list[tuple[str, str, str | None]] = []
        self.took_over: list[set[Target]] = []
        self.calls: list[str] = []  # engine calls executed here, in order
        self.running_calls = 0
        self.most_calls_at_once = 0
        self.abandoned: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def run_job(
        self,
        key: MachineKey,
        ext: str,
        resume: bool,
        reclaimed: bool,
        template: UpgradeJob | None,
        host_done: Callable[[], None] | None = None,
    ) -> JobResult | None:
        time.sleep(self.job_seconds)
        with self.lock:
            self.ran.append((key.name, ext, resume, reclaimed))
        return JobResult(key, ext, "Succeeded", {"toVersion": "1.1.0"})

    def abandon_job(self, key: MachineKey, ext: str, template: UpgradeJob | None, claims: int) -> JobResult | None:
        with self.lock:
            self.abandoned.append((key.name, ext, claims))
        return JobResult(key, ext, "RollbackFailed", {"error": "UpgradeJobCrashed"})

    def jobs_ended(self, results: list[tuple[MachineKey, str, JobResult | None]]) -> None:
        with self.lock:
            self.ended += [(key.name, ext, result.outcome if result else None) for key, ext, result in results]

    def take_over(self, inflight: set[Target]) -> None:
        self.took_over.append(inflight)

    def step_down(self) -> None:
        pass

    def execute_call(self, method: str, args: list[Any]) -> Any:
        with self.lock:
            self.calls.append(method)
        if method == "slow":  # sleeps ``args[0]`` seconds
            with self.lock:
                self.running_calls += 1
                self.most_calls_at_once = max(self.most_calls_at_once, self.running_calls)
            time.sleep(float(args[0]))
            with self.lock:
                self.running_calls -= 1
            return "slept"
        if method == "reconsider":
            key, ext = args
            assert isinstance(key, MachineKey)
            return {"machine": key.name, "extension": ext}
        raise errors.ArmError(409, "Conflict", f"no {method} here")

    def wake(self) -> None:
        pass


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_wire_format_round_trips() -> None:
    key = MachineKey("sub", "rg", "Machine-1")
    args = [key, {"ama": {"targetVersion": "1.1.0"}}, "someone"]
    assert decode(encode(args)) == args
    assert isinstance(decode(encode(args))[0], MachineKey)
    result = JobResult(key, "ama", "Succeeded", {"toVersion": "1.1.0"})
    assert result_from_json(result_to_json(key, "ama", result)) == (key, "ama", result)
    assert result_from_json(result_to_json(key, "ama", None)) == (key, "ama", None)


def test_one_leader_at_a_time_and_a_follower_takes_over_within_the_poll(pg_url: str) -> None:
    elected: list[str] = []

    def make_lease(name: str) -> LeaderLease:
        return LeaderLease(pg_url, 0.2, lambda _pid: elected.append(name), lambda: None)

    leases = {name: make_lease(name) for name in ("a", "b")}
    for lease in leases.values():
        lease.start()
    try:
        wait_for(lambda: len(elected) == 1)
        time.sleep(0.5)  # several polls: the other never leads meanwhile
        assert len(elected) == 1 and sum(lease.leading for lease in leases.values()) == 1
        leader, follower = elected[0], "b" if elected[0] == "a" else "a"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert leader_backend(conn) == leases[leader].backend_pid
        stopped = time.monotonic()
        leases[leader].stop()  # its session ends: the lock is free
        wait_for(lambda: leases[follower].leading)
        assert time.monotonic() - stopped < 0.2 + 0.5
        assert elected == [leader, follower]
    finally:
        for lease in leases.values():
            lease.stop()


def test_a_graceful_stop_steps_down_while_it_still_holds_the_lock(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's last pass ends (``on_deposed``) before the lock goes: no other node schedules meanwhile. A step
    down that does not end (a stuck pass) lets go of the lock after ``STEP_DOWN_WAIT`` all the same."""
    holders: list[int | None] = []
    release = threading.Event()

    look = psycopg.connect(pg_url, autocommit=True)  # made before: connecting is not part of the step down

    def deposed() -> None:
        holders.append(leader_backend(look))
        release.wait(10)

    monkeypatch.setattr("arcext.cluster.leader.STEP_DOWN_WAIT", 1.5)
    for stuck in (False, True):
        holders.clear()
        if not stuck:
            release.set()
        else:
            release.clear()
        lease = LeaderLease(pg_url, 0.2, lambda _pid: None, deposed)
        lease.start()
        try:
            wait_for(lambda lease=lease: lease.leading)  # type: ignore[misc]
            pid = lease.backend_pid
            started = time.monotonic()
            lease.stop()
            took = time.monotonic() - started
            assert holders == [pid], "stepping down ran while this node still held the lock"
            with psycopg.connect(pg_url, autocommit=True) as conn:
                wait_for(lambda conn=conn: leader_backend(conn) is None)  # and then it went (the server ends it)
            assert (took >= 1.5) if stuck else (took < 1.5), took
        finally:
            release.set()
            lease.stop()
    look.close()


def test_a_stop_during_a_take_over_waits_for_it_and_then_steps_down(pg_url: str) -> None:
    """A stop asked for while an election's take-over runs (its recovery can take a while on a large fleet) waits for
    it, then steps down: it never lets the lock go under the take-over, which would then lead without it."""
    taking_over, finish = threading.Event(), threading.Event()
    deposed: list[bool] = []

    def elected(_pid: int) -> None:
        taking_over.set()
        finish.wait(10)

    lease = LeaderLease(pg_url, 0.2, elected, lambda: deposed.append(True))
    starting = threading.Thread(target=lease.start)  # the first try runs in the caller's thread
    starting.start()
    try:
        assert taking_over.wait(10)
        stopping = threading.Thread(target=lease.stop)
        stopping.start()
        stopping.join(0.5)
        assert stopping.is_alive(), "the stop did not wait for the take-over"
        finish.set()
        stopping.join(10)
        starting.join(10)
        assert not lease.leading and deposed == [True]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            wait_for(lambda: leader_backend(conn) is None)
    finally:
        finish.set()
        lease.stop()


def test_a_stop_gives_up_on_a_take_over_that_does_not_end_and_the_take_over_steps_down_after(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A take-over stuck (on the engine's lock, say) does not hold a stop for ever: after ``STEP_DOWN_WAIT`` the stop
    ends the session, so the others may lead; when the take-over ends after all, it steps down, never leading."""
    monkeypatch.setattr("arcext.cluster.leader.STEP_DOWN_WAIT", 0.5)
    taking_over, finish = threading.Event(), threading.Event()
    deposed: list[bool] = []

    def elected(_pid: int) -> None:
        taking_over.set()
        finish.wait(10)

    lease = LeaderLease(pg_url, 0.2, elected, lambda: deposed.append(True))
    starting = threading.Thread(target=lease.start)
    starting.start()
    try:
        assert taking_over.wait(10)
        started = time.monotonic()
        lease.stop()
        assert 0.5 <= time.monotonic() - started < 5
        with psycopg.connect(pg_url, autocommit=True) as conn:
            # the lock went with the session the stop cut (the take-over would end its session only at its end)
            wait_for(lambda: leader_backend(conn) is None, timeout=2)
        finish.set()
        starting.join(10)
        assert not lease.leading and deposed == [True]
    finally:
        finish.set()
        starting.join(10)


def test_jobs_are_claimed_once_across_nodes_and_their_results_reach_the_leader(pg_url: str, db: Database) -> None:
    engines = [Recorder(), Recorder()]
    nodes = [ClusterNode(pg_url, db, engine, SETTINGS, workers=3) for engine in engines]
    for node in nodes:
        node.start()
    try:
        wait_for(lambda: sum(n.leading for n in nodes) == 1)
        leader = next(i for i, n in enumerate(nodes) if n.leading)
        jobs: list[Job] = [(MachineKey("sub", "rg", f"m{i:02d}"), "ama", False, None) for i in range(40)]
        nodes[1 - leader].enqueue(jobs)  # whoever queues, every node claims
        wait_for(lambda: len(engines[leader].ended) == 40)
        # a node counts a job it ran once the job's end is written, which is what brought its result to the leader:
        # the last count may come a moment after the leader booked the last result
        wait_for(lambda: sum(n.jobs_run for n in nodes) >= 40)
        ran = [name for engine in engines for name, *_ in engine.ran]
        assert sorted(ran) == sorted(f"m{i:02d}" for i in range(40)), "every job ran once"
        assert all(engine.ran for engine in engines), "both nodes ran jobs"
        assert not engines[1 - leader].ended, "results go to the leader only"
        assert sum(n.jobs_run for n in nodes) == 40
        with db.connection() as conn:
            assert conn.execute("SELECT count(*) FROM engine_jobs").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM engine_results").fetchone() == (0,)
    finally:
        for node in nodes:
            node.stop()


def test_a_target_is_queued_once_however_often_it_is_enqueued(pg_url: str, db: Database) -> None:
    """A batch queued again (its commit's answer lost) or by a deposed leader adds no second job for a target."""
    node = ClusterNode(pg_url, db, Recorder(), SETTINGS, workers=1)  # not started: nothing claims
    jobs: list[Job] = [(MachineKey("sub", "rg", f"m{i}"), "ama", False, None) for i in range(3)]
    node.enqueue(jobs)
    node.enqueue(jobs + [(MachineKey("sub", "rg", "m9"), "ama", True, None)])
    with db.connection() as conn:
        rows = conn.execute("SELECT name, ext, resume FROM engine_jobs ORDER BY name").fetchall()
    assert rows == [("m0", "ama", False), ("m1", "ama", False), ("m2", "ama", False), ("m9", "ama", True)]


def test_a_job_whose_lease_expired_is_claimed_again_as_reclaimed(pg_url: str, db: Database) -> None:
    with db.connection() as conn:  # a node that claimed a job and died (its lease ran out)
        conn.execute(
            "INSERT INTO engine_jobs (subscription, resource_group, name, ext, claimed_by, lease_until)"
            " VALUES ('sub', 'rg', 'gone', 'ama', 'dead-node', now() - interval '1 second'),"
            " ('sub', 'rg', 'alive', 'ama', 'live-node', now() + interval '1 hour')"
        )
    engine = Recorder()
    node = ClusterNode(pg_url, db, engine, SETTINGS, workers=2)
    node.start()
    try:
        wait_for(lambda: engine.ran)
        time.sleep(0.5)
        assert engine.ran == [("gone", "ama", False, True)], "the live node's job stays its own"
        (in_flight,) = engine.took_over  # the queued jobs count as running ("gone" too, if not ended before)
        assert ("sub/rg/alive", "ama") in in_flight
    finally:
        node.stop()


def test_a_node_stopping_gracefully_keeps_renewing_the_leases_of_jobs_still_running(pg_url: str, db: Database) -> None:
    """A graceful stop waits for the jobs running here; their leases are renewed until they end, so no other
    node reclaims a job that is still running (which would run it twice and count a claim against it)."""
    slow, other = Recorder(job_seconds=3 * SETTINGS.job_lease), Recorder()
    first = ClusterNode(pg_url, db, slow, SETTINGS, workers=2)
    first.start()
    second = ClusterNode(pg_url, db, other, SETTINGS, workers=2)
    try:
        first.enqueue([(MachineKey("sub", "rg", "long"), "ama", False, None)])
        wait_for(lambda: first._running > 0)
        stopping = threading.Thread(target=first.stop)
        stopping.start()
        second.start()  # claims whatever it may while the first stops
        stopping.join(timeout=4 * SETTINGS.job_lease + 10)
        assert not stopping.is_alive()
        assert slow.ran == [("long", "ama", False, False)], "the job ran to its end on the stopping node"
        assert other.ran == [] and other.abandoned == [], "nobody reclaimed it while it ran"
    finally:
        second.stop()


def test_a_job_claimed_max_claims_times_is_given_up_not_run(pg_url: str, db: Database) -> None:
    from arcext.cluster.node import MAX_CLAIMS

    with db.connection() as conn:  # three nodes claimed these and died; one was claimed twice
        conn.execute(
            "INSERT INTO engine_jobs (subscription, resource_group, name, ext, claimed_by, lease_until, claims)"
            " VALUES ('sub', 'rg', 'poison', 'ama', 'dead-node', now() - interval '1 second', %s),"
            " ('sub', 'rg', 'unlucky', 'ama', 'dead-node', now() - interval '1 second', %s)",
            (MAX_CLAIMS, MAX_CLAIMS - 1),
        )
    engine = Recorder()
    node = ClusterNode(pg_url, db, engine, SETTINGS, workers=2)
    node.start()
    try:

        def queue_empty() -> bool:
            with db.connection() as conn:
                return conn.execute("SELECT count(*) FROM engine_jobs").fetchone() == (0,)

        wait_for(lambda: engine.abandoned and engine.ran and queue_empty())
        assert engine.abandoned == [("poison", "ama", MAX_CLAIMS)], "given up, its runs counted"
        assert engine.ran == [("unlucky", "ama", False, True)], "below the cap: reconciled as usual"
    finally:
        node.stop()


def test_a_follower_forwards_engine_calls_to_the_leader(pg_url: str, db: Database) -> None:
    engines = [Recorder(), Recorder()]
    nodes = [ClusterNode(pg_url, db, engine, SETTINGS, workers=1) for engine in engines]
    nodes[0].start()
    wait_for(lambda: nodes[0].leading)
    nodes[1].start()
    try:
        key = MachineKey("sub", "rg", "m1")
        assert nodes[1].call("reconsider", [key, "ama"]) == {"machine": "m1", "extension": "ama"}
        with pytest.raises(errors.ArmError) as raised:
            nodes[1].call("set_rollout_state", ["r1", "pause"])
        assert (raised.value.status, raised.value.code) == (409, "Conflict")
        nodes[0].stop()  # no leader now (the follower takes over after the poll; stop it leading first)
        nodes[1]._lease.stop()
        started = time.monotonic()
        with pytest.raises(errors.ArmError) as unavailable:
            nodes[1].call("reconsider", [key, "ama"])
        assert unavailable.value.status == 503 and unavailable.value.headers["Retry-After"] == "1"
        assert SETTINGS.leader_wait <= time.monotonic() - started < SETTINGS.leader_wait + 1.5
    finally:
        for node in nodes:
            node.stop()


def leader_and_follower(pg_url: str, db: Database, settings: ClusterSettings) -> tuple[list[ClusterNode], Recorder]:
    """Two started nodes, the first leading; the leader's Recorder."""
    engine = Recorder()
    nodes = [ClusterNode(pg_url, db, engine, settings, workers=1), ClusterNode(pg_url, db, Recorder(), settings, 1)]
    nodes[0].start()
    wait_for(lambda: nodes[0].leading)
    nodes[1].start()
    return nodes, engine


def test_a_forwarded_call_s_answer_comes_by_notification_without_polling(pg_url: str, db: Database) -> None:
    """The caller sleeps until the leader's NOTIFY: a 1 s call with a 30 s poll is answered after about 1 s,
    and the caller looked at its row once (twice at most: the listener's first wake-up)."""
    nodes, _engine = leader_and_follower(pg_url, db, dataclasses.replace(SETTINGS, call_poll=30.0))
    try:
        started = time.monotonic()
        assert nodes[1].call("slow", [1.0]) == "slept"
        took = time.monotonic() - started
        assert 1.0 <= took < 2.0, took
        assert nodes[1].calls.looks <= 2, nodes[1].calls.looks
    finally:
        for node in nodes:
            node.stop()


def test_a_lost_answer_notification_is_caught_by_the_bounded_poll(pg_url: str, db: Database) -> None:
    nodes, _engine = leader_and_follower(pg_url, db, dataclasses.replace(SETTINGS, call_poll=0.5))
    try:
        nodes[1].calls.on_notify = lambda channel, payload: None  # type: ignore[method-assign]  # hears nothing
        started = time.monotonic()
        assert nodes[1].call("slow", [0.1]) == "slept"
        assert time.monotonic() - started < 0.5 + 1.0
    finally:
        for node in nodes:
            node.stop()


def test_the_leader_serves_calls_on_a_small_bounded_pool(pg_url: str, db: Database) -> None:
    """Two workers, six calls: two at a time, and the leader takes no more calls than it has free workers (a
    call it took waits for nobody's slow call; one it did not take gets its 503 after leader_wait)."""
    nodes, engine = leader_and_follower(pg_url, db, dataclasses.replace(SETTINGS, call_workers=2, leader_wait=5.0))
    taken_at_once: list[int] = []
    try:
        with ThreadPoolExecutor(6) as pool:
            answering = pool.map(lambda _i: nodes[1].call("slow", [0.3]), range(6))
            with db.connection() as conn:
                for _ in range(20):
                    row = conn.execute("SELECT count(*) FROM engine_calls WHERE taken_by IS NOT NULL AND NOT done")
                    taken_at_once.append(int(row.fetchone()[0]))  # type: ignore[index]
                    time.sleep(0.04)
            answers = list(answering)
        assert answers == ["slept"] * 6
        assert engine.most_calls_at_once == 2, "two workers, six calls: two at a time"
        assert max(taken_at_once) == 2, taken_at_once
        serving = [t for t in threading.enumerate() if t.name.startswith("arcext-call")]
        assert len(serving) <= 2, [t.name for t in serving]
        with db.connection() as conn:
            assert conn.execute("SELECT count(*) FROM engine_calls").fetchone() == (0,), "each caller deletes its row"
    finally:
        for node in nodes:
            node.stop()


def test_rows_no_caller_waits_for_are_swept_and_a_stale_call_is_never_run(pg_url: str, db: Database) -> None:
    """Rows older than call_retention go (answered and never read, taken by a leader that died, never taken);
    a call still untaken after its caller's leader_wait (the caller gave up or died) is not run."""
    settings = dataclasses.replace(SETTINGS, call_timeout=5.0, call_keep=1.0, call_sweep=0.2)  # retention 6 s
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO engine_calls (method, args, taken_by, done, created_at) VALUES"
            " ('answered', '[]', 1, true, now() - interval '2 hours'),"
            " ('orphaned', '[]', 1, false, now() - interval '2 hours'),"
            " ('untaken', '[]', NULL, false, now() - interval '2 hours'),"
            " ('gave_up', '[]', NULL, false, now() - interval '3.2 seconds')"
        )
    nodes, engine = leader_and_follower(pg_url, db, settings)
    try:
        assert nodes[1].call("reconsider", [MachineKey("sub", "rg", "m1"), "ama"])["machine"] == "m1"

        def left() -> list[str]:
            with db.connection() as conn:
                return [r[0] for r in conn.execute("SELECT method FROM engine_calls ORDER BY id").fetchall()]

        wait_for(lambda: left() == ["gave_up"], timeout=5)
        wait_for(lambda: left() == [], timeout=5)  # older than the retention now
        assert engine.calls == ["reconsider"], "no stale call ran"
        wait_for(lambda: nodes[0].calls.swept == 4)  # (counted just after the commit)
    finally:
        for node in nodes:
            node.stop()


def test_simulated_hosts_driven_from_two_nodes_at_once_lose_no_change(db: Database, tmp_path: Any) -> None:
    """Operations on one host from two nodes' fleets at once: each writes the row only if nobody wrote it since
    its read, else runs again on the locked row, so every change lands once (8 installs, then 6 upgrades of
    which exactly one fails: ``failUpgrade`` 1 is the host's next upgrade, whichever node runs it)."""
    from arcext.cluster.simhosts import DatabaseFleet
    from arcext.hosts.base import HandlerFailed

    fleets = [DatabaseFleet(db, tmp_path / f"node{i}", base_latency_ms=20) for i in range(2)]
    key = MachineKey("sub", "rg", "shared-host")
    names = [f"ext{i}" for i in range(8)]

    def spec(name: str) -> ExtensionSpec:
        return ExtensionSpec(name=name, publisher="Contoso", type=name, settings={"n": name})

    def each(work: Any, items: list[str]) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = [None] * len(items)

        def run(i: int) -> None:
            try:
                work(fleets[i % 2].driver(key), items[i])
            except BaseException as exc:  # noqa: BLE001 - what each operation ended with
                outcomes[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outcomes

    assert each(lambda d, n: d.install(spec(n), "1.0.0"), names) == [None] * 8
    host = fleets[1].snapshot(key)
    assert host is not None
    assert sorted(host["extensions"]) == names
    assert len(host["commands"]) == 16, "install and enable, once per extension"
    fleets[0].set_faults(key, {"failUpgrade": 1})
    ended = each(lambda d, n: d.upgrade(spec(n), "1.0.0", "1.1.0"), names[:6])
    assert sum(isinstance(e, HandlerFailed) for e in ended) == 1, ended
    assert all(e is None or isinstance(e, HandlerFailed) for e in ended), ended
    host = fleets[0].snapshot(key)
    assert host is not None
    states = sorted(host["extensions"][n]["state"] for n in names[:6])
    assert states == ["enabled"] * 5 + ["failed"]
    assert "failUpgrade" not in host["faults"]
    assert all(host["extensions"][n]["settings"] == {"n": n} for n in names), "an upgrade carries the settings"


def test_dedicated_connections_probe_from_the_server_side_too(pg_url: str) -> None:
    """The sessions holding advisory locks (leadership, operation claims, webhook claims) ask PostgreSQL to probe
    their socket, so a node whose host vanished loses its locks in about 11 s; the URL's own options are kept."""
    from arcext.cluster.connect import dedicated
    from arcext.webhooks.pg_node import dedicated as webhook_dedicated

    with_options = psycopg.conninfo.make_conninfo(pg_url, options="-c statement_timeout=12345")
    for connect in (dedicated, webhook_dedicated):
        for url in (pg_url, with_options):
            with connect(url) as conn:
                settings = [
                    conn.execute(f"SHOW {name}").fetchone()
                    for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
                ]
                assert settings == [("5s",), ("2s",), ("3",)] or settings == [("5",), ("2",), ("3",)], settings
                if url is with_options:
                    assert conn.execute("SHOW statement_timeout").fetchone() == ("12345ms",)
