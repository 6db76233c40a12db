"""Heartbeats of a node's background loops, and the watchdog that tells when one stopped coming round.

A loop that goes silent (a deadlock between two locks, a thread stuck in a call that never returns) leaves the
process alive: it answers HTTP, its sessions stay open, and on a cluster's leader it keeps the leadership lock, so
no wave is planned anywhere until someone kills it. Each loop the engine and a cluster node run beats once per
round (``Heartbeat.beat``); ``Watchdog.stalled`` names those silent for longer than their bound, with the stack
their thread is in now, for the log. ``GET /arcext/v1/health`` answers 503 while one is stalled, and the
gunicorn worker leaves (arcext.serving_gunicorn): its master starts a fresh one, and the others' leadership
tries take over. The bound is far above any wait a loop makes by design (its own period, a database call that
gives up within its connection's timeouts), so only a loop that truly stopped trips it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

#: the default bound (seconds): a loop silent this long is stalled (``ARCEXT_WATCHDOG_SECONDS``; 0: never)
DEFAULT_BOUND: Final = 120.0


class Heartbeat:
    """One loop's beats. Watched from its first ``beat`` until ``rest`` (the loop ended); ``period``: the longest
    the loop waits between two rounds by design, so its bound is never below a few of them."""

    __slots__ = ("_thread", "at", "name", "period")

    def __init__(self, name: str, period: float = 0.0) -> None:
        self.name = name
        self.period = period
        self.at: float | None = None  # time.monotonic() of the last beat; None: not watched
        self._thread: int | None = None

    def beat(self) -> None:
        self.at = time.monotonic()
        self._thread = threading.get_ident()

    def rest(self) -> None:
        """The loop ended (stopping): no longer watched."""
        self.at = None

    def stack(self) -> str:
        """Where the loop's thread is now (its frames, innermost last), or why that is not known."""
        frame = sys._current_frames().get(self._thread) if self._thread is not None else None
        if frame is None:
            return "(its thread has ended)"
        return "".join(traceback.format_stack(frame))


@dataclass(frozen=True)
class Stall:
    """A loop silent for longer than its bound."""

    loop: str
    silent_seconds: float
    stack: str


class Watchdog:
    """Looks at the heartbeats ``beats()`` returns (the loops running now); ``bound`` 0 or less: never stalled."""

    def __init__(self, beats: Callable[[], Iterable[Heartbeat]], bound: float = DEFAULT_BOUND) -> None:
        self._beats = beats
        self.bound = bound
        self._reported: set[str] = set()
        self._lock = threading.Lock()

    def check(self) -> list[Stall]:
        """``stalled()``, each loop's stall logged once as an error with the stack its thread is in (what someone
        reading the log afterwards needs to know), and its recovery once as a warning."""
        found = self.stalled()
        names = {stall.loop for stall in found}
        with self._lock:
            new = [stall for stall in found if stall.loop not in self._reported]
            back = self._reported - names
            self._reported = names
        for stall in new:
            log.error(
                "The %s loop has not come round for %.0f s (the watchdog's bound: %.0f s); its thread is at:\n%s",
                stall.loop,
                stall.silent_seconds,
                self.bound,
                stall.stack.rstrip(),
            )
        for name in sorted(back):
            log.warning("The %s loop comes round again", name)
        return found

    def stalled(self) -> list[Stall]:
        if self.bound <= 0:
            return []
        now = time.monotonic()
        found = []
        for heartbeat in self._beats():
            at = heartbeat.at
            if at is None:
                continue
            silent = now - at
            if silent > max(self.bound, 3 * heartbeat.period):
                found.append(Stall(heartbeat.name, round(silent, 1), heartbeat.stack()))
        return found
