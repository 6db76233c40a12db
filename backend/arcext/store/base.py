"""The Store protocol: what the domain needs from persistence.

The unit of consistency is one *machine document*: the machine resource plus its extensions.
Every change goes through ``mutate_machine`` (read, change, write under a per-machine lock), which
maps onto ``SELECT ... FOR UPDATE`` in a SQL store shared by several server processes. Operations,
tokens and the catalog are small independent records keyed by id.

Documents are plain JSON-able dicts in the ARM wire shape. Callers receive copies: changing a
returned dict never changes the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import orjson

from ..ids import MachineKey
from ..records import MachineDocument, OperationRecord, RolloutRecord

#: A machine and its extensions (``arcext.records``): the unit of consistency.
MachineDoc = MachineDocument
#: A small record keyed by id (a token, a catalog entry, a maintenance configuration): JSON in the wire shape.
Record = dict[str, Any]

T = TypeVar("T")


def jcopy(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (dicts, lists, scalars): an orjson round trip, about twice
    as fast as copying in Python and ten times as fast as deepcopy. Values orjson cannot encode
    (a non-string key, say) are copied in Python."""
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return _py_copy(value)


def names_operation(doc: MachineDoc) -> bool:
    """Whether the machine or one of its extensions names an operation (``operation`` set: a write in flight,
    or an upgrade job's). What ``Store.project_machines_naming_operations`` filters on."""
    return bool(doc["machine"].get("operation")) or any(r.get("operation") for r in doc["extensions"].values())


def _py_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _py_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_py_copy(v) for v in value]
    return value


class Store(Protocol):
    # --- machine documents -------------------------------------------------------------
    def get_machine(self, key: MachineKey) -> MachineDoc | None: ...

    def view_machine(self, key: MachineKey, view: Callable[[MachineDoc | None], T]) -> T:
        """Apply ``view`` to the document (None when absent) without copying it, under the machine's lock.

        ``view`` must not change the document. What it returns may share the document's parts only if nobody
        changes them afterwards: a store replaces a document, or one extension's record, when it writes it and
        never changes a stored one in place, so a part read here stays as it was (a GET's response is dumped from
        the stored resource; tests/test_store.py checks the promise); anything a caller may change must be a copy."""
        ...

    def view_machines(self, views: Sequence[tuple[MachineKey, Callable[[MachineDoc | None], T]]]) -> list[T]:
        """``view_machine`` for many machines at once: each view applied to its machine's document (None when
        absent), the results in the order of ``views``. A SQL store reads the documents together (a few
        queries instead of one per machine); a key may appear more than once.

        The views must not change the documents and must copy whatever they return."""
        ...

    def list_machines(
        self, subscription: str, resource_group: str | None, after: str | None, limit: int
    ) -> tuple[list[MachineDoc], str | None]:
        """One page of machines ordered by (resource group, name), case-insensitively.

        ``after`` is the continuation token a previous page returned; the second element is the
        token for the next page, or None on the last one."""
        ...

    def mutate_machine(
        self,
        key: MachineKey,
        change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]],
        extension: str | None = None,
        events: list[Record] | None = None,
    ) -> T:
        """Atomically apply ``change`` to the document (None when absent).

        ``change`` returns (new document or None to delete, result). The new document is durable
        before this returns. An exception inside ``change`` leaves the store untouched. With
        ``extension``, ``change`` may change only that extension's record (add, replace or remove it).

        ``events`` (which ``change`` may fill) are activity-log events that belong to this change: they
        are durable together with it (one durable write instead of two), also when nothing changed."""
        ...

    def iter_machines(self) -> Iterator[MachineDoc]: ...

    def project_machines(self, project: Callable[[MachineDoc], T | None]) -> list[T]:
        """Apply ``project`` to every machine document without copying it; keep the non-None results.

        For fleet-wide scans (planning, start-up recovery): ``project`` must not change the document."""
        ...

    def project_machines_naming_operations(self, project: Callable[[MachineDoc], T | None]) -> list[T]:
        """``project_machines`` over only the documents where the machine or one of its extensions names an
        operation (a non-empty ``operation``): the periodic search for orphaned writes, which a database answers
        from its own filter instead of sending every document. ``project`` still decides what to keep."""
        ...

    def count_machines(self) -> int: ...

    # --- long-running operations --------------------------------------------------------
    def put_operation(self, op: OperationRecord) -> None: ...

    def get_operation(self, op_id: str) -> OperationRecord | None: ...

    def list_operations(self, status: str | None = None) -> list[OperationRecord]: ...

    def delete_operations_before(self, iso_time: str) -> int: ...

    # --- tokens (hashed) --------------------------------------------------------------------
    def put_token(self, token: Record) -> None: ...

    def get_token_by_hash(self, token_hash: str) -> Record | None: ...

    def list_tokens(self) -> list[Record]: ...

    def delete_token(self, token_id: str) -> bool: ...

    # --- extension catalog --------------------------------------------------------------------
    def put_extension_type(self, record: Record) -> None: ...

    def get_extension_type(self, publisher: str, type_: str) -> Record | None: ...

    def list_extension_types(self) -> list[Record]: ...

    def put_extension_version(self, record: Record) -> None: ...

    def list_extension_versions(self, publisher: str, type_: str) -> list[Record]: ...

    # --- maintenance configurations and assignments (Microsoft.Maintenance) ------------------------
    def put_maintenance(self, table: str, key: str, record: Record) -> None: ...

    def delete_maintenance(self, table: str, key: str) -> bool: ...

    def list_maintenance(self, table: str) -> list[Record]: ...

    # --- rollouts --------------------------------------------------------------------------------
    def put_rollout(self, rollout: RolloutRecord) -> None: ...

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None: ...

    def list_rollouts(self) -> list[RolloutRecord]: ...

    # --- activity log (append-only) ---------------------------------------------------------------
    def append_events(self, events: list[Record]) -> None:
        """Append to the activity log; returns once the events are on disk. (Events that belong to a machine
        change travel with it instead: ``mutate_machine(..., events=)``.)"""
        ...

    def iter_events(self, start_day: str, end_day: str, where: tuple[str, str] | None = None) -> Iterator[Record]:
        """Events whose eventTimestamp falls on the UTC days start_day..end_day (YYYY-MM-DD), oldest first;
        with ``where`` = (field, value) only those whose top-level string field equals value."""
        ...

    def query_events(
        self, start_day: str, end_day: str, subscription: str, resource_id: str | None = None, caller: str | None = None
    ) -> Iterator[Record]:
        """The activity log's query: events of one ``subscription`` (lower case) on the UTC days
        start_day..end_day, oldest first; with ``resource_id`` only those of that resource or one under it
        (``<id>/...``), with ``caller`` only that caller's, both compared without case. A store may return more
        than asked (the caller applies the API's rules again): PostgreSQL narrows with indexes of its own."""
        ...

    def prune_events_before(self, day: str) -> int: ...

    def prepare_event_days(self, days: Sequence[str]) -> bool:
        """Make room for the activity log's events of these UTC days (``YYYY-MM-DD``) ahead of them, without
        waiting long for a lock; True when it is made, False when it could not be now (call again later). A
        store that needs nothing ahead returns True."""
        ...

    # --- housekeeping -------------------------------------------------------------------------
    def clear(self, keep_tokens: bool = True) -> None:
        """Forget every machine, operation and catalog entry (tests' reset)."""
        ...

    def close(self) -> None: ...
