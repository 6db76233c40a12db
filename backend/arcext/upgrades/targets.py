"""Where an extension stands for the engine, read from its record in a machine document.

Pure functions over a machine document (passed to ``Store.view_machine``, so nothing is copied), plus
the rollout and wave states and the due-heap entry shape the engine's parts share.
"""

from __future__ import annotations

from ..ids import MachineKey
from ..records import ExtensionRecord
from ..store.base import MachineDoc
from ..versions import major, newer
from . import job_state as J
from .policy import ineligibility

ACTIVE, PAUSED, FROZEN, COMPLETED = "Active", "Paused", "Frozen", "Completed"
HELD = (PAUSED, FROZEN)
FAILED_OUTCOMES = (J.ROLLED_BACK, J.DROPPED, J.NOT_RUN)
#: a wave's target outside its machine's maintenance windows: concluded for the wave (counted as skipped,
#: never as a failure); its job waits on the record for the window
WAITING_FOR_WINDOW = "WaitingForMaintenanceWindow"
WINDOW_BLOCK = "MaintenanceWindow"
#: a job that waits because its machine has no host connection (``blockedReason``)
NO_HOST_CONNECTION = "NoHostConnection"

#: A due job: (due time, sequence, (subscription, group, machine), extension key, rollout id of a wave
#: target not yet claimed, or "").
Entry = tuple[str, int, tuple[str, str, str], str, str]

DONE, OWN, BUSY, CLAIM = "done", "own", "busy", "claim"


def target_status(doc: MachineDoc | None, ext: str, rollout_id: str) -> str:
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


def concludes_without_host(doc: MachineDoc | None, ext: str, version: str) -> bool:
    """Would a wave's claim of this target conclude it without touching the host (opted out, up to
    date, superseded, failed for good)? Then a target without a host connection need not wait for one."""
    record = doc["extensions"].get(ext) if doc else None
    if record is None:
        return True
    job = record.get("upgrade")
    if job and job["state"] in J.WAITING and newer(job["toVersion"], version):
        return True
    return ineligibility(record, True, version) is not None


def waiting_due(doc: MachineDoc | None, ext: str) -> str | None:
    record = doc["extensions"].get(ext) if doc else None
    job = record.get("upgrade") if record else None
    return str(job["dueAt"]) if job and job["state"] in J.WAITING else None


def outcome_of(doc: MachineDoc | None, ext: str, rollout_id: str) -> str | None:
    """What the rollout did to the extension (its remembered outcome), read without copying the document."""
    record = doc["extensions"].get(ext) if doc else None
    outcome: str | None = (record.get("outcomes") or {}).get(rollout_id) if record else None
    return outcome


def count_of(outcome: str | None) -> str:
    """Which of a rollout's counts an outcome adds to."""
    if outcome in (J.SUCCEEDED, J.UP_TO_DATE):
        return "succeeded"
    return "failed" if outcome in FAILED_OUTCOMES else "skipped"


def waiting_version(doc: MachineDoc | None, ext: str) -> str | None:
    record = doc["extensions"].get(ext) if doc else None
    job = record.get("upgrade") if record else None
    return str(job["toVersion"]) if job and job["state"] in J.WAITING else None


def is_behind(record: ExtensionRecord | None, newest: dict[tuple[str, str, str], str]) -> bool:
    """An opted-in extension with nothing queued or running, on an older version of its major than the
    newest rollout of its type has (``newest``: see ``EngineBase._newest_rollouts``): it should join that one."""
    if record is None or record.get("upgrade") or record.get("operation") or record.get("droppedOut"):
        return False
    props = record["resource"]["properties"]
    current = props.get("typeHandlerVersion") or ""
    if not current or not props.get("enableAutomaticUpgrade", True):
        return False
    best = newest.get((str(props.get("publisher", "")).lower(), str(props.get("type", "")).lower(), major(current)))
    return bool(best and newer(best, current))


def is_behind_in(doc: MachineDoc | None, ext: str, newest: dict[tuple[str, str, str], str]) -> bool:
    return is_behind(doc["extensions"].get(ext) if doc else None, newest)


#: what the bookkeeping of a job's end looks at on the extension's record (``booking_look``): the due time of the
#: job waiting on it, whether it is behind a newer rollout (only looked at when nothing waits), and the
#: ``target_status`` for each rollout asked
BookingLook = tuple[str | None, bool, list[str]]


def booking_look(
    doc: MachineDoc | None, ext: str, newest: dict[tuple[str, str, str], str], rollout_ids: list[str]
) -> BookingLook:
    """``waiting_due``, then ``is_behind_in`` when nothing waits, and ``target_status`` per rollout of
    ``rollout_ids``: one look at the document instead of one per question."""
    due = waiting_due(doc, ext)
    behind = due is None and is_behind_in(doc, ext, newest)
    return due, behind, [target_status(doc, ext, rollout_id) for rollout_id in rollout_ids]


def key_of(target: list[str]) -> tuple[MachineKey, str]:
    return MachineKey(target[0], target[1], target[2]), target[3]
