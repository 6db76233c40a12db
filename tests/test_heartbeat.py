"""The watchdog of a node's background loops (arcext.heartbeat), and GET /arcext/v1/health while a loop is stuck.

A loop is stuck here the way a deadlock leaves it: this test holds the engine's lock, so the scheduler's next pass
waits for it, as it would for a lock another thread never gives back. A loop waiting for the database (a table
another session locked) is told apart: a fresh worker would wait the same, so it is not a stall."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest
import requests

from arcext.heartbeat import Heartbeat, Watchdog, progress
from arcext.testing import ArcextServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("arcext.heartbeat._now", fake)
    return fake


def test_a_loop_is_stalled_once_silent_past_its_bound_and_not_before_its_first_beat_or_after_it_rests(
    clock: Clock,
) -> None:
    quick, slow = Heartbeat("quick", 1.0), Heartbeat("slow", 30.0)
    dog = Watchdog(lambda: [quick, slow], bound=10)
    clock.now += 1000
    assert dog.check() == []  # never beat: not running yet
    quick.beat()
    slow.beat()
    clock.now += 10
    assert dog.check() == []  # at the bound, not past it
    clock.now += 0.5
    assert [(s.loop, s.silent_seconds) for s in dog.check()] == [("quick", 10.5)]  # slow's own period: 90 s
    clock.now += 80
    assert [s.loop for s in dog.check()] == ["quick", "slow"]
    quick.beat()
    slow.rest()  # the loop ended (stopping)
    assert dog.check() == []
    clock.now += 1e6
    assert Watchdog(lambda: [quick], bound=0).check() == []  # 0: no watchdog


def test_progress_counts_for_the_loop_running_on_the_thread(clock: Clock) -> None:
    """A long pass (a scan) beats for whichever loop runs it: the scheduler's on its thread, the leadership's when
    an election's take-over runs the same scan there; on a thread that runs no loop it counts for none."""
    scheduler, leadership = Heartbeat("engine scheduler", 1.0), Heartbeat("leadership", 1.0)
    dog = Watchdog(lambda: [scheduler, leadership], bound=10)
    scheduler.beat()

    def take_over() -> None:
        leadership.beat()
        clock.now += 8
        progress()  # the scan, on the leadership loop's thread

    other = threading.Thread(target=take_over)
    other.start()
    other.join()
    clock.now += 8
    assert [s.loop for s in dog.check()] == ["engine scheduler"]
    loose = threading.Thread(target=progress)  # a thread that runs no loop
    loose.start()
    loose.join()
    assert [s.loop for s in dog.check()] == ["engine scheduler"]
    progress()  # this thread runs the scheduler's loop (its last beat)
    assert dog.check() == []


def test_a_stall_is_logged_once_with_where_its_thread_is_and_its_recovery_once(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    beat = Heartbeat("engine scheduler", 1.0)
    release = threading.Event()

    def stuck_in_a_call_that_never_returns() -> None:
        beat.beat()
        release.wait(10)
        beat.beat()

    thread = threading.Thread(target=stuck_in_a_call_that_never_returns)
    thread.start()
    try:
        while beat.at is None:
            time.sleep(0.001)
        dog = Watchdog(lambda: [beat], bound=5)
        clock.now += 6
        with caplog.at_level(logging.WARNING, logger="arcext.heartbeat"):
            first = dog.check()
            again = dog.check()
        assert [(s.loop, s.in_database) for s in first] == [("engine scheduler", False)]
        assert [s.loop for s in again] == ["engine scheduler"]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, "logged once, not at every look"
        assert "engine scheduler loop has not come round for 6 s" in errors[0].getMessage()
        assert "in stuck_in_a_call_that_never_returns" in errors[0].getMessage()
        caplog.clear()
        release.set()
        thread.join(5)
        with caplog.at_level(logging.WARNING, logger="arcext.heartbeat"):
            assert dog.check() == []
            assert dog.check() == []
        assert [r.getMessage() for r in caplog.records] == ["The engine scheduler loop comes round again"]
    finally:
        release.set()
        thread.join(5)


def test_a_loop_waiting_for_the_database_is_no_stall_and_holds_the_others_stalls_back(
    pg_url: str,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loop inside a statement waiting for a lock another session holds: a fresh worker (and every other node)
    would wait the same, so the node does not leave; a loop stuck behind it (waiting for a lock the waiting loop
    holds) is not counted either."""
    waiting, behind = Heartbeat("job claims", 1.0), Heartbeat("engine scheduler", 1.0)
    with psycopg.connect(pg_url) as holder:
        holder.execute("CREATE TABLE IF NOT EXISTS watchdog_probe (x int)")
        holder.commit()
        holder.execute("LOCK TABLE watchdog_probe IN ACCESS EXCLUSIVE MODE")

        def claims() -> None:
            waiting.beat()
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("SELECT * FROM watchdog_probe")  # waits for the holder's lock
            waiting.beat()

        thread = threading.Thread(target=claims)
        thread.start()
        try:
            with psycopg.connect(pg_url, autocommit=True) as look:
                while not look.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%watchdog_probe%'"
                ).fetchone():
                    time.sleep(0.01)
            behind.beat()
            dog = Watchdog(lambda: [waiting, behind], bound=5)
            clock.now += 6
            with caplog.at_level(logging.WARNING, logger="arcext.heartbeat"):
                assert dog.check() == []
                assert [(s.loop, s.in_database) for _h, s in dog.silent()] == [
                    ("job claims", True),
                    ("engine scheduler", False),
                ]
            assert dog.waiting_for_database() == ["job claims"]
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert any("job claims loop has been waiting for the database for 6 s" in m for m in warnings), warnings
            assert any("psycopg" in m for m in warnings), "the warning shows the stack, inside psycopg"
        finally:
            holder.rollback()
            thread.join(10)
        clock.now += 1
        assert [s.loop for s in dog.check()] == ["engine scheduler"]  # nothing waits for the database now
        assert dog.waiting_for_database() == []
        holder.execute("DROP TABLE watchdog_probe")
        holder.commit()


def test_health_answers_503_naming_a_stuck_engine_loop_and_200_once_it_comes_round() -> None:
    config = {"ARCEXT_WATCHDOG_SECONDS": 2, "ARCEXT_ENGINE_TICK": 0.05}
    with ArcextServer(config=config) as arc:
        health = f"{arc.url}/arcext/v1/health"
        assert requests.get(health, timeout=10).json() == {"status": "ok"}
        engine = arc.services.engine
        with engine._lock:  # the scheduler's next pass waits for it: a deadlock, as far as the loop can tell
            deadline = time.monotonic() + 10
            while (r := requests.get(health, timeout=10)).status_code != 503:
                assert time.monotonic() < deadline, r.text
                time.sleep(0.05)
            assert r.json() == {"status": "stalled", "stalled": ["engine scheduler"]}
        deadline = time.monotonic() + 5
        while (r := requests.get(health, timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.02)
        assert r.json() == {"status": "ok"}


def test_every_loop_rests_once_its_server_has_closed() -> None:
    """A closed server's loops are not watched any more (else a stopped node would look stalled), and a busy,
    healthy node's are all beating."""
    with ArcextServer(config={"ARCEXT_ENGINE_TICK": 0.05}) as arc:
        beats = arc.services.engine.heartbeats()
        deadline = time.monotonic() + 10
        while any(b.at is None for b in beats):  # every loop has come round once
            assert time.monotonic() < deadline, [b.name for b in beats if b.at is None]
            time.sleep(0.02)
        assert arc.services.stalled_loops() == []
    assert [b.name for b in beats if b.at is not None] == []
