"""A follower's copy of the rollouts, read from the store on demand and cheap to keep current.

Only the leader writes rollouts (arcext.upgrades). A follower answers the views (the rollouts, a machine's
pending upgrades, the metrics) from this copy: each ``read`` asks for every row's version (``xmin``, which
changes with every update of the row) and fetches again only the rows that changed. A rollout's plan (its
waves' targets, the large part, ``store/postgres/records.py``) is written once and kept here; its state is
small. So a read after a change made through any node sees it, and a read without one costs one small query.
"""

from __future__ import annotations

import threading
from typing import Any, cast

from ..records import RolloutRecord
from ..store.postgres.db import Database


class RolloutMirror:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._plans: dict[str, list[Any]] = {}  # rollout id -> every batch's targets (never rewritten)
        self._records: dict[str, tuple[str, RolloutRecord]] = {}  # rollout id -> (row version, record)
        self.fetched = 0  # rollout states fetched again (a figure for the tests)

    def read(self) -> list[RolloutRecord]:
        """Every rollout as the store holds it now, in the order they were planned. The records are shared
        with later reads: a caller that changes them (a new leader) calls ``forget`` first."""
        with self._lock, self._db.connection() as conn:
            versions = conn.execute("SELECT id, xmin::text FROM rollouts ORDER BY seq").fetchall()
            changed = [rid for rid, version in versions if self._records.get(rid, ("",))[0] != version]
            if changed:
                rows = conn.execute(
                    "SELECT id, xmin::text, state, CASE WHEN id = ANY(%s) THEN NULL ELSE plan END"
                    " FROM rollouts WHERE id = ANY(%s)",
                    (list(self._plans), changed),
                ).fetchall()
                for rid, version, state, plan in rows:
                    if plan is not None:
                        self._plans[rid] = plan
                    self._records[rid] = (version, self._join(state, self._plans[rid]))
                self.fetched += len(rows)
            present = {rid for rid, _ in versions}
            for gone in (set(self._records) | set(self._plans)) - present:  # deleted (a test's reset)
                self._records.pop(gone, None)
                self._plans.pop(gone, None)
            return [self._records[rid][1] for rid, _ in versions if rid in self._records]

    def forget(self) -> None:
        """Hand the records read so far over (the next read fetches every state again); plans stay."""
        with self._lock:
            self._records.clear()

    @staticmethod
    def _join(state: dict[str, Any], plan: list[Any]) -> RolloutRecord:
        """The state with the plan's targets (the targets' lists are shared: nothing changes them)."""
        for wave, targets in zip(state["waves"], plan, strict=True):
            for batch, batch_targets in zip(wave["batches"], targets, strict=True):
                batch["targets"] = batch_targets
        return cast(RolloutRecord, state)
