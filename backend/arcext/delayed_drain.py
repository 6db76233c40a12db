"""A thread that drains a queue a short delay after something was queued: the batching behind the log's writers
(arcext.logging_setup.LineHandler, arcext.request_log.RequestLog)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class DelayedDrain:
    """``poke()`` after queueing: within ``delay`` seconds the thread (started at the first poke) calls ``drain``
    once for everything queued meanwhile. A poke is an attribute read when a drain is already due."""

    def __init__(self, name: str, delay: float, drain: Callable[[], None]) -> None:
        self.name = name
        self.delay = delay
        self.drain = drain
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def poke(self) -> None:
        if self._thread is None:
            self._start()
        if not self._wake.is_set():
            self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stopped:
                thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread = thread
                thread.start()

    def _run(self) -> None:
        wake = self._wake
        while not self._stopped:
            wake.wait()
            time.sleep(self.delay)  # what is queued meanwhile joins this drain
            wake.clear()  # before the drain: something queued after this wakes the next round
            if not self._stopped:
                self.drain()  # reports its own errors: the thread goes on

    def stop(self) -> None:
        """The thread ends (what is still queued is the owner's to drain)."""
        self._stopped = True
        self._wake.set()
