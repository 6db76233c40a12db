"""Recovery and the invariant check: rebuild the engine's indexes from the store at start, and
``audit`` them against the store (repairing what drifted, marking rollouts that cannot move as stalled)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypedDict

from .. import heartbeat
from ..activity import repair_event
from ..clock import iso, parse_iso
from ..ids import MachineKey, parse_resource_id
from ..operations import IN_PROGRESS
from ..records import UpgradeJob
from ..store.base import MachineDoc
from . import job_state as J
from .dispatch import Dispatch
from .targets import ACTIVE, CLAIM, COMPLETED, DONE, NO_HOST_CONNECTION, is_behind, key_of, target_status

log = logging.getLogger(__name__)


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


#: another part's projection of a machine document (``Store.project_machines``) that rides along on the
#: recovery's scan at start, so that the fleet is read once (services.py: the resources' in-flight writes)
Rider = Callable[[MachineDoc], Any]


class Recovery(Dispatch):
    def recover(self, rider: Rider | None = None) -> list[Any]:
        """Rebuild indexes from the store and reconcile jobs a crash left Running. Returns what ``rider``
        projected from the same scan (its non-None values)."""
        carried: list[Any] = []

        def project(doc: MachineDoc) -> list[tuple[MachineKey, str, str, str]] | None:
            heartbeat.progress()  # a scan of a large fleet: the scheduler's pass moves on
            if rider is not None and (value := rider(doc)) is not None:
                carried.append(value)
            parsed = parse_resource_id(doc["machine"]["id"])
            if parsed is None:
                return None
            found = [
                (parsed[0], ext, job["state"], job.get("dueAt", ""))
                for ext, r in doc["extensions"].items()
                if (job := r.get("upgrade"))
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
        return carried

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
                        key, ext = key_of(target)
                        status = self.store.view_machine(key, partial(target_status, ext=ext, rollout_id=rollout["id"]))
                        heartbeat.progress()  # a read per target of a large wave: the pass moves on
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

    def _audit_jobs(self) -> list[Repair]:
        """Claimed jobs nothing runs, queued jobs nothing schedules, eligible extensions nothing upgrades."""
        newest = self._newest_rollouts()

        def project(doc: MachineDoc) -> list[_Seen] | None:
            heartbeat.progress()
            parsed = parse_resource_id(doc["machine"]["id"])
            if parsed is None:
                return None
            out: list[_Seen] = []
            for ext, r in doc["extensions"].items():
                job = r.get("upgrade")
                behind = is_behind(r, newest)
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
                job: UpgradeJob = (record.get("upgrade") if record else None) or {}
                if (
                    (key.lower, ext) in self._inflight
                    or job.get("manualOperation") == op["id"]
                    and (op["id"] not in ((record.get("outcomes") if record else None) or {}))
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
                    job = (record.get("upgrade") if record else None) or {}
                    name = f"{doc['machine']['name'] if doc else lower}/{ext}"
                    available = getattr(self.drivers, "available", None)
                    reachable = bool(doc and (available(doc) if available else self.drivers(doc_key, doc)))
                    if job.get("blockedReason") == NO_HOST_CONNECTION or (doc and not reachable):
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
        for rollout in self._rollout_list():  # kept on the records: every node's views read it
            if rollout.get("stalled") != stalled.get(rollout["id"]):
                rollout["stalled"] = stalled.get(rollout["id"])
                self._save_rollout(rollout)
