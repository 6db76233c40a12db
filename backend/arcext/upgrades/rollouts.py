"""Rollouts: plan one when a version is published, start and complete its waves (the circuit
breaker), let late joiners in, and the operator's pause, freeze and resume."""

from __future__ import annotations

import heapq
import logging
import uuid
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

from .. import errors
from ..clock import iso, parse_iso
from ..ids import MachineKey, parse_resource_id
from ..records import Batch, RolloutRecord, UpgradeJob, Wave
from ..store.base import MachineDoc, Record
from ..versions import newer, version_key
from . import job_state as J
from .base import EngineBase
from .planner import Candidate, plan_waves
from .policy import handler_matches, ineligibility, supports_auto_upgrade, type_supports_auto_upgrade
from .targets import (
    ACTIVE,
    COMPLETED,
    FAILED_OUTCOMES,
    FROZEN,
    HELD,
    PAUSED,
    WAITING_FOR_WINDOW,
    count_of,
    key_of,
    outcome_of,
    waiting_version,
)

log = logging.getLogger(__name__)


class Rollouts(EngineBase):
    def on_version_published(self, version: Record) -> RolloutRecord | None:
        """Plan a rollout for a newly published version of a type that supports auto-upgrade."""
        type_record = self.catalog.get_type(version["publisher"], version["type"])
        if not type_supports_auto_upgrade(type_record):
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
        rollout: RolloutRecord = {
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
            supported = supports_auto_upgrade(self.catalog, record)
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
            job: UpgradeJob = {
                "toVersion": best["version"],
                "rolloutId": best["id"],
                "correlationId": best["id"],
                "caller": None,
                "critical": best["critical"],
                "wave": None,
                "retry": True,
                "firstAttemptDone": True,  # a late joiner: not part of any wave's breaker arithmetic
            }
            if not self._queue_job(key, ext, job, now, automatic=True, due=due):  # one durable write
                return False
            self._push(due, key, ext)
            log.info("%s on %s joins rollout %s to %s, due %s", ext, key.name, best["id"], best["version"], due)
        self.kick()
        return True

    def _advance_rollout(self, rollout: RolloutRecord, now: datetime) -> None:
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

    def _start_wave(self, rollout: RolloutRecord, wave: Wave, now: datetime) -> None:
        # Nothing is written per target: the wave's targets are in the (durable) plan, and a target's
        # job is written once, as Running, when a worker claims it (JobRunner.claim with the template).
        # The targets' machines are read together (one query per thousand on PostgreSQL), before any write:
        # what one target's supersession writes is its own extension's record, which no other target reads
        targets = [key_of(target) for batch in wave["batches"] for target in batch["targets"]]
        waitings = self.store.view_machines([(key, partial(waiting_version, ext=ext)) for key, ext in targets])
        open_targets: set[tuple[str, str]] = set()
        for (key, ext), waiting in zip(targets, waitings, strict=True):
            open_targets.add((key.lower, ext))
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

    def _complete_wave(self, rollout: RolloutRecord, wave: Wave, now: datetime) -> None:
        wave["state"] = "Completed"
        wave["completedAt"] = iso(now)
        tripped: list[str] = []
        # every target's outcome, read together with the others'
        targets = [key_of(target) for batch in wave["batches"] for target in batch["targets"]]
        outcomes = iter(self._outcomes(rollout["id"], targets))
        for batch in wave["batches"]:
            counts = {"succeeded": 0, "failed": 0, "skipped": 0}
            up_to_date = 0
            waiting: list[int] = []
            for index in range(len(batch["targets"])):
                outcome = next(outcomes)
                counts[count_of(outcome)] += 1
                if outcome == J.UP_TO_DATE:
                    up_to_date += 1
                elif outcome == WAITING_FOR_WINDOW:
                    waiting.append(index)
            # the batch keeps its counts once its wave completes, and which targets wait for a maintenance
            # window: their results come later (``_late_result``)
            cast(dict[str, Any], batch).update(counts, upToDate=up_to_date, waitingForWindow=waiting)
            reason = self._breaker(batch, wave)
            if reason:
                tripped.append(reason)
        self._open.get(rollout["id"], {}).pop(wave["index"], None)
        if tripped:
            self._freeze(rollout, tripped, now)

    def _breaker(self, batch: Batch, wave: Wave) -> str | None:
        """Why the batch's figures trip the circuit breaker (more than ``breaker_fraction`` of its attempted
        upgrades failed, and at least ``breaker_min_failures``), or None."""
        stored = cast(dict[str, Any], batch)
        failed, succeeded = int(stored.get("failed", 0)), int(stored.get("succeeded", 0))
        attempted = succeeded - int(stored.get("upToDate", 0)) + failed
        if not (
            attempted
            and failed >= self.settings.breaker_min_failures
            and failed / attempted > self.settings.breaker_fraction
        ):
            return None
        late = int(stored.get("lateFailed", 0))
        return (
            f"{failed} of {attempted} upgrades failed in the batch of subscription "
            f"{batch['subscription']} in wave {wave['index']} ({wave['region']})"
            + (f", {late} of them late, in their maintenance window" if late else "")
        )

    def _freeze(self, rollout: RolloutRecord, tripped: list[str], now: datetime) -> None:
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

    def _late_result(self, rollout_id: str, key: MachineKey, ext: str) -> None:
        """A wave's target that waited for its maintenance window ran after its wave had completed: its first
        attempt's outcome (on the extension's record) counts toward that batch now, as a late result, and the
        breaker looks at the batch again in the same terms as when the wave completed. A rollout still
        Active or Paused that it trips freezes; a Completed one has no waves left to stop and only records it.
        Each target counts once (``lateResults`` holds its index in the batch)."""
        rollout = self._rollouts.get(rollout_id)
        wave = self._planned_wave(rollout, key, ext) if rollout else None
        if rollout is None or wave is None or wave["state"] != "Completed":
            return
        for batch in wave["batches"]:
            stored = cast(dict[str, Any], batch)
            waiting = stored.get("waitingForWindow") or ()
            if not waiting:
                continue
            index = next(
                (
                    i
                    for i in waiting
                    if key_of(batch["targets"][i])[0].lower == key.lower and batch["targets"][i][3] == ext
                ),
                None,
            )
            if index is None:
                continue
            if index in (stored.get("lateResults") or ()):
                return
            outcome = self.store.view_machine(key, partial(outcome_of, ext=ext, rollout_id=rollout_id))
            if outcome not in (J.SUCCEEDED, J.UP_TO_DATE, *FAILED_OUTCOMES):
                return  # still waiting, or concluded without an attempt (superseded, skipped): stays skipped
            counted = count_of(outcome)
            stored["skipped"] = max(0, int(stored.get("skipped", 0)) - 1)
            stored[counted] = int(stored.get(counted, 0)) + 1
            late = "lateSucceeded" if counted == "succeeded" else "lateFailed"
            stored[late] = int(stored.get(late, 0)) + 1
            if outcome == J.UP_TO_DATE:
                stored["upToDate"] = int(stored.get("upToDate", 0)) + 1
            stored["lateResults"] = [*(stored.get("lateResults") or ()), index]
            now = self.clock.now()
            reason = self._breaker(batch, wave) if counted == "failed" else None
            log.info(
                "Rollout %s: late result %s of %s on %s (wave %d, waited for its maintenance window)",
                rollout_id,
                outcome,
                ext,
                key.name,
                wave["index"],
            )
            if reason and rollout["state"] in (ACTIVE, PAUSED):
                self._freeze(rollout, [reason], now)
            self._save_rollout(rollout)
            if rollout["state"] == ACTIVE:
                self.kick()
            return

    def set_rollout_state(self, rollout_id: str, action: str) -> RolloutRecord:
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
