"""The upgrade engine: rollouts of published versions, due jobs, manual upgrades, recovery.

State lives in the store (rollout records; each extension's job, and its outcome per rollout, on
its own record); the engine keeps only indexes it can rebuild at any time: a heap of due jobs, the
open targets of running waves, and the manual operations still waiting for their jobs. Whether a
wave's target is done is always read from its record (``_target_status``), after every job's end
and by the invariant check (``audit``) that runs after every ``run_until_idle`` and every minute on
the wall clock, so nothing a restart would repair ever needs a restart.

One rule orders the upgrades of one extension: one job at a time; a manual upgrade's first attempt
is never replaced by an automatic job; a newer automatic job a manual upgrade displaced comes back
when the manual job has ended.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypedDict

from .. import errors
from ..activity import ActivityLog, repair_event
from ..catalog import Catalog
from ..clock import Clock, iso, parse_iso
from ..crypto import SecretBox
from ..hosts.base import HostDriver
from ..ids import MachineKey, parse_resource_id
from ..operations import FAILED as OP_FAILED
from ..operations import IN_PROGRESS, SUCCEEDED, new_operation
from ..store.base import MachineDoc, Record, Store
from ..versions import major, newer, version_key
from . import jobs as J
from .planner import Candidate, plan_waves
from .policy import handler_matches, ineligibility
from .settings import EngineSettings
from .workers import WorkerPool

log = logging.getLogger(__name__)

ACTIVE, PAUSED, FROZEN, COMPLETED = "Active", "Paused", "Frozen", "Completed"
HELD = (PAUSED, FROZEN)
FAILED_OUTCOMES = (J.ROLLED_BACK, J.DROPPED, J.NOT_RUN)
#: a wave's target outside its machine's maintenance windows: concluded for the wave (counted as skipped,
#: never as a failure); its job waits on the record for the window
WAITING_FOR_WINDOW = "WaitingForMaintenanceWindow"
WINDOW_BLOCK = "MaintenanceWindow"

DriverResolver = Callable[[MachineKey, MachineDoc], HostDriver | None]
#: A due job: (due time, sequence, (subscription, group, machine), extension key, rollout id of a wave
#: target not yet claimed, or "").
Entry = tuple[str, int, tuple[str, str, str], str, str]


def _handler(record: dict[str, Any]) -> str:
    props = record["resource"]["properties"]
    return f"{props.get('publisher', '')}.{props.get('type', '')}".lower()


DONE, OWN, BUSY, CLAIM = "done", "own", "busy", "claim"


def _target_status(doc: MachineDoc | None, ext: str, rollout_id: str) -> str:
    """Where a wave's target stands, from durable state only (the extension's record):

    done  its outcome for the rollout is recorded, or the extension is gone;
    own   the rollout's own attempt is queued or running;
    busy  another upgrade runs, or a manual upgrade's first attempt waits: one at a time;
    claim nothing of the rollout's on it: a wave entry lets the claim decide (run it, take a waiting
          job of the same version over, or conclude it as up to date, superseded or skipped)."""
    record = doc["extensions"].get(ext) if doc else None
    if record is None or rollout_id in (record.get("outcomes") or {}):
        return DONE
    job = record.get("upgrade")
    if job:
        if job.get("rolloutId") == rollout_id and not job.get("firstAttemptDone"):
            return OWN
        if job["state"] == J.RUNNING or J.manual_pending(job):
            return BUSY
    return CLAIM


def _concludes_without_host(doc: MachineDoc | None, ext: str, version: str) -> bool:
    """Would a wave's claim of this target conclude it without touching the host (opted out, up to
    date, superseded, failed for good)? Then a target without a host connection need not wait for one."""
    record = doc["extensions"].get(ext) if doc else None
    if record is None:
        return True
    job = record.get("upgrade")
    if job and job["state"] in J.WAITING and newer(job["toVersion"], version):
        return True
    return ineligibility(record, True, version) is not None


def _waiting_due(doc: MachineDoc | None, ext: str) -> str | None:
    record = doc["extensions"].get(ext) if doc else None
    job = record.get("upgrade") if record else None
    return str(job["dueAt"]) if job and job["state"] in J.WAITING else None


def _outcome_of(doc: MachineDoc | None, ext: str, rollout_id: str) -> str | None:
    """What the rollout did to the extension (its remembered outcome), read without copying the document."""
    record = doc["extensions"].get(ext) if doc else None
    outcome: str | None = (record.get("outcomes") or {}).get(rollout_id) if record else None
    return outcome


def _count_of(outcome: str | None) -> str:
    """Which of a rollout's counts an outcome adds to."""
    if outcome in (J.SUCCEEDED, J.UP_TO_DATE):
        return "succeeded"
    return "failed" if outcome in FAILED_OUTCOMES else "skipped"


def _waiting_version(doc: MachineDoc | None, ext: str) -> str | None:
    record = doc["extensions"].get(ext) if doc else None
    job = record.get("upgrade") if record else None
    return str(job["toVersion"]) if job and job["state"] in J.WAITING else None


def _behind(record: dict[str, Any] | None, newest: dict[tuple[str, str, str], str]) -> bool:
    """An opted-in extension with nothing queued or running, on an older version of its major than the
    newest rollout of its type has (``newest``: see ``Engine._newest_rollouts``): it should join that one."""
    if record is None or record.get("upgrade") or record.get("operation") or record.get("droppedOut"):
        return False
    props = record["resource"]["properties"]
    current = props.get("typeHandlerVersion") or ""
    if not current or not props.get("enableAutomaticUpgrade", True):
        return False
    best = newest.get((str(props.get("publisher", "")).lower(), str(props.get("type", "")).lower(), major(current)))
    return bool(best and newer(best, current))


def _behind_in(doc: MachineDoc | None, ext: str, newest: dict[tuple[str, str, str], str]) -> bool:
    return _behind(doc["extensions"].get(ext) if doc else None, newest)


def _key_of(target: list[str]) -> tuple[MachineKey, str]:
    return MachineKey(target[0], target[1], target[2]), target[3]


class Repair(TypedDict):
    """One repair the engine's invariant check made."""

    invariant: str
    subject: str  # the resource id it concerns
    repair: str
    correlationId: str


def _repair(invariant: str, subject: str, repair: str, correlation_id: str) -> Repair:
    return {"invariant": invariant, "subject": subject, "repair": repair, "correlationId": correlation_id or subject}


@dataclass(frozen=True)
class _Seen:
    """An extension as the audit's scan sees it."""

    key: MachineKey
    extension: str
    state: str
    due: str
    behind: bool


