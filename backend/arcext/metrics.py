"""Prometheus metrics (prometheus-client), one registry per server: names prefixed ``arcext_``.

Tests run several servers in one process, so nothing here uses prometheus-client's global default
registry. Labels are bounded: HTTP routes are URL rules (never raw paths), drivers and steps are
the code's own names, rollouts appear by id only while they are not completed, webhooks by the
names an Owner gave them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: prometheus-client's directory for the figures of several processes (its multi-process mode)
SHARED_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_shared: list[str] = []  # the directory ``share_across_processes`` made (a variable set by anyone else is not ours)


def share_across_processes() -> str:
    """From now on, metrics made in this process and the processes it forks keep their figures in files of a new
    directory (prometheus-client's multi-process mode), and a scrape answered by any of them adds up all of
    theirs: ``arcext serve --workers N`` answers a scrape from whichever worker takes it, and each worker counts
    only what it served. The directory is this server's own (nodes sharing a data directory must not add up each
    other's figures), removed when the process exits. Call it before the workers exist; returns the directory."""
    directory = tempfile.mkdtemp(prefix="arcext-metrics-")
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not in a forked worker that exits (it inherits this hook)
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)
    os.environ[SHARED_DIR_VARIABLE] = directory
    _shared[:] = [directory]
    # chosen when prometheus-client was imported, before the variable was set: chosen again
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def worker_gone(pid: int) -> None:
    """A worker process ended (the master's hook): its live figures leave the sums, its counts stay in them."""
    if _shared:
        multiprocess.mark_process_dead(pid, _shared[0])  # type: ignore[no-untyped-call]


_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HOST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

#: HTTP observations kept before a request thread counts them itself (a scrape counts them before that)
HTTP_PENDING_LIMIT = 4096

#: job outcomes as the metrics name them
SUCCEEDED, ROLLED_BACK, FAILED, TIMED_OUT, NOT_RUN, INTERRUPTED = (
    "succeeded",
    "rolled_back",
    "failed",
    "timed_out",
    "not_run",
    "interrupted",
)


def job_outcome(event: dict[str, Any]) -> str | None:
    """The outcome an activity-log end event records (None for a Started event)."""
    status = event["status"]["value"]
    if status == "Started":
        return None
    if status == "Succeeded":
        return SUCCEEDED
    props = event.get("properties") or {}
    code = props.get("errorCode")
    if code == "HostOperationTimedOut":
        return TIMED_OUT
    if code == "InterruptedByRestart":
        return INTERRUPTED
    if props.get("rolledBack"):
        return ROLLED_BACK
    if "rollbackError" in props:
        return FAILED
    return NOT_RUN


class _StateCollector(Collector):
    """Figures read at scrape time: rollouts, the store's journal, the webhook outbox."""

    def __init__(self, sources: Metrics) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        rollouts = self.sources.rollouts_source() if self.sources.rollouts_source else []
        by_state = GaugeMetricFamily("arcext_rollouts", "Rollouts by state", labels=["state"])
        counts: dict[str, int] = {"Active": 0, "Paused": 0, "Frozen": 0, "Completed": 0}
        remaining = GaugeMetricFamily(
            "arcext_rollout_remaining_extensions",
            "Extensions a rollout that has not completed has still to reach (waves not completed)",
            labels=["rollout", "type", "version", "state"],
        )
        for r in rollouts:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
            if r["state"] != "Completed":
                left = sum(
                    b["size"]
                    for p in r.get("phases", [])
                    for w in p["waves"]
                    if w["state"] != "Completed"
                    for b in w["batches"]
                )
                remaining.add_metric([r["id"], f"{r['publisher']}.{r['type']}", r["version"], r["state"]], left)
        for state, n in sorted(counts.items()):
            by_state.add_metric([state], n)
        yield by_state
        yield remaining
        figures = self.sources.store_source() if self.sources.store_source else {}
        described = {
            "journal_bytes": "Bytes journaled since the last checkpoint",
            "journal_segments": "Journal segment files on disk",
            "checkpoints": "Checkpoints written since the server started",
            "last_checkpoint_seconds": "Seconds the last checkpoint took",
            "dirty_documents": "Machine documents changed since the last checkpoint",
        }
        for key, text in described.items():
            if key in figures:
                yield GaugeMetricFamily(f"arcext_store_{key}", text, value=figures[key])
        if self.sources.outbox_source is not None:
            pending = GaugeMetricFamily(
                "arcext_webhook_outbox_pending", "Webhook deliveries waiting in the outbox", labels=["webhook"]
            )
            for name, n in sorted(self.sources.outbox_source().items()):
                pending.add_metric([name], n)
            yield pending


