"""The due heap and its dispatch: which due job runs now (held rollouts, maintenance windows,
hosts without a connection), the worker pool's jobs and the bookkeeping of their ends, and
``run_until_idle``."""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from ..activity import window_opened_event
from ..clock import iso
from ..ids import MachineKey
from ..records import ExtensionRecord, RolloutRecord, UpgradeJob
from ..store.base import MachineDoc, Record
from . import job_state as J
from .jobs import JobResult
from .manual import ManualUpgrades
from .rollouts import Rollouts
from .targets import (
    ACTIVE,
    CLAIM,
    DONE,
    HELD,
    NO_HOST_CONNECTION,
    WAITING_FOR_WINDOW,
    WINDOW_BLOCK,
    Entry,
    booking_look,
    concludes_without_host,
    target_status,
)

log = logging.getLogger(__name__)

#: due entries dispatched per run: their machines are read in one query
DUE_RUN = 500
#: an extension's job (a copy), whether its machine has a driver and whether it exists (``_job_and_reach``)
Look = tuple[UpgradeJob | None, bool, bool]


class Dispatch(Rollouts, ManualUpgrades):
    #: the maintenance windows open on a machine now (arcext.maintenance ``open_windows``): what the
    #: windowOpened event names; unset, it names none
    open_windows: Callable[[MachineDoc, datetime], list[dict[str, str]]] | None = None

    def advance(self, automatic: bool = True) -> int:
        """Start and finish waves, dispatch due jobs. Returns how many jobs were dispatched.

        With ``automatic`` False only manual upgrades are dispatched."""
        now = self.clock.now()
        with self._lock:
            if automatic:
                for rollout in self._rollout_list():
                    if rollout["state"] == ACTIVE:
                        self._advance_rollout(rollout, now)
            return self._dispatch_due(now, automatic)

    def _dispatch_due(self, now: datetime, automatic: bool = True) -> int:
        stamp = iso(now)
        dispatched = 0
        held_again: list[Entry] = []
        later: list[Entry] = []
        pending: list[Entry] = []
        manual_again: list[Entry] = []
        if not automatic:
            # only what a user asked for: the manual queue, leaving the shared heap alone
            pending, self._manual_queue = self._manual_queue, []
        run: deque[Entry] = deque()
        looks: dict[tuple[str, str], Look] = {}
        written: set[str] = set()  # machines this run changed: their looks are read again
        try:
            while True:
                if not run:
                    # the due entries are taken a run at a time, in the order they would be popped one by one
                    # (nothing this loop pushes is due by ``stamp``), and their machines read together
                    run.extend(self._due_run(stamp, pending if not automatic else None))
                    if not run:
                        break
                    looks = self._look_ahead(run)
                    written.clear()
                entry = run.popleft()
                _, _, parts, ext, wave_rollout = entry
                key = MachineKey(*parts)
                if (key.lower, ext) in self._inflight:
                    # one job at a time per extension: look again once the running one is done
                    (later if automatic else manual_again).append(entry)
                    continue
                look = looks.pop((key.lower, ext), None) if key.lower not in written else None
                if look is None:
                    look = self.store.view_machine(key, partial(self._job_and_reach, key=key, ext=ext))
                job, reachable, exists = look
                template: UpgradeJob | None = None
                own = bool(job and job.get("rolloutId") == wave_rollout and not job.get("firstAttemptDone"))
                if wave_rollout and not own:
                    # a wave's target: the claim decides (run it, take a waiting job of the same version over,
                    # or conclude it as up to date, superseded or skipped), never another job's schedule
                    rollout = self._rollouts.get(wave_rollout)
                    if rollout is None:
                        continue
                    if not exists:  # removed meanwhile: nothing to upgrade, the wave need not wait for it
                        self._close_target(wave_rollout, key, ext)
                        continue
                    index = self._wave_index(rollout, key, ext)
                    if index is None:
                        continue  # no longer open (a stale entry)
                    template = self.wave_job(rollout, index)
                    job = {**template, "dueAt": stamp, "state": J.QUEUED}
                elif job is None or job["state"] not in J.WAITING:
                    continue
                if job["dueAt"] > stamp:
                    self._push(job["dueAt"], key, ext)
                    continue
                if not automatic and not job.get("manualOperation"):
                    continue
                rollout = self._rollouts.get(job.get("rolloutId") or "")
                if rollout and rollout["state"] in HELD:
                    held_again.append(entry)  # kept for resume
                    continue
                if self.window_gate is not None and not job.get("manualOperation") and self.windows_in_use():
                    opens = self.store.view_machine(key, partial(self._window_opens, now=now))
                    if opens is not None:
                        written.add(key.lower)
                        self._wait_for_window(key, ext, opens, template, wave_rollout, now)
                        continue
                    if job.get("blockedReason") == WINDOW_BLOCK:
                        written.add(key.lower)
                        self._window_opened(key, now)
                if not reachable and not (
                    template is not None
                    and self.store.view_machine(
                        key, partial(concludes_without_host, ext=ext, version=template["toVersion"])
                    )
                ):
                    if template is None:
                        written.add(key.lower)
                        self._postpone(key, ext, NO_HOST_CONNECTION)
                    else:
                        due_later = iso(now + self.settings.retry_delay)
                        later.append((due_later, entry[1], entry[2], entry[3], entry[4]))
                    continue
                self._submit(key, ext, template=template)
                dispatched += 1
        finally:
            if automatic:  # what a failure left of the run stays due (nothing of it was looked at)
                for entry in run:
                    heapq.heappush(self._due, entry)
        self._held.extend(held_again)
        self._manual_queue.extend(manual_again)
        for entry in later:
            heapq.heappush(self._due, entry)
        self._stats["dispatched"] = self._stats.get("dispatched", 0) + dispatched
        return dispatched

    def _due_run(self, stamp: str, pending: list[Entry] | None) -> list[Entry]:
        """The next entries to dispatch, at most ``DUE_RUN``: from the heap those due by ``stamp``, in its order,
        or (``pending``: the manual queue being dispatched) from its end."""
        run: list[Entry] = []
        if pending is not None:
            while pending and len(run) < DUE_RUN:
                run.append(pending.pop())
        else:
            while self._due and self._due[0][0] <= stamp and len(run) < DUE_RUN:
                run.append(heapq.heappop(self._due))
        return run

    def _look_ahead(self, run: deque[Entry]) -> dict[tuple[str, str], Look]:
        """The first look at each entry's extension (``_job_and_reach``), the run's machines read together
        (one query on PostgreSQL). Only the first entry of a target uses it (a second one reads again), and
        only while the run has not changed its machine; what else changes an extension's record meanwhile
        is a job on it, and a target whose job runs is not dispatched."""
        targets: dict[tuple[str, str], MachineKey] = {}
        for _, _, parts, ext, _ in run:
            key = MachineKey(*parts)
            if (key.lower, ext) not in self._inflight:
                targets.setdefault((key.lower, ext), key)
        views = [(key, partial(self._job_and_reach, key=key, ext=ext)) for (_, ext), key in targets.items()]
        return dict(zip(targets, self.store.view_machines(views), strict=True))

    def _wave_index(self, rollout: RolloutRecord, key: MachineKey, ext: str) -> int | None:
        for wave in rollout["waves"]:
            if wave["state"] == "Running" and (key.lower, ext) in self._open.get(rollout["id"], {}).get(
                wave["index"], ()
            ):
                return int(wave["index"])
        return None

    def _job_and_reach(self, doc: MachineDoc | None, key: MachineKey, ext: str) -> tuple[UpgradeJob | None, bool, bool]:
        """The extension's job, whether its machine has a driver (asked without building one), and
        whether the extension exists."""
        record: ExtensionRecord | None = doc["extensions"].get(ext) if doc else None
        if doc is None or record is None:
            return None, False, False
        job = record.get("upgrade")
        available = getattr(self.drivers, "available", None)
        reachable = available(doc) if available is not None else self.drivers(key, doc) is not None
        return (job.copy() if job else None), reachable, True

    def _window_opens(self, doc: MachineDoc | None, now: datetime) -> datetime | None:
        gate = self.window_gate
        return gate(doc, now) if gate is not None and doc is not None else None

    def _wait_for_window(
        self,
        key: MachineKey,
        ext: str,
        opens: datetime,
        template: UpgradeJob | None,
        wave_rollout: str,
        now: datetime,
    ) -> None:
        """Outside the machine's maintenance windows: the job waits on the extension's record until the next
        window opens. A wave does not wait for it (nor count it as a failure): its target is concluded for
        the wave as WaitingForMaintenanceWindow, and the job keeps its rollout id and runs in the window."""
        if template is not None:
            self._queue_job(key, ext, template.copy(), now, automatic=True)
        due = iso(opens)
        concluded: list[str] = []

        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, bool]:
            record = doc["extensions"].get(ext) if doc else None
            current = record.get("upgrade") if record else None
            if record is None or not current or current["state"] not in J.WAITING or current.get("manualOperation"):
                return doc, False
            current["dueAt"] = max(str(current["dueAt"]), due)
            current["blockedReason"] = WINDOW_BLOCK
            outcomes = record.setdefault("outcomes", {})
            for rollout_id in {wave_rollout, str(current.get("rolloutId") or "")} - {""}:
                if rollout_id not in outcomes and not (
                    rollout_id == current.get("rolloutId") and current.get("firstAttemptDone")
                ):
                    outcomes[rollout_id] = WAITING_FOR_WINDOW
                    concluded.append(rollout_id)
            while len(outcomes) > 20:  # as jobs.remember_outcome keeps them
                del outcomes[next(iter(outcomes))]
            return doc, True

        waiting = self.store.mutate_machine(key, change, extension=ext)
        for rollout_id in concluded or ([wave_rollout] if wave_rollout else []):
            self._close_target(rollout_id, key, ext)
        if waiting:
            self._push(due, key, ext)

    def _window_opened(self, key: MachineKey, now: datetime) -> None:
        """A window of the machine is open and automatic upgrades on it waited for one: release every one of
        them (their ``blockedReason`` goes) and record one activity-log event for the machine with them, in the
        same durable write (it feeds the ``maintenanceWindow.opened`` webhook). Released jobs no longer carry
        the block, so the machine's other waiting extensions do not announce the same opening again."""
        windows = self.store.view_machine(key, partial(self._open_windows, now=now))
        events: list[Record] = []

        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, None]:
            if doc is None:
                return doc, None
            waiting: list[dict[str, Any]] = []
            for name, record in sorted(doc["extensions"].items()):
                job = record.get("upgrade")
                if not job or job["state"] not in J.WAITING or job.get("blockedReason") != WINDOW_BLOCK:
                    continue
                del job["blockedReason"]
                waiting.append(
                    {
                        "extension": name,
                        "extensionId": record["resource"]["id"],
                        "fromVersion": record["resource"]["properties"].get("typeHandlerVersion"),
                        "targetVersion": job["toVersion"],
                        "rolloutId": job.get("rolloutId"),
                        "attempt": job.get("attempt", 1),
                    }
                )
            if waiting and windows:  # (none open: the assignment went away; the jobs are released, nothing opened)
                events.append(
                    window_opened_event(machine_id=doc["machine"]["id"], now=now, windows=windows, waiting=waiting)
                )
            return doc, None

        self.store.mutate_machine(key, change, events=events)

    def _open_windows(self, doc: MachineDoc | None, now: datetime) -> list[dict[str, str]]:
        found = self.open_windows
        return found(doc, now) if found is not None and doc is not None else []

    def _postpone(self, key: MachineKey, ext: str, reason: str) -> None:
        due = iso(self.clock.now() + self.settings.retry_delay)

        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, None]:
            record = doc["extensions"].get(ext) if doc else None
            job = record.get("upgrade") if record else None
            if job and job["state"] in J.WAITING:
                job["dueAt"] = due
                job["blockedReason"] = reason
            return doc, None

        self.store.mutate_machine(key, change, extension=ext)
        self._push(due, key, ext)

    def _submit(self, key: MachineKey, ext: str, resume: bool = False, template: UpgradeJob | None = None) -> None:
        with self._lock:
            self._inflight.add((key.lower, ext))
            assert self._pool is not None, "an engine without workers submits its jobs elsewhere"
            self._pool.submit(self._execute, key, ext, resume, template)

    def _execute(self, key: MachineKey, ext: str, resume: bool, template: UpgradeJob | None) -> None:
        result: JobResult | None = None
        try:
            if resume:
                doc = self.store.get_machine(key)
                driver = self.drivers(key, doc) if doc else None
                result = self.runner.resume(key, ext, driver)
            else:
                result = self.runner.run(key, ext, template=template)
        except Exception:
            log.exception("Upgrade job for %s on %s crashed", ext, key.name)
        finally:
            self._job_ended(key, ext, result)

    def _job_ended(self, key: MachineKey, ext: str, result: JobResult | None) -> None:
        """A job's end, wherever it ran (here, or on another node: arcext.cluster): book it and wake waiters."""
        with self._lock:
            self._inflight.discard((key.lower, ext))
            if result is not None:
                try:
                    self._on_result(result)
                except Exception:  # bookkeeping must not leave waiters hanging
                    log.exception("Could not record the result of %s on %s", ext, key.name)
            self._completions += 1
            idle = not self._inflight or self._completions % 16 == 0
            if idle:  # what run_until_idle and wait_idle wait for (waking them per job costs GIL switches)
                self._idle.notify_all()
        if idle:
            self.kick()  # a wave may have ended: let the scheduler move on (every 16 results, or when idle)

    def _on_result(self, result: JobResult) -> None:
        """Book a job's end. What comes next derives from the extension's record, not from the result:
        whatever job now waits on it is scheduled, and every running wave that has it open looks again."""
        self._stats[result.outcome] = self._stats.get(result.outcome, 0) + 1
        job = result.job
        key, ext = result.key, result.extension
        target = (key.lower, ext)
        wave_rollout = str(job.get("rolloutId") or "") if job.get("waveEntry") else ""
        if wave_rollout:  # a wave's claim waits for another job to end
            self._push(job["dueAt"], key, ext, wave_rollout)
        elif job.get("rolloutId") and job.get("wave") is not None:
            # a wave's job that waited for its maintenance window may end after its wave completed
            self._late_result(str(job["rolloutId"]), key, ext)
        # the running waves that have it open look again (besides the wave whose claim waited: its entry is back)
        opened = [
            rollout_id
            for rollout_id, waves in self._open.items()
            if rollout_id != wave_rollout and any(target in t for t in waves.values())
        ]
        look = partial(booking_look, ext=ext, newest=self._newest_rollouts(), rollout_ids=opened)
        due, behind, statuses = self._view_record(key, ext, look)
        if due is not None:
            self._push(due, key, ext)
        elif behind:
            # nothing waits and a newer version of its major rolls out (say an older rollout's wave just
            # upgraded a target the newer plan never had): it joins that rollout now, not at the next audit;
            # the waves look at the record as that left it (and a wave it joined looks too)
            self.reconsider(key, ext)
            opened = [
                r for r, waves in self._open.items() if r != wave_rollout and any(target in t for t in waves.values())
            ]
            statuses = [
                self.store.view_machine(key, partial(target_status, ext=ext, rollout_id=rollout_id))
                for rollout_id in opened
            ]
        for rollout_id, status in zip(opened, statuses, strict=True):
            if status == DONE:
                self._close_target(rollout_id, key, ext)
            elif status == CLAIM:
                self._push(iso(self.clock.now()), key, ext, rollout_id)
        operation_id = job.get("manualOperation")
        if operation_id and operation_id in self._manual and result.outcome not in (J.REQUEUED, J.POSTPONED):
            self._manual[operation_id].discard(target)
            if not self._manual[operation_id]:
                self._finish_manual(operation_id)

    def _progressed(self, seen: int) -> bool:
        return self._completions // 16 > seen // 16 or not self._inflight  # _execute notifies on these

    def wait_idle(self, timeout: float = 60.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: not self._inflight, timeout)
