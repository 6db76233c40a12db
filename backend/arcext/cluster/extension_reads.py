"""The leader's reads of single extensions' records, projected in the database.

Much of the leader's bookkeeping looks at one extension's record of a machine document only (a job's end, a
wave's outcomes). Reading those parts instead of the whole documents spares both ends the rest: the server
does not serialise the machine and its other extensions, the leader does not parse them. The targets travel
as one JSON array (one parameter), in order; a machine that does not exist reads as absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, cast

from psycopg.types.json import Jsonb

from ..ids import MachineKey
from ..records import ExtensionRecord
from ..store.base import MachineDoc
from ..store.postgres.db import Database

#: targets per statement
CHUNK: Final = 2000

#: (machine, extension) pairs as rows ``a(j, i)`` (j the pair as a JSON array, i its place), with their machines
_TARGETS = (
    " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS a(j, i)"
    " LEFT JOIN machines m ON m.subscription = a.j->>0 AND m.resource_group = a.j->>1 AND m.name = a.j->>2"
    " ORDER BY a.i"
)


def _pairs(targets: Sequence[tuple[MachineKey, str]]) -> Jsonb:
    return Jsonb(
        [[key.subscription.lower(), key.resource_group.lower(), key.name.lower(), ext] for key, ext in targets]
    )


def outcomes(db: Database, rollout_id: str, targets: Sequence[tuple[MachineKey, str]]) -> list[str | None]:
    """Each target's remembered outcome for the rollout (``targets.outcome_of``), in order."""
    found: list[str | None] = []
    for start in range(0, len(targets), CHUNK):
        with db.connection() as conn:
            rows = conn.execute(
                "SELECT m.doc->'extensions'->(a.j->>3)->'outcomes'->>%s" + _TARGETS,
                (rollout_id, _pairs(targets[start : start + CHUNK])),
            ).fetchall()
        found += [row[0] for row in rows]
    return found


def records(db: Database, targets: Sequence[tuple[MachineKey, str]]) -> list[MachineDoc | None]:
    """Each target's machine as a document that holds that one extension's record only (none when the machine
    does not exist; no extensions when it has not that one), in order: for looks at that record only."""
    docs: list[MachineDoc | None] = []
    for start in range(0, len(targets), CHUNK):
        part = targets[start : start + CHUNK]
        with db.connection() as conn:
            rows = conn.execute(
                "SELECT m.name IS NOT NULL, m.doc->'extensions'->(a.j->>3)" + _TARGETS, (_pairs(part),)
            ).fetchall()
        docs += [_holding(ext, exists, record) for (_key, ext), (exists, record) in zip(part, rows, strict=True)]
    return docs


def _holding(ext: str, exists: bool, record: ExtensionRecord | None) -> MachineDoc | None:
    if not exists:
        return None
    extensions: dict[str, Any] = {ext: record} if record is not None else {}
    return cast(MachineDoc, {"extensions": extensions})
