"""Rollouts as operators read them: live counts per batch, the next action, which wave will
upgrade an extension next, and whether a rollout is held or stalled."""

from __future__ import annotations

from typing import Any, cast

from ..clock import iso
from ..ids import MachineKey
from ..records import Batch, RolloutRecord, Wave
from ..store.base import Record
from ..versions import newer, version_key
from .base import EngineBase
from .targets import ACTIVE, COMPLETED, HELD, count_of, key_of


def stored_counts(batch: Batch) -> dict[str, int]:
    """The counts a completed wave wrote on its batch (``Rollouts._complete_wave``), with the late results
    of its targets that waited for a maintenance window (``Rollouts._late_result``); none before."""
    stored = cast(dict[str, Any], batch)
    return {k: int(stored.get(k, 0)) for k in ("succeeded", "failed", "skipped")}


def window_figures(batch: Batch) -> dict[str, Any]:
    """A completed batch's targets that waited for their maintenance window, and their late results so far
    (counted in ``stored_counts`` too): empty when none waited."""
    stored = cast(dict[str, Any], batch)
    waiting = len(stored.get("waitingForWindow") or ())
    if not waiting:
        return {}
    return {
        "waitingForWindow": waiting,
        "late": {"succeeded": int(stored.get("lateSucceeded", 0)), "failed": int(stored.get("lateFailed", 0))},
    }


class RolloutViews(EngineBase):
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
            stalled = rollout.get("stalled") if rollout["state"] == ACTIVE else None
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
                    k: sum(
                        live.get((w["index"], i), stored_counts(b)).get(k, 0)
                        for w in waves
                        for i, b in enumerate(w["batches"])
                    )
                    for k in ("succeeded", "failed", "skipped")
                },
                "lateResults": {
                    k: sum(int(cast(dict[str, Any], b).get(f"late{k.title()}", 0)) for w in waves for b in w["batches"])
                    for k in ("succeeded", "failed")
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
                                    for k, v in live.get((wave["index"], i), stored_counts(b)).items()
                                    if k in ("succeeded", "failed", "skipped")
                                },
                                **window_figures(b),
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

    def _live_counts(self, rollout_id: str, batch: Batch) -> dict[str, int]:
        counts = {"succeeded": 0, "failed": 0, "skipped": 0}
        targets = [key_of(target) for target in batch["targets"]]
        for outcome in self._outcomes(rollout_id, targets):  # the batch's read together (every view, scrape)
            if outcome is not None:
                counts[count_of(outcome)] += 1
        return counts

    def wave_of(
        self, key: MachineKey, ext: str, current: str = "", outcomes: dict[str, Any] | None = None
    ) -> tuple[RolloutRecord, Wave] | None:
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

    def _wave_of(self, rollout: RolloutRecord, key: MachineKey, ext: str) -> Wave | None:
        wave = self._planned_wave(rollout, key, ext)
        if wave is None or wave["state"] == "Completed":
            return None
        if wave["state"] == "Running" and (key.lower, ext) not in self._open.get(rollout["id"], {}).get(
            wave["index"], ()
        ):
            return None
        return wave

    def stalled(self, rollout_id: str) -> str | None:
        """Why the rollout cannot move, as the last audit found (kept on its record, so every node reads it)."""
        rollout = self._rollouts.get(rollout_id)
        return rollout.get("stalled") if rollout else None

    def rollout_records(self) -> list[RolloutRecord]:
        """The rollouts' records as this engine holds them."""
        return self._rollout_list()

    def refresh(self) -> None:
        """Bring what ``wave_of``, ``held`` and ``stalled`` read up to date with the store before a view uses
        them. Nothing to do here: this engine writes every rollout change itself (a follower of a cluster
        reads the leader's: arcext.cluster.engine)."""

    def held(self, rollout_id: str | None) -> RolloutRecord | None:
        if not rollout_id:
            return None
        rollout = self._rollouts.get(rollout_id)
        return rollout if rollout and rollout["state"] in HELD else None
