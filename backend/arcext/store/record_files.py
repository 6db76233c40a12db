"""Operations and rollouts: one JSON file per record, all of them kept in memory.

An operation is ``operations/<first two id characters>/<id>.json``, rewritten atomically on every
change. A rollout is two files: its plan (``rollouts/<id>.plan``, the waves' targets: large, written
once) and its state (``rollouts/<id>.json``, small, rewritten on every change).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import orjson

from ..records import OperationRecord, RolloutRecord
from .atomic_storage import AtomicJSONStorage, atomic_write_bytes, fsync_dir
from .base import jcopy

log = logging.getLogger(__name__)


class OperationFiles:
    """Long-running operations, one file each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ops: dict[str, OperationRecord] = {}
        self.lock = threading.Lock()

    def load(self) -> None:
        for shard in self.directory.iterdir():
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard):
                if entry.name.endswith(".tmp"):
                    os.unlink(entry.path)  # a write that never got its rename
                    continue
                op = AtomicJSONStorage(entry.path).read()
                if op:
                    self._ops[op["id"]] = cast(OperationRecord, op)

    def _path(self, op_id: str) -> Path:
        return self.directory / op_id[:2] / f"{op_id}.json"

    def put(self, op: OperationRecord) -> None:
        path = self._path(op["id"])
        with self.lock:
            if not path.parent.exists():
                path.parent.mkdir()
                fsync_dir(self.directory)
            atomic_write_bytes(path, orjson.dumps(op))
            self._ops[op["id"]] = jcopy(op)

    def get(self, op_id: str) -> OperationRecord | None:
        op = self._ops.get(op_id)
        return cast(OperationRecord, jcopy(op)) if op is not None else None

    def list(self, status: str | None = None) -> list[OperationRecord]:
        with self.lock:
            ops = list(self._ops.values())
        return [jcopy(o) for o in ops if status is None or o.get("status") == status]

    def delete_before(self, iso_time: str) -> int:
        """Remove finished operations that ended before ``iso_time``; returns how many."""
        with self.lock:
            old = [
                o["id"]
                for o in self._ops.values()
                if o.get("endTime") and o["endTime"] < iso_time and o.get("status") != "InProgress"
            ]
            for op_id in old:
                AtomicJSONStorage(self._path(op_id)).remove()
                del self._ops[op_id]
        return len(old)

    def clear(self) -> None:
        """Forget every operation (the caller holds ``lock`` and syncs the data directory)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir()
        self._ops.clear()


class RolloutFiles:
    """Rollouts, a plan file and a state file each. The store keeps a reference to the last record put,
    not a copy: its writer (the upgrade engine) owns the record."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._rollouts: dict[str, RolloutRecord] = {}
        #: observers (arcext.telemetry): every rollout write, once durable (telemetry reads it as a plain record)
        self.listener: Callable[[RolloutRecord], None] | None = None

    def load(self) -> None:
        for path in self.directory.glob("*.json"):
            state = AtomicJSONStorage(path).read()
            plan_path = path.with_suffix(".plan")
            if not state or not plan_path.exists():
                continue
            rollout = cast(RolloutRecord, state)
            plan = orjson.loads(plan_path.read_bytes())
            for wave, targets in zip(rollout["waves"], plan, strict=True):
                for batch, batch_targets in zip(wave["batches"], targets, strict=True):
                    batch["targets"] = batch_targets
            self._rollouts[rollout["id"]] = rollout

    def put(self, rollout: RolloutRecord) -> None:
        """Write the plan (the first time only) and the state; durable on return, then tell the listener."""
        with self._lock:
            plan_path = self.directory / f"{rollout['id']}.plan"
            if rollout["id"] not in self._rollouts and not plan_path.exists():
                plan = [[batch["targets"] for batch in wave["batches"]] for wave in rollout["waves"]]
                atomic_write_bytes(plan_path, orjson.dumps(plan))
            state = {
                **rollout,
                "waves": [
                    {**wave, "batches": [{k: v for k, v in b.items() if k != "targets"} for b in wave["batches"]]}
                    for wave in rollout["waves"]
                ],
            }
            atomic_write_bytes(self.directory / f"{rollout['id']}.json", orjson.dumps(state))
            self._rollouts[rollout["id"]] = rollout
        if self.listener is not None:
            try:
                self.listener(rollout)
            except Exception:  # observers never fail a write
                log.exception("A rollout listener failed")

    def get(self, rollout_id: str) -> RolloutRecord | None:
        with self._lock:
            rollout = self._rollouts.get(rollout_id)
            return cast(RolloutRecord, jcopy(rollout)) if rollout is not None else None

    def list(self) -> list[RolloutRecord]:
        with self._lock:
            return [jcopy(r) for r in self._rollouts.values()]

    def clear(self) -> None:
        with self._lock:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory.mkdir()
            self._rollouts.clear()