class Engine:
    def __init__(
        self,
        store: Store,
        box: SecretBox,
        clock: Clock,
        catalog: Catalog,
        activity: ActivityLog,
        drivers: DriverResolver,
        settings: EngineSettings | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.catalog = catalog
        self.activity = activity
        self.drivers = drivers
        self.settings = settings or EngineSettings()
        self.runner = J.JobRunner(
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
        self._pool = WorkerPool(self.settings.concurrency, "arcext-upgrade")
        self._idle = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats: dict[str, int] = {}
        self._held: list[Entry] = []
        self._manual_queue: list[Entry] = []
        self._completions = 0  # manual jobs, for the background pass on a manual clock
        self._members: dict[str, dict[tuple[str, str], int]] = {}  # rollout -> target -> wave index (the plan)
        self._stalled: dict[str, str] = {}  # rollout -> why it cannot move (the last audit's finding)
        #: maintenance windows (arcext.maintenance): None if an automatic upgrade may start on a machine
        #: now, else when its next window opens; unset, nothing is gated
        self.window_gate: Callable[[MachineDoc, datetime], datetime | None] | None = None
        self.windows_in_use: Callable[[], bool] = lambda: self.window_gate is not None  # cheap: any assignment?
        self._repairs = 0
        # The engine is the only writer of rollouts: it keeps them in memory and writes each change through.
        self._rollouts: dict[str, Record] = {r["id"]: r for r in store.list_rollouts()}

    # --- life cycle ---------------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        self.recover()
        if background:
            self._thread = threading.Thread(target=self._loop, name="arcext-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(cancel_pending=True)

    def _loop(self) -> None:
        # On a manual clock the background pass only starts what a user asked for (manual upgrades);
        # automatic work moves when POST /arcext/v1/engine/run says so, which keeps tests deterministic.
        from ..clock import ManualClock

        automatic = not isinstance(self.clock, ManualClock)
        pruned_on = ""
        audit_at = time.monotonic() + self.settings.audit_seconds
        while not self._stop.is_set():
            try:
                today = iso(self.clock.now())[:10]
                if today != pruned_on:  # the activity log keeps 90 days
                    self.activity.prune(self.clock.now())
                    pruned_on = today
                self.advance(automatic=automatic)
                if automatic and time.monotonic() >= audit_at:
                    audit_at = time.monotonic() + self.settings.audit_seconds
                    self.audit()
            except Exception:  # the scheduler must outlive one bad tick
                log.exception("Engine tick failed")
            self._wake.wait(self.settings.tick_seconds)
            self._wake.clear()

    def _rollout_list(self) -> list[Record]:
        with self._lock:
            return list(self._rollouts.values())

    def _save_rollout(self, rollout: Record) -> None:
        with self._lock:
            self.store.put_rollout(rollout)
            self._rollouts[rollout["id"]] = rollout

    def reset(self) -> None:
        """Forget every index (tests' reset; the store is cleared by the caller)."""
        self.wait_idle()
        with self._lock:
            self._rollouts.clear()
            self._due.clear()
            self._open.clear()
            self._manual.clear()
            self._held = []
            self._stats.clear()
            self._members.clear()
            self._stalled.clear()

    def kick(self) -> None:
        self._wake.set()

    def recover(self) -> None:
        """Rebuild indexes from the store and reconcile jobs a crash left Running."""

        def project(doc: MachineDoc) -> list[tuple[MachineKey, str, str, str]] | None:
            parsed = parse_resource_id(doc["machine"]["id"])
            if parsed is None:
                return None
            found = [
                (parsed[0], ext, r["upgrade"]["state"], r["upgrade"].get("dueAt", ""))
                for ext, r in doc["extensions"].items()
                if r.get("upgrade")
            ]
            return found or None

        running: list[tuple[MachineKey, str]] = []
        with self._lock:
            for found in self.store.project_machines(project):
                for key, ext, state, due in found:
                    if state == J.RUNNING:
                        running.append((key, ext))
                    elif state in J.WAITING:
                        self._push(due, key, ext)
            self._rebuild_open_waves()
            for op in self.store.list_operations(IN_PROGRESS):
                if op["kind"] == "extension.upgrade":
                    self._manual[op["id"]] = {(MachineKey(*op["machine"]).lower, t["extension"]) for t in op["targets"]}
        for key, ext in running:
            log.info("Reconciling the upgrade of %s on %s interrupted by a restart", ext, key.name)
            self._submit(key, ext, resume=True)
        self._refresh_manual_operations()

    def _rebuild_open_waves(self, repair: bool = False) -> list[Repair]:
        """Derive the open targets of every running wave from the extension records; schedule a claim
        for each target with nothing of the rollout's on it. With ``repair`` (the audit), report every
        way the in-memory sets and schedule disagreed with that."""
        found: list[Repair] = []
        now = iso(self.clock.now())
        scheduled = {(MachineKey(*e[2]).lower, e[3], e[4]) for e in itertools.chain(self._due, self._held)}
        for rollout in self._rollout_list():
            if rollout["state"] == COMPLETED:
                continue
            for wave in rollout["waves"]:
                if wave["state"] != "Running":
                    continue
                open_targets: set[tuple[str, str]] = set()
                before = self._open.get(rollout["id"], {}).get(wave["index"], set())
                for batch in wave["batches"]:
                    for target in batch["targets"]:
                        key, ext = _key_of(target)
                        status = self.store.view_machine(
                            key, partial(_target_status, ext=ext, rollout_id=rollout["id"])
                        )
                        if status == DONE:
                            if repair and (key.lower, ext) in before:
                                found.append(
                                    _repair(
                                        "WaveWaitsForConcludedTarget",
                                        key.extension_id(ext),
                                        f"wave {wave['index']} of rollout {rollout['id']} still waited for it "
                                        "although it had concluded; closed it",
                                        rollout["id"],
                                    )
                                )
                            continue
                        open_targets.add((key.lower, ext))
                        if (
                            status == CLAIM
                            and (key.lower, ext) not in self._inflight
                            and (key.lower, ext, rollout["id"]) not in scheduled
                        ):
                            self._push(now, key, ext, rollout["id"])
                            if repair:
                                found.append(
                                    _repair(
                                        "WaveTargetIdle",
                                        key.extension_id(ext),
                                        f"in running wave {wave['index']} of rollout {rollout['id']} it was neither "
                                        "running nor queued; queued it for the wave",
                                        rollout["id"],
                                    )
                                )
                self._open.setdefault(rollout["id"], {})[wave["index"]] = open_targets
        return found

    # --- invariants -----------------------------------------------------------------------------
    def audit(self) -> list[Repair]:
        """Check the engine's invariants against the store, repair what can be repaired (each repair
        logged and written to the activity log), and mark what cannot move as Stalled."""
        with self._lock:
            repairs = self._rebuild_open_waves(repair=True)
            repairs += self._audit_jobs()
            repairs += self._audit_operations()
            self._find_stalls()
        now = self.clock.now()
        events = []
        for r in repairs:
            log.warning("Engine repair (%s) of %s: %s", r["invariant"], r["subject"], r["repair"])
            if parse_resource_id(r["subject"]) is not None:
                events.append(
                    repair_event(
                        resource_id=r["subject"],
                        invariant=r["invariant"],
                        repair=r["repair"],
                        now=now,
                        correlation_id=r["correlationId"],
                    )
                )
        if events:
            self.activity.record(events)
        self._repairs += len(repairs)
        if repairs:
            self.kick()
        return repairs

    def _newest_rollouts(self) -> dict[tuple[str, str, str], str]:
        """The newest rollout's version per (publisher, type, major), lower-case names: a new major is
        never applied automatically, so each major has its own newest version."""
        newest: dict[tuple[str, str, str], str] = {}
        for rollout in self._rollout_list():
            handler = (rollout["publisher"].lower(), rollout["type"].lower(), major(rollout["version"]))
            if handler not in newest or newer(rollout["version"], newest[handler]):
                newest[handler] = rollout["version"]
        return newest

    def _audit_jobs(self) -> list[Repair]:
        """Claimed jobs nothing runs, queued jobs nothing schedules, eligible extensions nothing upgrades."""
        newest = self._newest_rollouts()

        def project(doc: MachineDoc) -> list[_Seen] | None:
            parsed = parse_resource_id(doc["machine"]["id"])
            if parsed is None:
                return None
            out: list[_Seen] = []
            for ext, r in doc["extensions"].items():
                job = r.get("upgrade")
                behind = _behind(r, newest)
                if job or behind:
                    out.append(_Seen(parsed[0], ext, job["state"] if job else "", job["dueAt"] if job else "", behind))
            return out or None

        repairs: list[Repair] = []
        scheduled = {
            (MachineKey(*e[2]).lower, e[3]) for e in itertools.chain(self._due, self._held, self._manual_queue)
        }
        for seen in (s for found in self.store.project_machines(project) for s in found):
            key, ext = seen.key, seen.extension
            if (key.lower, ext) in self._inflight:
                continue
            if seen.state == J.RUNNING:
                self._submit(key, ext, resume=True)
                repairs.append(
                    _repair(
                        "ClaimedJobNotRunning",
                        key.extension_id(ext),
                        "its job was Running with no worker behind it; reconciled it with the host",
                        "",
                    )
                )
            elif seen.state in J.WAITING and (key.lower, ext) not in scheduled:
                self._push(seen.due, key, ext)
                repairs.append(
                    _repair(
                        "QueuedJobNotScheduled",
                        key.extension_id(ext),
                        f"its queued job was not scheduled; scheduled it for {seen.due}",
                        "",
                    )
                )
            elif seen.behind and self.reconsider(key, ext):
                repairs.append(
                    _repair(
                        "EligibleExtensionNotQueued",
                        key.extension_id(ext),
                        "it was opted in and behind the "
                        "newest rollout of its type with nothing queued; it joined that rollout",
                        "",
                    )
                )
        return repairs

    def _audit_operations(self) -> list[Repair]:
        """A manual upgrade's operation InProgress with no job behind it is finished from the records."""
        repairs: list[Repair] = []
        for op in self.store.list_operations(IN_PROGRESS):
            if op["kind"] != "extension.upgrade":
                continue
            key = MachineKey(*op["machine"])
            doc = self.store.get_machine(key)
            behind = set()
            for target in op["targets"]:
                ext = target["extension"]
                record = doc["extensions"].get(ext) if doc else None
                job = (record or {}).get("upgrade") or {}
                if (
                    (key.lower, ext) in self._inflight
                    or job.get("manualOperation") == op["id"]
                    and (op["id"] not in (record or {}).get("outcomes", {}))
                ):
                    behind.add((key.lower, ext))
            if behind:
                self._manual[op["id"]] = behind
                continue
            self._finish_manual(op["id"])
            repairs.append(
                _repair(
                    "OperationWithoutJob",
                    op["resourceId"] if "resourceId" in op else key.id,
                    f"operation {op['id']} was InProgress with no upgrade job behind it; finished it from "
                    "the extension records",
                    op["id"],
                )
            )
        return repairs

    def _find_stalls(self) -> None:
        """A rollout whose running wave has waited past ``stall_after`` on targets that do not move."""
        now = self.clock.now()
        stalled: dict[str, str] = {}
        for rollout in self._rollout_list():
            if rollout["state"] != ACTIVE:
                continue
            for wave in rollout["waves"]:
                if wave["state"] != "Running":
                    continue
                open_targets = self._open.get(rollout["id"], {}).get(wave["index"], set())
                started = parse_iso(str(wave.get("startedAt") or iso(now)))
                if not open_targets or now - started < self.settings.stall_after:
                    continue
                waits = []
                for lower, ext in sorted(open_targets)[:3]:
                    doc_key = MachineKey(*lower.split("/"))
                    doc = self.store.get_machine(doc_key)
                    record = doc["extensions"].get(ext) if doc else None
                    job = (record or {}).get("upgrade") or {}
                    name = f"{doc['machine']['name'] if doc else lower}/{ext}"
                    available = getattr(self.drivers, "available", None)
                    reachable = bool(doc and (available(doc) if available else self.drivers(doc_key, doc)))
                    if job.get("blockedReason") == "NoHostConnection" or (doc and not reachable):
                        waits.append(f"{name}: no host connection is configured")
                    elif record and record.get("operation"):
                        waits.append(f"{name}: busy with operation {record['operation']}")
                    elif job:
                        waits.append(f"{name}: {job['state']} {job.get('toVersion')} due {job.get('dueAt')}")
                    else:
                        waits.append(f"{name}: waiting for the host")
                stalled[rollout["id"]] = (
                    f"wave {wave['index']} ({wave['region']}) started at {wave.get('startedAt')} and still waits for "
                    f"{len(open_targets)} extension(s): "
                    + "; ".join(waits)
                    + ". Fix or remove those extensions (or their host connection); the wave then completes."
                )
        self._stalled = stalled

    # --- publishing ---------------------------------------------------------------------------
    def on_version_published(self, version: Record) -> Record | None:
        """Plan a rollout for a newly published version of a type that supports auto-upgrade."""
        type_record = self.catalog.get_type(version["publisher"], version["type"])
        if not type_record or not type_record.get("autoUpgradeSupported"):
            return None
        now = self.clock.now()
        target = version["version"]

        def project(doc: MachineDoc) -> list[Candidate] | None:
            parsed = parse_resource_id(doc["machine"]["id"])
            if parsed is None:
                return None
            key = parsed[0]
            out = [
                Candidate(key.subscription, key.resource_group, key.name, ext, doc["machine"]["location"].lower())
                for ext, record in doc["extensions"].items()
                if handler_matches(record, version["publisher"], version["type"])
                and ineligibility(record, True, target) is None
            ]
            return out or None

        candidates = [c for found in self.store.project_machines(project) for c in found]
        window = self.settings.critical_window if version.get("critical") else self.settings.standard_window
        rollout_id = str(uuid.uuid4())
        rollout: Record = {
            "id": rollout_id,
            "publisher": version["publisher"],
            "type": version["type"],
            "version": target,
            "critical": bool(version.get("critical")),
            "createdAt": iso(now),
            "windowSeconds": window.total_seconds(),
            "state": ACTIVE if candidates else COMPLETED,
            "stateReason": None if candidates else "No eligible extensions when the version was published.",
            "eligible": len(candidates),
            "waves": plan_waves(rollout_id, candidates, self.settings.batch_fraction, window, now),
        }
        self._save_rollout(rollout)
        log.info(
            "Planned rollout %s of %s.%s %s: %d extensions in %d waves over %s",
            rollout_id,
            version["publisher"],
            version["type"],
            target,
            len(candidates),
            len(rollout["waves"]),
            window,
        )
        self.kick()
        return rollout

    def reconsider(self, key: MachineKey, ext: str) -> bool:
        """An extension was installed or changed after rollouts were planned: join the newest rollout
        of its type that it is eligible for, due with its region's next wave, or else at the end of
        the rollout's window (so a late joiner still gets the version within the window, paced)."""
        with self._lock:
            doc = self.store.get_machine(key)
            record = doc["extensions"].get(ext) if doc else None
            if doc is None or record is None or record.get("upgrade"):
                return False
            props = record["resource"]["properties"]
            type_record = self.catalog.get_type(props.get("publisher", ""), props.get("type", ""))
            supported = bool(type_record and type_record.get("autoUpgradeSupported"))
            fitting = [
                r
                for r in self._rollout_list()
                if r["state"] in (ACTIVE, COMPLETED, PAUSED, FROZEN)
                and handler_matches(record, r["publisher"], r["type"])
                and ineligibility(record, supported, r["version"]) is None
            ]
            if not fitting:
                return False
            best = max(fitting, key=lambda r: version_key(r["version"]))
            if best["id"] not in (record.get("outcomes") or {}):
                planned = self._planned_wave(best, key, ext)
                if planned is not None and planned["state"] != "Completed":
                    # a target of the plan (say, still being created when the version was published):
                    # its wave claims it; it is not a late joiner
                    if planned["state"] == "Running":
                        self._open.setdefault(best["id"], {}).setdefault(planned["index"], set()).add((key.lower, ext))
                        self._push(iso(self.clock.now()), key, ext, best["id"])
                        self.kick()
                    return False
            region = doc["machine"]["location"].lower()
            now = self.clock.now()
            upcoming = [w for w in best["waves"] if w["state"] == "Pending" and w["region"] == region]
            if upcoming:
                due = max(iso(now), upcoming[0]["notBefore"])
            else:
                window_end = parse_iso(best["createdAt"]) + timedelta(seconds=best["windowSeconds"])
                due = iso(max(now, window_end))
            job = {
                "toVersion": best["version"],
                "rolloutId": best["id"],
                "correlationId": best["id"],
                "caller": None,
                "critical": best["critical"],
                "wave": None,
                "retry": True,
                "firstAttemptDone": True,  # a late joiner: not part of any wave's breaker arithmetic
            }
            if not self._queue_job(key, ext, job, now, automatic=True):
                return False

            def set_due(d: MachineDoc | None) -> tuple[MachineDoc | None, None]:
                rec = d["extensions"].get(ext) if d else None
                if rec and rec.get("upgrade"):
                    rec["upgrade"]["dueAt"] = due
                return d, None

            self.store.mutate_machine(key, set_due, extension=ext)
            self._push(due, key, ext)
            log.info("%s on %s joins rollout %s to %s, due %s", ext, key.name, best["id"], best["version"], due)
        self.kick()
        return True

    def _planned_wave(self, rollout: Record, key: MachineKey, ext: str) -> dict[str, Any] | None:
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

    # --- scheduling -----------------------------------------------------------------------------
    def _push(self, due: str, key: MachineKey, ext: str, rollout_id: str = "") -> None:
        heapq.heappush(
            self._due, (due, next(self._seq), (key.subscription, key.resource_group, key.name), ext, rollout_id)
        )

    @staticmethod
    def wave_job(rollout: Record, wave_index: int | None) -> dict[str, Any]:
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

    def _advance_rollout(self, rollout: Record, now: datetime) -> None:
        changed = False
        for wave in rollout["waves"]:
            if wave["state"] == "Completed":
                continue
            if wave["state"] == "Running":
                if self._open.get(rollout["id"], {}).get(wave["index"]):
                    break
                self._complete_wave(rollout, wave, now)
                changed = True
                if rollout["state"] != ACTIVE:
                    break
                continue
            if wave["notBefore"] <= iso(now):
                self._start_wave(rollout, wave, now)
                changed = True
                if self._open.get(rollout["id"], {}).get(wave["index"]):
                    break
                continue
            break
        if all(w["state"] == "Completed" for w in rollout["waves"]) and rollout["state"] == ACTIVE:
            rollout["state"] = COMPLETED
            rollout["completedAt"] = iso(now)
            changed = True
        if changed:
            self._save_rollout(rollout)

    def _start_wave(self, rollout: Record, wave: dict[str, Any], now: datetime) -> None:
        # Nothing is written per target: the wave's targets are in the (durable) plan, and a target's
        # job is written once, as Running, when a worker claims it (JobRunner.claim with the template).
        open_targets: set[tuple[str, str]] = set()
        for batch in wave["batches"]:
            for target in batch["targets"]:
                key, ext = _key_of(target)
                open_targets.add((key.lower, ext))
                waiting = self.store.view_machine(key, partial(_waiting_version, ext=ext))
                if waiting is not None and newer(rollout["version"], waiting):
                    # an older version's job waits here (a retry, a late joiner): this wave supersedes it now,
                    # before a worker could run the older upgrade first
                    job = self.wave_job(rollout, wave["index"])
                    if self._queue_job(key, ext, job, now, automatic=True):
                        self._push(iso(now), key, ext)
                        continue
                self._push(iso(now), key, ext, rollout["id"])
        wave["state"] = "Running"
        wave["startedAt"] = iso(now)
        self._open.setdefault(rollout["id"], {})[wave["index"]] = open_targets
        log.info(
            "Rollout %s (%s %s): wave %d in %s started with %d extensions",
            rollout["id"],
            rollout["type"],
            rollout["version"],
            wave["index"],
            wave["region"],
            len(open_targets),
        )

    def _queue_job(self, key: MachineKey, ext: str, job: dict[str, Any], now: datetime, automatic: bool) -> bool:
        """Put a Queued job on the extension's record unless it is ineligible or already headed higher."""
        type_ok: dict[tuple[str, str], bool] = {}

        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, bool]:
            record = doc["extensions"].get(ext) if doc else None
            if doc is None or record is None:
                return doc, False
            props = record["resource"]["properties"]
            if automatic:
                pub, typ = props.get("publisher", ""), props.get("type", "")
                if (pub, typ) not in type_ok:
                    t = self.catalog.get_type(pub, typ)
                    type_ok[(pub, typ)] = bool(t and t.get("autoUpgradeSupported"))
                reason = ineligibility(record, type_ok[(pub, typ)], job["toVersion"])
                if reason is not None:
                    J.remember_outcome(record, job, "Skipped")
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
                displaced = {k: v for k, v in current.items() if k != "displaced"}  # comes back afterwards
            elif (
                automatic
                and current
                and current.get("rolloutId")
                and current["rolloutId"] != job.get("rolloutId")
                and not current.get("firstAttemptDone")
            ):
                J.remember_outcome(record, current, J.SUPERSEDED)
                superseded.append(current["rolloutId"])
            # (a manual job replacing a wave's own job of the same or an older version leaves the wave
            # waiting: once the manual job has ended the wave finds the extension up to date, or claims it)
            if displaced and newer(displaced["toVersion"], job["toVersion"]):
                job["displaced"] = displaced
            job.update(
                state=J.QUEUED,
                attempt=1,
                dueAt=iso(now),
                resourceId=record["resource"]["id"],
            )
            record["upgrade"] = job
            return doc, True

        superseded: list[str] = []
        queued: bool = self.store.mutate_machine(key, change, extension=ext)
        for rollout_id in superseded:  # the older rollout's wave no longer waits for this target
            self._close_target(rollout_id, key, ext)
        return queued

    def _complete_wave(self, rollout: Record, wave: dict[str, Any], now: datetime) -> None:
        wave["state"] = "Completed"
        wave["completedAt"] = iso(now)
        tripped: list[str] = []
        for batch in wave["batches"]:
            counts = {"succeeded": 0, "failed": 0, "skipped": 0}
            up_to_date = 0
            for target in batch["targets"]:
                key, ext = _key_of(target)
                outcome = self.store.view_machine(key, partial(_outcome_of, ext=ext, rollout_id=rollout["id"]))
                counts[_count_of(outcome)] += 1
                if outcome == J.UP_TO_DATE:
                    up_to_date += 1
            batch.update(counts)
            attempted = counts["succeeded"] - up_to_date + counts["failed"]
            if (
                attempted
                and counts["failed"] >= self.settings.breaker_min_failures
                and counts["failed"] / attempted > self.settings.breaker_fraction
            ):
                tripped.append(
                    f"{counts['failed']} of {attempted} upgrades failed in the batch of subscription "
                    f"{batch['subscription']} in wave {wave['index']} ({wave['region']})"
                )
        self._open.get(rollout["id"], {}).pop(wave["index"], None)
        if tripped:
            rollout["state"] = FROZEN
            rollout["stateReason"] = (
                "Circuit breaker: "
                + "; ".join(tripped)
                + f" (more than {self.settings.breaker_fraction:.0%}). Resume the rollout once the cause is fixed."
            )
            rollout["frozenAt"] = iso(now)
            log.warning(
                "Rollout %s of %s %s frozen: %s",
                rollout["id"],
                rollout["type"],
                rollout["version"],
                rollout["stateReason"],
            )

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
        while True:
            if not automatic:
                if not pending:
                    break
                entry = pending.pop()
            else:
                if not self._due or self._due[0][0] > stamp:
                    break
                entry = heapq.heappop(self._due)
            _, _, parts, ext, wave_rollout = entry
            key = MachineKey(*parts)
            if (key.lower, ext) in self._inflight:
                # one job at a time per extension: look again once the running one is done
                (later if automatic else manual_again).append(entry)
                continue
            job, reachable, exists = self.store.view_machine(key, partial(self._job_and_reach, key=key, ext=ext))
            template: dict[str, Any] | None = None
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
                    self._wait_for_window(key, ext, opens, template, wave_rollout, now)
                    continue
            if not reachable and not (
                template is not None
                and self.store.view_machine(
                    key, partial(_concludes_without_host, ext=ext, version=template["toVersion"])
                )
            ):
                if template is None:
                    self._postpone(key, ext, "NoHostConnection")
                else:
                    due_later = iso(now + self.settings.retry_delay)
                    later.append((due_later, entry[1], entry[2], entry[3], entry[4]))
                continue
            self._submit(key, ext, template=template)
            dispatched += 1
        self._held.extend(held_again)
        self._manual_queue.extend(manual_again)
        for entry in later:
            heapq.heappush(self._due, entry)
        self._stats["dispatched"] = self._stats.get("dispatched", 0) + dispatched
        return dispatched

    def _wave_index(self, rollout: Record, key: MachineKey, ext: str) -> int | None:
        for wave in rollout["waves"]:
            if wave["state"] == "Running" and (key.lower, ext) in self._open.get(rollout["id"], {}).get(
                wave["index"], ()
            ):
                return int(wave["index"])
        return None

    def _close_target(self, rollout_id: str, key: MachineKey, ext: str) -> None:
        for open_targets in self._open.get(rollout_id, {}).values():
            open_targets.discard((key.lower, ext))

    def _job_and_reach(
        self, doc: MachineDoc | None, key: MachineKey, ext: str
    ) -> tuple[dict[str, Any] | None, bool, bool]:
        """The extension's job, whether its machine has a driver (asked without building one), and
        whether the extension exists."""
        record = doc["extensions"].get(ext) if doc else None
        if doc is None or record is None:
            return None, False, False
        job = record.get("upgrade")
        available = getattr(self.drivers, "available", None)
        reachable = available(doc) if available is not None else self.drivers(key, doc) is not None
        return (dict(job) if job else None), reachable, True

    def _window_opens(self, doc: MachineDoc | None, now: datetime) -> datetime | None:
        gate = self.window_gate
        return gate(doc, now) if gate is not None and doc is not None else None

    def _wait_for_window(
        self,
        key: MachineKey,
        ext: str,
        opens: datetime,
        template: dict[str, Any] | None,
        wave_rollout: str,
        now: datetime,
    ) -> None:
        """Outside the machine's maintenance windows: the job waits on the extension's record until the next
        window opens. A wave does not wait for it (nor count it as a failure): its target is concluded for
        the wave as WaitingForMaintenanceWindow, and the job keeps its rollout id and runs in the window."""
        if template is not None:
            self._queue_job(key, ext, dict(template), now, automatic=True)
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

    def _postpone(self, key: MachineKey, ext: str, reason: str) -> None:
        due = iso(self.clock.now() + self.settings.retry_delay)

        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, None]:
            record = doc["extensions"].get(ext) if doc else None
            if record and record.get("upgrade") and record["upgrade"]["state"] in J.WAITING:
                record["upgrade"]["dueAt"] = due
                record["upgrade"]["blockedReason"] = reason
            return doc, None

        self.store.mutate_machine(key, change, extension=ext)
        self._push(due, key, ext)

    def _submit(self, key: MachineKey, ext: str, resume: bool = False, template: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._inflight.add((key.lower, ext))
            self._pool.submit(self._execute, key, ext, resume, template)

    def _execute(self, key: MachineKey, ext: str, resume: bool, template: dict[str, Any] | None) -> None:
        result: J.JobResult | None = None
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

    def _on_result(self, result: J.JobResult) -> None:
        """Book a job's end. What comes next derives from the extension's record, not from the result:
        whatever job now waits on it is scheduled, and every running wave that has it open looks again."""
        self._stats[result.outcome] = self._stats.get(result.outcome, 0) + 1
        job = result.job
        key, ext = result.key, result.extension
        target = (key.lower, ext)
        wave_rollout = str(job.get("rolloutId") or "") if job.get("waveEntry") else ""
        if wave_rollout:  # a wave's claim waits for another job to end
            self._push(job["dueAt"], key, ext, wave_rollout)
        due = self.store.view_machine(key, partial(_waiting_due, ext=ext))
        if due is not None:
            self._push(due, key, ext)
        elif self.store.view_machine(key, partial(_behind_in, ext=ext, newest=self._newest_rollouts())):
            # nothing waits and a newer version of its major rolls out (say an older rollout's wave just
            # upgraded a target the newer plan never had): it joins that rollout now, not at the next audit
            self.reconsider(key, ext)
        for rollout_id, waves in self._open.items():
            if rollout_id == wave_rollout or not any(target in t for t in waves.values()):
                continue
            status = self.store.view_machine(key, partial(_target_status, ext=ext, rollout_id=rollout_id))
            if status == DONE:
                self._close_target(rollout_id, key, ext)
            elif status == CLAIM:
                self._push(iso(self.clock.now()), key, ext, rollout_id)
        operation_id = job.get("manualOperation")
        if operation_id and operation_id in self._manual and result.outcome not in (J.REQUEUED, J.POSTPONED):
            self._manual[operation_id].discard(target)
            if not self._manual[operation_id]:
                self._finish_manual(operation_id)

    # --- waiting for work -----------------------------------------------------------------------
    def _progressed(self, seen: int) -> bool:
        return self._completions // 16 > seen // 16 or not self._inflight  # _execute notifies on these

    def wait_idle(self, timeout: float = 60.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: not self._inflight, timeout)

    def _run_rounds(self, max_rounds: int) -> None:
        for _ in range(max_rounds * 100):
            dispatched = self.advance()
            with self._idle:
                if self._inflight:
                    # advance again as jobs finish (a few at a time), so one rollout's next wave starts
                    # when its current one ends, not when every rollout's jobs have ended
                    self._idle.wait_for(partial(self._progressed, self._completions), 5.0)
                    continue
            if dispatched:
                continue
            # nothing runs and nothing was due: one more advance may complete waves and start the next
            if self.advance() == 0:
                self.wait_idle()
                with self._lock:
                    if not self._inflight:
                        break

    def run_until_idle(self, max_rounds: int = 10_000) -> dict[str, Any]:
        """Run everything that is due now, round after round, until nothing more happens."""
        before = dict(self._stats)
        repairs = 0
        for _check in range(4):
            self._run_rounds(max_rounds)
            # idle: check the engine's invariants; a repair may have made work due now
            found = len(self.audit())
            repairs += found
            if not found:
                break
        summary = {k: self._stats.get(k, 0) - before.get(k, 0) for k in self._stats}
        return {
            "now": iso(self.clock.now()),
            "dispatched": summary.get("dispatched", 0),
            "succeeded": summary.get(J.SUCCEEDED, 0),
            "rolledBack": summary.get(J.ROLLED_BACK, 0),
            "rollbackFailed": summary.get(J.DROPPED, 0),
            "notRun": summary.get(J.NOT_RUN, 0),
            "cancelled": summary.get(J.CANCELLED, 0),
            "repairs": repairs,
            "pending": len(self._due),
            "rollouts": [
                {"id": r["id"], "type": r["type"], "version": r["version"], "state": r["state"]}
                for r in self._rollout_list()
            ],
        }

    # --- may this job run now? ------------------------------------------------------------------
    def _may_run(self, record: dict[str, Any], job: dict[str, Any]) -> str | None:
        if job.get("manualOperation") and job.get("attempt", 1) == 1:
            return None  # the user asked for it now
        props = record["resource"]["properties"]
        if not props.get("enableAutomaticUpgrade", True):
            return "AutomaticUpgradeDisabled"
        if record.get("droppedOut"):
            return "DroppedOutAfterFailedRollback"
        type_record = self.catalog.get_type(props.get("publisher", ""), props.get("type", ""))
        if not job.get("manualOperation") and not (type_record and type_record.get("autoUpgradeSupported")):
            return "AutomaticUpgradeNotSupported"
        return None

    # --- operator controls -------------------------------------------------------------------------
    def set_rollout_state(self, rollout_id: str, action: str) -> Record:
        with self._lock:
            rollout = self._rollouts.get(rollout_id)
            if rollout is None:
                raise errors.resource_not_found("arcext/rollouts", rollout_id)
            now = iso(self.clock.now())
            if action == "pause":
                if rollout["state"] == COMPLETED:
                    raise errors.conflict(f"Rollout {rollout_id} has completed; there is nothing to pause.")
                rollout["state"], rollout["stateReason"] = PAUSED, f"Paused by an operator at {now}."
            elif action == "freeze":
                if rollout["state"] == COMPLETED:
                    raise errors.conflict(f"Rollout {rollout_id} has completed; there is nothing to freeze.")
                rollout["state"], rollout["stateReason"] = FROZEN, f"Frozen by an operator at {now}."
            elif action == "resume":
                if rollout["state"] not in HELD:
                    raise errors.conflict(
                        f"Rollout {rollout_id} is {rollout['state']}; only a paused or frozen rollout can be resumed."
                    )
                rollout["state"], rollout["stateReason"] = ACTIVE, f"Resumed by an operator at {now}."
                held, self._held = self._held, []
                for entry in held:
                    heapq.heappush(self._due, entry)
            else:
                raise errors.bad_request(f"Unknown action '{action}': use pause, resume or freeze.")
            self._save_rollout(rollout)
        self.kick()
        return rollout

    # --- manual upgrade ------------------------------------------------------------------------------
    def manual_upgrade(self, key: MachineKey, targets: dict[str, Any], principal: str) -> Record:
        doc = self.store.get_machine(key)
        if doc is None:
            raise errors.resource_not_found("Microsoft.HybridCompute/machines", key.name, key.resource_group)
        if not targets:
            raise errors.invalid_parameter("extensionTargets must name at least one extension.", "extensionTargets")
        plan: list[tuple[str, str, str]] = []  # (extension key, from, to)
        for handler, target in targets.items():
            ext = self._resolve_target(doc, handler)
            record = doc["extensions"][ext]
            props = record["resource"]["properties"]
            version = (target or {}).get("targetVersion")
            if not version:
                raise errors.invalid_parameter(
                    f"extensionTargets['{handler}'].targetVersion is required.", f"extensionTargets.{handler}"
                )
            if self.catalog.get_version(props["publisher"], props["type"], version) is None:
                known = [v["version"] for v in self.catalog.versions(props["publisher"], props["type"])]
                raise errors.invalid_parameter(
                    f"Version '{version}' of {props['publisher']}.{props['type']} is not published"
                    + (f"; published versions: {', '.join(known)}." if known else "; no version is published."),
                    f"extensionTargets.{handler}.targetVersion",
                )
            current = props.get("typeHandlerVersion") or ""
            if current and newer(current, version):
                raise errors.invalid_parameter(
                    f"Extension '{record['resource']['name']}' runs {current}; upgrading to the older {version} is "
                    "a downgrade, which upgradeExtensions does not do. Remove and reinstall the extension instead.",
                    f"extensionTargets.{handler}.targetVersion",
                )
            if record.get("operation"):
                raise errors.extension_busy(record)
            if current != version:
                plan.append((ext, current, version))
        now = self.clock.now()
        op = new_operation(
            "extension.upgrade",
            key,
            doc["machine"]["id"],
            doc["machine"]["location"],
            principal,
            now,
            targets=[{"extension": e, "fromVersion": f, "toVersion": t} for e, f, t in plan],
        )
        with self._lock:
            for ext, _from, _to in plan:
                if (key.lower, ext) in self._inflight:
                    # one upgrade at a time: an automatic one was handed to a worker (or runs)
                    raise errors.another_operation_in_progress(
                        doc["extensions"][ext]["resource"]["id"], "an automatic upgrade"
                    )
            queued: set[tuple[str, str]] = set()
            for ext, _from, to in plan:
                job = {
                    "toVersion": to,
                    "correlationId": op["id"],
                    "manualOperation": op["id"],
                    "caller": principal,
                    "retry": True,
                }
                if not self._queue_job(key, ext, job, now, automatic=False):
                    raise errors.another_operation_in_progress(
                        doc["extensions"][ext]["resource"]["id"], "an automatic upgrade"
                    )
                queued.add((key.lower, ext))
                self._push(iso(now), key, ext)
                self._manual_queue.append(
                    (iso(now), next(self._seq), (key.subscription, key.resource_group, key.name), ext, "")
                )
            if not queued:
                op.update(status=SUCCEEDED, endTime=iso(now), result=[])
            self.store.put_operation(op)
            if queued:
                self._manual[op["id"]] = queued
        self.kick()
        return op

    @staticmethod
    def _resolve_target(doc: MachineDoc, handler: str) -> str:
        wanted = handler.lower()
        exact: list[str] = [ext for ext, r in doc["extensions"].items() if _handler(r) == wanted]
        if len(exact) == 1:
            return exact[0]
        by_publisher: list[str] = [
            ext
            for ext, r in doc["extensions"].items()
            if str(r["resource"]["properties"].get("publisher", "")).lower() == wanted
        ]
        if not exact and len(by_publisher) == 1:
            return by_publisher[0]
        installed = (
            ", ".join(
                f"{r['resource']['properties'].get('publisher')}.{r['resource']['properties'].get('type')}"
                for r in doc["extensions"].values()
            )
            or "none"
        )
        if len(by_publisher) > 1 or len(exact) > 1:
            raise errors.invalid_parameter(
                f"'{handler}' matches several extensions on machine '{doc['machine']['name']}'; name one as "
                f"'<publisher>.<type>' (installed: {installed}).",
                f"extensionTargets.{handler}",
            )
        raise errors.invalid_parameter(
            f"Machine '{doc['machine']['name']}' has no extension '{handler}'; keys are '<publisher>.<type>' "
            f"(installed: {installed}).",
            f"extensionTargets.{handler}",
        )

    def _finish_manual(self, operation_id: str) -> None:
        op = self.store.get_operation(operation_id)
        self._manual.pop(operation_id, None)
        if op is None or op["status"] != IN_PROGRESS:
            return
        key = MachineKey(*op["machine"])
        doc = self.store.get_machine(key)
        failures = []
        for target in op["targets"]:
            record = doc["extensions"].get(target["extension"]) if doc else None
            outcome = (record.get("outcomes") or {}).get(operation_id) if record else None
            if outcome != J.SUCCEEDED:
                name = record["resource"]["name"] if record else target["extension"]
                message = {
                    J.ROLLED_BACK: f"upgrade to {target['toVersion']} failed; {target['fromVersion']} was reinstalled",
                    J.DROPPED: f"upgrade to {target['toVersion']} failed and the reinstall of the previous version "
                    "failed; remove and reinstall the extension, or update it",
                    J.NOT_RUN: "the host could not be reached; nothing was changed",
                }.get(outcome or "", f"the upgrade did not run ({outcome or 'removed'})")
                failures.append({"code": "ExtensionUpgradeFailed", "target": name, "message": message})
        op["endTime"] = iso(self.clock.now())
        if failures:
            op["status"] = OP_FAILED
            op["error"] = {
                "code": "ExtensionUpgradeFailed",
                "message": f"{len(failures)} of {len(op['targets'])} extension upgrades failed: "
                + "; ".join(f"{f['target']}: {f['message']}" for f in failures),
                "details": failures,
            }
            op["httpStatus"] = 409
        else:
            op["status"] = SUCCEEDED
            op["result"] = []
        self.store.put_operation(op)

    def _refresh_manual_operations(self) -> None:
        """After recovery: finish manual operations whose jobs all ended before the crash."""
        with self._lock:
            for operation_id in list(self._manual):
                op = self.store.get_operation(operation_id)
                if op is None:
                    self._manual.pop(operation_id)
                    continue
                key = MachineKey(*op["machine"])
                doc = self.store.get_machine(key)
                still = set()
                for target in op["targets"]:
                    record = doc["extensions"].get(target["extension"]) if doc else None
                    if record and operation_id not in (record.get("outcomes") or {}) and record.get("upgrade"):
                        still.add((key.lower, target["extension"]))
                self._manual[operation_id] = still
                if not still:
                    self._finish_manual(operation_id)

    # --- views -----------------------------------------------------------------------------------
    def rollouts(self, targets: bool = False) -> list[Record]:
        """Every rollout as operators read it; with ``targets``, each batch lists its extensions' ids."""
        with self._lock:
            return self._rollouts_view(targets)

    def _rollouts_view(self, targets: bool = False) -> list[Record]:
        now = iso(self.clock.now())
        out = []
        for rollout in sorted(self._rollout_list(), key=lambda r: r["createdAt"]):
            waves = rollout["waves"]
            live = {  # a running wave's counts so far, from the extension records
                (w["index"], i): self._live_counts(rollout["id"], b)
                for w in waves
                if w["state"] == "Running"
                for i, b in enumerate(w["batches"])
            }
            stalled = self._stalled.get(rollout["id"]) if rollout["state"] == ACTIVE else None
            summary = {
                "id": rollout["id"],
                "publisher": rollout["publisher"],
                "type": rollout["type"],
                "version": rollout["version"],
                "critical": rollout["critical"],
                "state": "Stalled" if stalled else rollout["state"],
                "stateReason": f"Stalled: {stalled}" if stalled else rollout.get("stateReason"),
                "createdAt": rollout["createdAt"],
                "completedAt": rollout.get("completedAt"),
                "windowSeconds": rollout["windowSeconds"],
                "eligible": rollout.get("eligible", 0),
                "counts": {
                    k: sum(live.get((w["index"], i), b).get(k, 0) for w in waves for i, b in enumerate(w["batches"]))
                    for k in ("succeeded", "failed", "skipped")
                },
                "phases": [],
                "nextAction": None,
            }
            phases: dict[int, dict[str, Any]] = {}
            for wave in waves:
                phase = phases.setdefault(
                    wave["phase"], {"phase": wave["phase"], "region": wave["region"], "waves": []}
                )
                phase["waves"].append(
                    {
                        "index": wave["index"],
                        "state": wave["state"],
                        "notBefore": wave["notBefore"],
                        "startedAt": wave.get("startedAt"),
                        "completedAt": wave.get("completedAt"),
                        "batches": [
                            {
                                "subscription": b["subscription"],
                                "size": len(b["targets"]),
                                **{
                                    k: v
                                    for k, v in live.get((wave["index"], i), b).items()
                                    if k in ("succeeded", "failed", "skipped")
                                },
                                **(
                                    {"targets": [MachineKey(*t[:3]).extension_id(t[3]) for t in b["targets"]]}
                                    if targets
                                    else {}
                                ),
                            }
                            for i, b in enumerate(wave["batches"])
                        ],
                    }
                )
            summary["phases"] = [phases[p] for p in sorted(phases)]
            pending = next((w for w in waves if w["state"] != "Completed"), None)
            if rollout["state"] in HELD:
                summary["nextAction"] = f"{rollout['state']}: waiting for an operator to resume"
            elif stalled:
                summary["nextAction"] = f"stalled: {stalled}"
            elif pending and pending["state"] == "Running":
                summary["nextAction"] = f"wave {pending['index']} ({pending['region']}) is running"
            elif pending:
                when = "now" if pending["notBefore"] <= now else f"at {pending['notBefore']}"
                summary["nextAction"] = f"start wave {pending['index']} ({pending['region']}) {when}"
            out.append(summary)
        return out

    def _live_counts(self, rollout_id: str, batch: dict[str, Any]) -> dict[str, int]:
        counts = {"succeeded": 0, "failed": 0, "skipped": 0}
        for target in batch["targets"]:
            key, ext = _key_of(target)
            outcome = self.store.view_machine(key, partial(_outcome_of, ext=ext, rollout_id=rollout_id))
            if outcome is not None:
                counts[_count_of(outcome)] += 1
        return counts

    def wave_of(
        self, key: MachineKey, ext: str, current: str = "", outcomes: dict[str, Any] | None = None
    ) -> tuple[Record, dict[str, Any]] | None:
        """The wave that will upgrade the extension next: of the newest rollout above ``current`` that
        has the extension in a wave not yet completed (and no outcome for it)."""
        with self._lock:
            found = [
                (rollout, wave)
                for rollout in self._rollouts.values()
                if rollout["state"] != COMPLETED
                and (not current or newer(rollout["version"], current))
                and rollout["id"] not in (outcomes or {})
                for wave in [self._wave_of(rollout, key, ext)]
                if wave is not None
            ]
        return max(found, key=lambda f: version_key(f[0]["version"])) if found else None

    def _wave_of(self, rollout: Record, key: MachineKey, ext: str) -> dict[str, Any] | None:
        wave = self._planned_wave(rollout, key, ext)
        if wave is None or wave["state"] == "Completed":
            return None
        if wave["state"] == "Running" and (key.lower, ext) not in self._open.get(rollout["id"], {}).get(
            wave["index"], ()
        ):
            return None
        return wave

    def stalled(self, rollout_id: str) -> str | None:
        return self._stalled.get(rollout_id)

    def held(self, rollout_id: str | None) -> Record | None:
        if not rollout_id:
            return None
        rollout = self._rollouts.get(rollout_id)
        return rollout if rollout and rollout["state"] in HELD else None

    def now(self) -> datetime:
        return self.clock.now()
