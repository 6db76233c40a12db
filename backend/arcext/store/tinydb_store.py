"""The embedded store: the Store protocol (store/base.py) on files under one data directory.

It composes one part per kind of record:

* machine documents (store/machines.py): in memory, journaled before every acknowledgement,
  checkpointed into shard files; the first on-disk layout is migrated once (store/migration.py);
* operations and rollouts (store/record_files.py): one JSON file per record;
* tokens, the extension catalog and the maintenance tables (store/metadata.py): small TinyDB files;
* the activity log (store/eventlog.py): one append-only file per day.

``tokens_only`` (the ``arcext token`` command) opens just the TinyDB files and the activity log.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from ..ids import MachineKey
from ..records import ActivityEvent, OperationRecord, RolloutRecord
from .atomic_storage import fsync_dir
from .base import MachineDoc, Record, names_operation
from .eventlog import EventLog, field_fragment
from .journal import Journal
from .machines import MachineDocuments
from .metadata import MetadataTables
from .record_files import OperationFiles, RolloutFiles

log = logging.getLogger(__name__)

T = TypeVar("T")


class TinyDBStore:
    """Store implementation on TinyDB and JSON files under one data directory."""

    def __init__(self, data_dir: Path, *, tokens_only: bool = False) -> None:
        """Open (or create) the store; ``tokens_only`` skips loading machines (for CLI token commands)."""
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "machines").mkdir(exist_ok=True)
        self.operations = OperationFiles(self.data_dir / "operations")
        self.rollouts = RolloutFiles(self.data_dir / "rollouts")
        self._events = EventLog(self.data_dir / "activity")
        self.metadata = MetadataTables(self.data_dir, peer_of_server=tokens_only)
        self._machines: MachineDocuments | None = None
        if not tokens_only:
            self._machines = MachineDocuments(self.data_dir / "machines", self.data_dir / "journal", self._events)
            self._load(self._machines)
            self._machines.start_checkpoints()

    def _load(self, machines: MachineDocuments) -> None:
        # Loading allocates millions of long-lived objects; the cyclic GC would rescan them while they
        # pile up (two thirds of start-up at 25k machines) and pause ~0.8 s on every later full
        # collection. Nothing loaded forms cycles; freezing only exempts it from the cyclic GC.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            journal_events = machines.load()
            self.operations.load()
        finally:
            if gc_was_enabled:
                gc.enable()
            gc.freeze()
        restored = self._events.ensure(journal_events)
        if restored:
            log.info("Restored %d activity-log events from the journal", restored)
        self.rollouts.load()

    @property
    def machines(self) -> MachineDocuments:
        """The machine documents (not loaded in a ``tokens_only`` store)."""
        if self._machines is None:
            raise RuntimeError("this store was opened for tokens only")
        return self._machines

    @property
    def _journal(self) -> Journal:
        return self.machines.journal

    # --- machine documents -----------------------------------------------------------------
    def get_machine(self, key: MachineKey) -> MachineDoc | None:
        return self.machines.get(key)

    def view_machine(self, key: MachineKey, view: Callable[[MachineDoc | None], T]) -> T:
        return self.machines.view(key, view)

    def view_machines(self, views: Sequence[tuple[MachineKey, Callable[[MachineDoc | None], T]]]) -> list[T]:
        return self.machines.view_many(views)

    def list_machines(
        self, subscription: str, resource_group: str | None, after: str | None, limit: int
    ) -> tuple[list[MachineDoc], str | None]:
        return self.machines.page(subscription, resource_group, after, limit)

    def mutate_machine(
        self,
        key: MachineKey,
        change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]],
        extension: str | None = None,
        events: list[Record] | None = None,
    ) -> T:
        """See ``MachineDocuments.mutate``: durable (with ``events``) before it returns."""
        return self.machines.mutate(key, change, extension, events)

    def iter_machines(self) -> Iterator[MachineDoc]:
        return self.machines.iterate()

    def project_machines(self, project: Callable[[MachineDoc], T | None]) -> list[T]:
        return self.machines.project(project)

    def project_machines_naming_operations(self, project: Callable[[MachineDoc], T | None]) -> list[T]:
        return self.machines.project(lambda doc: project(doc) if names_operation(doc) else None)

    def count_machines(self) -> int:
        return self.machines.count()

    def checkpoint(self) -> int:
        """Write changed machine documents to their shards now; returns how many had changed."""
        return self.machines.checkpoint()

    # --- operations -----------------------------------------------------------------------
    def put_operation(self, op: OperationRecord) -> None:
        self.operations.put(op)

    def get_operation(self, op_id: str) -> OperationRecord | None:
        return self.operations.get(op_id)

    def list_operations(self, status: str | None = None) -> list[OperationRecord]:
        return self.operations.list(status)

    def delete_operations_before(self, iso_time: str) -> int:
        return self.operations.delete_before(iso_time)

    # --- tokens, catalog, maintenance ---------------------------------------------------------
    def put_token(self, token: Record) -> None:
        self.metadata.put_token(token)

    def get_token_by_hash(self, token_hash: str) -> Record | None:
        return self.metadata.get_token_by_hash(token_hash)

    def list_tokens(self) -> list[Record]:
        return self.metadata.list_tokens()

    def delete_token(self, token_id: str) -> bool:
        return self.metadata.delete_token(token_id)

    def put_extension_type(self, record: Record) -> None:
        self.metadata.put_extension_type(record)

    def get_extension_type(self, publisher: str, type_: str) -> Record | None:
        return self.metadata.get_extension_type(publisher, type_)

    def list_extension_types(self) -> list[Record]:
        return self.metadata.list_extension_types()

    def put_extension_version(self, record: Record) -> None:
        self.metadata.put_extension_version(record)

    def list_extension_versions(self, publisher: str, type_: str) -> list[Record]:
        return self.metadata.list_extension_versions(publisher, type_)

    def put_maintenance(self, table: str, key: str, record: Record) -> None:
        self.metadata.put_maintenance(table, key, record)

    def delete_maintenance(self, table: str, key: str) -> bool:
        return self.metadata.delete_maintenance(table, key)

    def list_maintenance(self, table: str) -> list[Record]:
        return self.metadata.list_maintenance(table)

    # --- rollouts ---------------------------------------------------------------------------
    @property
    def rollout_listener(self) -> Callable[[RolloutRecord], None] | None:
        """Observer (arcext.telemetry) of every rollout write, once durable."""
        return self.rollouts.listener

    @rollout_listener.setter
    def rollout_listener(self, listener: Callable[[RolloutRecord], None] | None) -> None:
        self.rollouts.listener = listener

    def put_rollout(self, rollout: RolloutRecord) -> None:
        """Durable on return. The store keeps a reference, not a copy: its writer (the engine) owns it."""
        self.rollouts.put(rollout)

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None:
        return self.rollouts.get(rollout_id)

    def list_rollouts(self) -> list[RolloutRecord]:
        return self.rollouts.list()

    # --- activity log -----------------------------------------------------------------------
    def set_event_listener(self, listener: Callable[[list[ActivityEvent]], None] | None) -> None:
        """Call ``listener`` with the events of every append, once the log holds them."""
        self._events.listener = listener

    def set_write_observer(self, observer: Callable[[float], None] | None) -> None:
        """Call ``observer`` with the seconds every durable journal append took."""
        if self._machines is not None:
            self._machines.journal.observer = observer

    def journal_figures(self) -> dict[str, float]:
        """The journal's size since the last checkpoint, its segments, and the checkpoints so far."""
        machines = self._machines
        if machines is None:
            return {}
        return {
            "journal_bytes": float(machines.journal.bytes_written),
            "journal_segments": float(len(machines.journal.segments())),
            "checkpoints": float(machines.checkpoints),
            "last_checkpoint_seconds": machines.last_checkpoint_seconds,
            "dirty_documents": float(machines.dirty_count()),
        }

    def append_events(self, events: list[Record]) -> None:
        self._events.append(events, durable=True)

    def iter_events(self, start_day: str, end_day: str, where: tuple[str, str] | None = None) -> Iterator[Record]:
        if where is None:
            return self._events.between(start_day, end_day)
        name, value = where
        found = self._events.between(start_day, end_day, contains=field_fragment(name, value))
        return (e for e in found if e.get(name) == value)  # the fragment could also sit deeper in an event

    def query_events(
        self, start_day: str, end_day: str, subscription: str, resource_id: str | None = None, caller: str | None = None
    ) -> Iterator[Record]:
        return self.iter_events(start_day, end_day, ("subscriptionId", subscription))  # the caller narrows

    def prune_events_before(self, day: str) -> int:
        return self._events.prune_before(day)

    def prepare_event_days(self, days: Sequence[str]) -> bool:
        """A day's events go to a file made when its first event is written: nothing to make ahead."""
        return True

    # --- housekeeping -----------------------------------------------------------------------
    def clear(self, keep_tokens: bool = True) -> None:
        with self.operations.lock:
            self.machines.clear()
            self.operations.clear()
            fsync_dir(self.data_dir)
        self.metadata.clear(keep_tokens)
        self.rollouts.clear()
        self._events.clear()

    def close(self) -> None:
        if self._machines is not None:
            self._machines.close()
        self._events.close()
        self.metadata.close()
