"""The watchdog of a node's background loops (arcext.heartbeat), and GET /arcext/v1/health while a loop is stuck.

The loop is stuck the way a deadlock leaves it: this test holds the engine's lock, so the scheduler's next pass
waits for it, as it would for a lock another thread never gives back."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import requests

from arcext.heartbeat import Heartbeat, Watchdog
from arcext.testing import ArcextServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("arcext.heartbeat.time.monotonic", fake)
    return fake


def test_a_loop_is_stalled_once_silent_past_its_bound_and_not_before_its_first_beat_or_after_it_rests(
    clock: Clock,
) -> None:
    quick, slow = Heartbeat("quick", 1.0), Heartbeat("slow", 30.0)
    dog = Watchdog(lambda: [quick, slow], bound=10)
    clock.now += 1000
    assert dog.stalled() == []  # never beat: not running yet
    quick.beat()
    slow.beat()
    clock.now += 10
    assert dog.stalled() == []  # at the bound, not past it
    clock.now += 0.5
    assert [s.loop for s in dog.stalled()] == ["quick"]  # the slow loop's own period makes its bound 90 s
    assert dog.stalled()[0].silent_seconds == 10.5
    clock.now += 80
    assert [s.loop for s in dog.stalled()] == ["quick", "slow"]
    quick.beat()
    slow.rest()  # the loop ended (stopping)
    assert dog.stalled() == []
    assert Watchdog(lambda: [quick], bound=0).stalled() == []  # 0: no watchdog
    clock.now += 1e6
    assert Watchdog(lambda: [quick], bound=0).stalled() == []


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
        assert [s.loop for s in first] == [s.loop for s in again] == ["engine scheduler"]
        assert "stuck_in_a_call_that_never_returns" in first[0].stack
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, "logged once, not at every look"
        assert "engine scheduler loop has not come round for 6 s" in errors[0].getMessage()
        assert "stuck_in_a_call_that_never_returns" in errors[0].getMessage()
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


def test_health_answers_503_naming_a_stuck_engine_loop_and_200_once_it_comes_round() -> None:
    config = {"ARCEXT_WATCHDOG_SECONDS": 0.5, "ARCEXT_ENGINE_TICK": 0.05}
    with ArcextServer(config=config) as arc:
        health = f"{arc.url}/arcext/v1/health"
        assert requests.get(health, timeout=10).json() == {"status": "ok"}
        engine = arc.services.engine
        with engine._lock:  # the scheduler's next pass waits for it: a deadlock, as far as the loop can tell
            time.sleep(0.8)
            r = requests.get(health, timeout=10)
            assert r.status_code == 503, r.text
            assert r.json() == {"status": "stalled", "stalled": ["engine scheduler"]}
        deadline = time.monotonic() + 5
        while (r := requests.get(health, timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.02)
        assert r.json() == {"status": "ok"}
