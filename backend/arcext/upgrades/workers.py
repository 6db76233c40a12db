"""The upgrade workers: a fixed number of threads fed from one queue.

A rollout submits one job per target (tens of thousands), and the Future that ThreadPoolExecutor
makes for each (a condition, a lock, a waiter list) was a measurable part of the scheduler's work; the
engine never waits on a job's Future, it learns results through its own bookkeeping.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Task = tuple[Callable[..., None], tuple[Any, ...]]


class WorkerPool:
    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on a worker; threads start as work arrives, up to ``size``."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            if len(self._threads) < self.size:
                thread = threading.Thread(target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._queue.put((fn, args))

    def shutdown(self, cancel_pending: bool = True) -> None:
        """Stop taking work, drop what has not started (with ``cancel_pending``) and wait for the rest."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        if cancel_pending:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            fn, args = task
            try:
                fn(*args)
            except Exception:  # a task's own errors are its business; the worker lives on
                log.exception("Upgrade worker task failed")
