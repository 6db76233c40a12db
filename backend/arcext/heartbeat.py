"""Heartbeats of a node's background loops, and the watchdog that tells when one stopped coming round.

A loop that goes silent (a deadlock between two locks, a thread stuck in a call that never returns) leaves the
process alive: it answers HTTP, its sessions stay open, and on a cluster's leader it keeps the leadership lock, so
no wave is planned anywhere until someone kills it. Each loop the engine and a cluster node run beats once per
round (``Heartbeat.beat``); a long pass shows its progress with ``progress()``, for whichever loop runs it.
``Watchdog.check`` finds the loops silent for longer than their bound and logs each once, with the stack its thread
is in.

A loop whose thread is inside a call to the database (psycopg, its pool) is waiting for the database: a table
another session locked (maintenance, a migration), a database that does not answer. A fresh worker would wait
the same, and so would every other node: such a wait is logged but is not a stall, and while any loop waits so,
the node counts none of its loops as stalled (one may wait for a lock another holds while it waits for the
database). Otherwise ``GET /arcext/v1/health`` answers 503 naming the stalled loops and the gunicorn worker gives
up the leadership and leaves (arcext.serving_gunicorn): its master starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Final

log = logging.getLogger(__name__)

#: the default bound (seconds): a loop silent this long is stalled (``ARCEXT_WATCHDOG_SECONDS``; 0: never)
DEFAULT_BOUND: Final = 120.0

#: a thread whose innermost frame is in one of these packages waits for the database
_DATABASE_PACKAGES: Final = tuple(f"{os.sep}{name}{os.sep}" for name in ("psycopg", "psycopg_pool"))

_now = time.monotonic  # (the tests' clock replaces this one, not the time module's)
_running = threading.local()  # .loop: the heartbeat of the loop this thread runs (its last ``beat``)


def progress() -> None:
    """A long pass moves on (a scan of the fleet): the loop running on this thread counts as having come round,
    whichever it is (the scheduler's pass, or an election's take-over on the leadership loop); none: nothing."""
    loop: Heartbeat | None = getattr(_running, "loop", None)
    if loop is not None and loop.at is not None:
        loop.at = _now()


class Heartbeat:
    """One loop's beats. Watched from its first ``beat`` until ``rest`` (the loop ended); ``period``: the longest
    the loop waits between two rounds by design, so its bound is never below a few of them."""

    __slots__ = ("_thread", "at", "name", "period")

    def __init__(self, name: str, period: float = 0.0) -> None:
        self.name = name
        self.period = period
        self.at: float | None = None  # _now() of the last beat; None: not watched
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """A round of the loop, on the loop's thread."""
        self.at = _now()
        self._thread = threading.current_thread()
        _running.loop = self

    def rest(self) -> None:
        """The loop ended (stopping): no longer watched."""
        self.at = None

    def _frame(self) -> FrameType | None:
        thread = self._thread
        if thread is None or not thread.is_alive() or thread.ident is None:
            return None
        return sys._current_frames().get(thread.ident)

    def in_database(self) -> bool:
        """Whether the loop's thread is inside a call to the database now."""
        frame = self._frame()
        return frame is not None and any(package in frame.f_code.co_filename for package in _DATABASE_PACKAGES)

    def stack(self) -> str:
        """Where the loop's thread is now (its frames, innermost last), or that it has ended."""
        frame = self._frame()
        if frame is None:
            return "(its thread has ended)"
        return "".join(traceback.format_stack(frame))


@dataclass(frozen=True)
class Stall:
    """A loop silent for longer than its bound; ``in_database``: its thread is waiting for the database."""

    loop: str
    silent_seconds: float
    in_database: bool


class Watchdog:
    """Looks at the heartbeats ``beats()`` returns (the loops running now); ``bound`` 0 or less: never stalled."""

    def __init__(self, beats: Callable[[], Iterable[Heartbeat]], bound: float = DEFAULT_BOUND) -> None:
        self._beats = beats
        self.bound = bound
        self._reported: dict[str, bool] = {}  # loop -> reported as waiting for the database (else as stuck)
        self._lock = threading.Lock()

    def silent(self) -> list[tuple[Heartbeat, Stall]]:
        """Every loop silent past its bound now, with its heartbeat."""
        if self.bound <= 0:
            return []
        now = _now()
        found = []
        for heartbeat in self._beats():
            at = heartbeat.at
            if at is not None and now - at > max(self.bound, 3 * heartbeat.period):
                found.append((heartbeat, Stall(heartbeat.name, round(now - at, 1), heartbeat.in_database())))
        return found

    def check(self) -> list[Stall]:
        """The stalled loops: silent past their bound, none of the node's loops waiting for the database. Each
        loop found silent is logged once with the stack its thread is in (an error when stuck, a warning when
        waiting for the database), and once more when it comes round again."""
        with self._lock:
            silent = self.silent()
            for heartbeat, stall in silent:
                if self._reported.get(stall.loop) == stall.in_database:
                    continue
                self._reported[stall.loop] = stall.in_database
                if stall.in_database:
                    log.warning(
                        "The %s loop has been waiting for the database for %.0f s (not a stall: another worker would "
                        "wait the same); its thread is at:\n%s",
                        stall.loop,
                        stall.silent_seconds,
                        heartbeat.stack().rstrip(),
                    )
                else:
                    log.error(
                        "The %s loop has not come round for %.0f s (the watchdog's bound: %.0f s); its thread is "
                        "at:\n%s",
                        stall.loop,
                        stall.silent_seconds,
                        self.bound,
                        heartbeat.stack().rstrip(),
                    )
            names = {stall.loop for _heartbeat, stall in silent}
            for name in sorted(set(self._reported) - names):
                del self._reported[name]
                log.warning("The %s loop comes round again", name)
        stalls = [stall for _heartbeat, stall in silent]
        if any(stall.in_database for stall in stalls):
            return []  # the database holds the node up: a fresh worker would wait the same
        return stalls

    def waiting_for_database(self) -> list[str]:
        """The loops silent past their bound while waiting for the database (health shows them)."""
        with self._lock:
            return sorted(name for name, in_database in self._reported.items() if in_database)