class _CountPendingFirst(Collector):
    """Registered first, so every collection of the registry counts the pending HTTP requests before the
    counters are read: a scrape always sees every request answered before it."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        self.metrics.count_pending_requests()
        return ()


class Metrics:
    """The server's metrics.

    HTTP requests are not counted by the thread that answered them: it only appends its observation to a
    queue (an append, atomic under the GIL), and the queue is counted at the next scrape, or by the request
    that finds it :data:`HTTP_PENDING_LIMIT` long. prometheus-client takes a lock for each counter and each
    histogram value; with 16 server threads those locks and the GIL hand-offs around them cost about 20 us
    of CPU per request under load (issue #12), more than the counting itself.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        #: figures shared with other worker processes (``share_across_processes``): a scrape here adds up theirs
        if not _shared and getattr(values.ValueClass, "_multiprocess", False):
            # prometheus-client took PROMETHEUS_MULTIPROC_DIR from the environment at import; arcext did not set it
            # up (``share_across_processes``): this server's figures stay in memory, its own
            values.ValueClass = values.MutexValue
        self.shared = bool(_shared)
        self._http_pending: deque[tuple[str, str, int, float]] = deque()
        r.register(_CountPendingFirst(self))
        self.http_requests = Counter(
            "arcext_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "arcext_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.upgrade_jobs = Counter(
            "arcext_upgrade_jobs",
            "Upgrade attempts that ended, by outcome (succeeded, rolled_back, failed, timed_out, not_run, "
            "interrupted) and host driver",
            ["outcome", "driver"],
            registry=r,
        )
        self.upgrades_started = Counter("arcext_upgrade_jobs_started", "Upgrade attempts started", registry=r)
        self.host_latency = Histogram(
            "arcext_host_operation_duration_seconds",
            "Host operation latency by driver and step (upgrade, rollback, installed, install, remove)",
            ["driver", "step"],
            buckets=_HOST_BUCKETS,
            registry=r,
        )
        self.host_errors = Counter(
            "arcext_host_operation_errors",
            "Host operations that failed, by driver, step and error code",
            ["driver", "step", "code"],
            registry=r,
        )
        self.store_write = Histogram(
            "arcext_store_write_duration_seconds",
            "Durable journal appends (group commit included)",
            buckets=_STORE_BUCKETS,
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "arcext_webhook_deliveries",
            "Webhook delivery attempts by webhook and outcome (delivered, retrying, gone, expired, error)",
            ["webhook", "outcome"],
            registry=r,
        )
        self.webhook_events = Counter(
            "arcext_webhook_events", "Events put in the webhook outbox, by type", ["type"], registry=r
        )
        self.rollouts_source: Callable[[], list[dict[str, Any]]] | None = None
        self.store_source: Callable[[], dict[str, float]] | None = None
        self.outbox_source: Callable[[], dict[str, int]] | None = None
        r.register(_StateCollector(self))
        self._children: dict[tuple[str, ...], Any] = {}

    def job_ended(self, outcome: str, driver: str) -> None:
        key = ("job", outcome, driver)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.upgrade_jobs.labels(outcome, driver)
        child.inc()

    def host_operation(self, driver: str, step: str, seconds: float, error: str | None = None) -> None:
        key = ("host", driver, step)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.host_latency.labels(driver, step)
        child.observe(seconds)
        if error is not None:
            self.host_errors.labels(driver, step, error).inc()

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        pending = self._http_pending
        pending.append((method, route, status, seconds))
        if len(pending) >= HTTP_PENDING_LIMIT or self.shared:  # (a scrape in another worker cannot count these)
            self.count_pending_requests()

    def count_pending_requests(self) -> None:
        """Count the HTTP requests observed so far (each once, whichever threads count at once)."""
        pending = self._http_pending
        while True:
            try:
                method, route, status, seconds = pending.popleft()
            except IndexError:
                return
            key = ("http", method, route, str(status))
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    self.http_requests.labels(method, route, str(status)),
                    self.http_latency.labels(method, route),
                )
            children[0].inc()
            children[1].observe(seconds)

    def render(self) -> bytes:
        if not self.shared:
            return generate_latest(self.registry)
        self.count_pending_requests()
        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker, _shared[0])  # type: ignore[no-untyped-call]  # every worker's, added up
        every_worker.register(_StateCollector(self))  # what the store holds, read here
        return generate_latest(every_worker)
