"""The engine's shared state and the few moves every part of it makes.

``EngineBase`` holds what the engine keeps in memory (rollouts, the due heap, open wave targets,
manual operations still running, one lock over all of it) and the steps the rollout, manual, dispatch
and recovery parts share: queue a job on an extension's record, push a due entry, close a wave target.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import TypeVar

from ..activity import ActivityLog
from ..catalog import Catalog
from ..clock import Clock, iso
from ..crypto import SecretBox
from ..heartbeat import Heartbeat
from ..hosts.base import HostDriver
from ..ids import MachineKey
from ..records import ExtensionRecord, RolloutRecord, UpgradeJob, Wave
from ..store.base import MachineDoc, Store
from ..versions import major, newer
from . import job_state as J
from .jobs import JobRunner
from .policy import ineligibility, run_ineligibility, supports_auto_upgrade
from .settings import EngineSettings
from .targets import Entry, outcome_of
from .workers import WorkerPool

T = TypeVar("T")

DriverResolver = Callable[[MachineKey, MachineDoc], HostDriver | None]


class EngineBase:
    def __init__(
        self,
        store: Store,
        box: SecretBox,
        clock: Clock,
        catalog: Catalog,
        activity: ActivityLog,
        drivers: DriverResolver,
        settings: EngineSettings | None = None,
        rollouts: list[RolloutRecord] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.catalog = catalog
        self.activity = activity
        self.drivers = drivers
        self.settings = settings or EngineSettings()
        self.runner = JobRunner(
            store,
            box,
            clock,
            drivers,
            activity.record,
            self.settings.retry_delay.total_seconds(),
            self.settings.busy_delay.total_seconds(),
            self._may_run,
        )
        self.runner.events_for = activity.for_operation
        self._lock = threading.RLock()
        self._due: list[Entry] = []
        self._seq = itertools.count()
        self._inflight: set[tuple[str, str]] = set()
        self._open: dict[str, dict[int, set[tuple[str, str]]]] = {}  # rollout -> wave -> open targets
        self._manual: dict[str, set[tuple[str, str]]] = {}  # operation id -> targets still running
        self._pool = self._new_pool()
        self._idle = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.heartbeat = Heartbeat("engine scheduler", self.settings.tick_seconds)  # the background loop's
        self._stats: dict[str, int] = {}
        self._held: list[Entry] = []
        self._manual_queue: list[Entry] = []
        self._completions = 0  # manual jobs, for the background pass on a manual clock
        self._members: dict[str, dict[tuple[str, str], int]] = {}  # rollout -> target -> wave index (the plan)
        #: maintenance windows (arcext.maintenance): None if an automatic upgrade may start on a machine
        #: now, else when its next window opens; unset, nothing is gated
        self.window_gate: Callable[[MachineDoc, datetime], datetime | None] | None = None
        self.windows_in_use: Callable[[], bool] = lambda: self.window_gate is not None  # cheap: any assignment?
        self._repairs = 0
        #: ``_newest_rollouts`` as last computed, with the rollout ids it was computed from (callers only read it)
        self._newest: tuple[tuple[str, ...], dict[tuple[str, str, str], str]] | None = None
        # The engine is the only writer of rollouts: it keeps them in memory and writes each change through
        # (``rollouts``: the store's, when the caller has read them already).
        self._rollouts: dict[str, RolloutRecord] = {
            r["id"]: r for r in (store.list_rollouts() if rollouts is None else rollouts)
        }

    def _new_pool(self) -> WorkerPool | None:
        """The workers that run this engine's jobs (None: they run elsewhere, arcext.cluster)."""
        return WorkerPool(self.settings.concurrency, "arcext-upgrade")

    def _clear_indexes(self) -> None:
        """Forget every index the engine rebuilds from the store (``recover``); the rollouts stay."""
        self._due.clear()
        self._open.clear()
        self._manual.clear()
        self._held = []
        self._manual_queue = []
        self._members.clear()
        self._inflight.clear()

    def kick(self) -> None:
        self._wake.set()

    def _rollout_list(self) -> list[RolloutRecord]:
        with self._lock:
            return list(self._rollouts.values())

    def _save_rollout(self, rollout: RolloutRecord) -> None:
        with self._lock:
            self.store.put_rollout(rollout)
            self._rollouts[rollout["id"]] = rollout

    def _push(self, due: str, key: MachineKey, ext: str, rollout_id: str = "") -> None:
        heapq.heappush(
            self._due, (due, next(self._seq), (key.subscription, key.resource_group, key.name), ext, rollout_id)
        )

    def _close_target(self, rollout_id: str, key: MachineKey, ext: str) -> None:
        for open_targets in self._open.get(rollout_id, {}).values():
            open_targets.discard((key.lower, ext))

    def _planned_wave(self, rollout: RolloutRecord, key: MachineKey, ext: str) -> Wave | None:
        """The wave of ``rollout``'s plan that holds the extension, if any (an index built once per rollout)."""
        members = self._members.get(rollout["id"])
        if members is None:
            members = {}
            for wave in rollout["waves"]:
                for batch in wave["batches"]:
                    for target in batch["targets"]:
                        members[(MachineKey(target[0], target[1], target[2]).lower, target[3])] = wave["index"]
            self._members[rollout["id"]] = members
        index = members.get((key.lower, ext))
        return None if index is None else rollout["waves"][index]

    def _view_record(self, key: MachineKey, ext: str, view: Callable[[MachineDoc | None], T]) -> T:
        """A look at one extension's record: ``view`` reads ``doc["extensions"][ext]`` and nothing else of the
        document (a cluster's leader may hand it a document that holds that record only)."""
        return self.store.view_machine(key, view)

    def _outcomes(self, rollout_id: str, targets: Sequence[tuple[MachineKey, str]]) -> list[str | None]:
        """Each target's remembered outcome for the rollout (``outcome_of``), in order, the machines read together."""
        views = [(key, partial(outcome_of, ext=ext, rollout_id=rollout_id)) for key, ext in targets]
        return self.store.view_machines(views)

    def _newest_rollouts(self) -> dict[tuple[str, str, str], str]:
        """The newest rollout's version per (publisher, type, major), lower-case names: a new major is
        never applied automatically, so each major has its own newest version."""
        with self._lock:
            ids = tuple(self._rollouts)
            if self._newest is not None and self._newest[0] == ids:
                return self._newest[1]  # a rollout's type and version never change: the same rollouts, the same answer
            rollouts = list(self._rollouts.values())
        newest: dict[tuple[str, str, str], str] = {}
        for rollout in rollouts:
            handler = (rollout["publisher"].lower(), rollout["type"].lower(), major(rollout["version"]))
            if handler not in newest or newer(rollout["version"], newest[handler]):
                newest[handler] = rollout["version"]
        with self._lock:
            self._newest = (ids, newest)
        return newest

    @staticmethod
    def wave_job(rollout: RolloutRecord, wave_index: int | None) -> UpgradeJob:
        """The job a wave's target gets when it is claimed (its first attempt for this rollout)."""
        return {
            "toVersion": rollout["version"],
            "rolloutId": rollout["id"],
            "correlationId": rollout["id"],
            "caller": None,
            "critical": rollout["critical"],
            "wave": wave_index,
            "retry": True,
        }

    def _queue_job(
        self, key: MachineKey, ext: str, job: UpgradeJob, now: datetime, automatic: bool, due: str | None = None
    ) -> bool:
        """Put a Queued job on the extension's record, due at ``due`` (default now), unless it is ineligible or
        already headed higher."""
        superseded: list[str] = []

        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, bool]:
            record = doc["extensions"].get(ext) if doc else None
            if doc is None or record is None:
                return doc, False
            if automatic:
                reason = ineligibility(record, supports_auto_upgrade(self.catalog, record), job["toVersion"])
                if reason is not None:
                    J.remember_outcome(record, job, J.SKIPPED)
                    return doc, False
            current = record.get("upgrade")
            if current and current["state"] == J.RUNNING:
                return doc, False
            if automatic and J.manual_pending(current):
                return doc, False  # one at a time: the manual upgrade runs first
            if (
                current
                and current["state"] in J.WAITING
                and not newer(job["toVersion"], current["toVersion"])
                and automatic
            ):
                return doc, False
            displaced = (current or {}).get("displaced")
            if (
                not automatic
                and current
                and current["state"] in J.WAITING
                and not current.get("manualOperation")
                and newer(current["toVersion"], job["toVersion"])
            ):
                displaced = J.job_without(current, ("displaced",))  # comes back afterwards
            elif (
                automatic
                and current
                and current.get("rolloutId")
                and current["rolloutId"] != job.get("rolloutId")
                and not current.get("firstAttemptDone")
            ):
                J.remember_outcome(record, current, J.SUPERSEDED)
                superseded.append(str(current["rolloutId"]))
            # (a manual job replacing a wave's own job of the same or an older version leaves the wave
            # waiting: once the manual job has ended the wave finds the extension up to date, or claims it)
            if displaced and newer(displaced["toVersion"], job["toVersion"]):
                job["displaced"] = displaced
            job.update(
                {"state": J.QUEUED, "attempt": 1, "dueAt": due or iso(now), "resourceId": record["resource"]["id"]}
            )
            record["upgrade"] = job
            return doc, True

        queued: bool = self.store.mutate_machine(key, change, extension=ext)
        for rollout_id in superseded:  # the older rollout's wave no longer waits for this target
            self._close_target(rollout_id, key, ext)
        return queued

    def _may_run(self, record: ExtensionRecord, job: UpgradeJob) -> str | None:
        return run_ineligibility(record, job, self.catalog)
