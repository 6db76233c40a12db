"""PostgresStore: the Store protocol on PostgreSQL, for several server nodes sharing one database.

Every write is committed (durable, with the server's ``synchronous_commit``) before it returns. A
machine change runs in one transaction: lock the row, apply the change, write the document (or,
for an extension-scoped change, only that extension's record), insert the change's activity-log
events, commit. A job's change of its extension's record (``mutate_extension``) needs no lock when nobody
changes the machine meanwhile: one statement writes the record and the events if the row is still the
version the change saw (compare-and-set on ``xmin``), sent with other threads' writes in one transaction
(``Database.grouped``); otherwise it runs again, at last under the lock. The observers the operations
surface uses (event and rollout listeners, the write timer) are called after the commit, in the writing
process only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, TypeVar, cast

import psycopg

from ...ids import MachineKey
from ...records import OperationRecord, RolloutRecord
from ..base import MachineDoc, Record
from .clock import ClockRow
from .db import Database, SeenRow, redacted
from .events import EventTable, event_days, missing_partition
from .machines import NAMES_OPERATION, MachineTable
from .records import CatalogTables, MaintenanceTable, OperationTable, RolloutTable, TokenTable
from .schema import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")


class PostgresStore:
    """The Store on one PostgreSQL database (``url``: a ``postgresql://`` URL or a libpq conninfo string).

    Opening applies any pending schema migration. ``max_connections`` bounds this process's pool."""

    def __init__(self, url: str, *, min_connections: int = 1, max_connections: int = 20) -> None:
        self.url = url
        self.db = Database(url, min_size=min_connections, max_size=max_connections)
        try:
            with self.db.connection() as conn:
                applied = migrate(conn)
        except BaseException:
            self.db.close()
            raise
        if applied:
            log.info("Migrated %s to schema version %d", redacted(url), applied[-1])
        self._machines = MachineTable(self.db)
        self._events = EventTable(self.db)
        self._operations = OperationTable(self.db)
        self._tokens = TokenTable(self.db)
        self._catalog = CatalogTables(self.db)
        self._maintenance = MaintenanceTable(self.db)
        self._rollouts = RolloutTable(self.db)
        self._clock = ClockRow(self.db)
        self._event_listener: Callable[[list[Record]], None] | None = None
        #: observers (arcext.telemetry): every rollout write, once committed
        self.rollout_listener: Callable[[RolloutRecord], None] | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({redacted(self.url)})"

    # --- machine documents -------------------------------------------------------------------
    def get_machine(self, key: MachineKey) -> MachineDoc | None:
        return self._machines.get(key)

    def view_machine(self, key: MachineKey, view: Callable[[MachineDoc | None], T]) -> T:
        cache = self.db.views()
        if cache is None:
            return view(self._machines.get(key))
        if key.lower not in cache:
            cache[key.lower] = self._machines.get(key)
        return view(cache[key.lower])

    def view_machines(self, views: Sequence[tuple[MachineKey, Callable[[MachineDoc | None], T]]]) -> list[T]:
        """The documents read together (``MachineTable.get_many``); within ``Database.cached_views`` those
        cached are not read again and those read are cached."""
        cache = self.db.views()
        docs: dict[str, MachineDoc | None] = {} if cache is None else cache
        missing = [key for key, _ in views if key.lower not in docs]
        if missing:
            docs.update(self._machines.get_many(missing))
        return [view(docs[key.lower]) for key, view in views]

    def list_machines(
        self, subscription: str, resource_group: str | None, after: str | None, limit: int
    ) -> tuple[list[MachineDoc], str | None]:
        return self._machines.page(subscription, resource_group, after, limit)

    def mutate_machine(
        self,
        key: MachineKey,
        change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]],
        extension: str | None = None,
        events: list[Record] | None = None,
    ) -> T:
        """Lock, change, write and log in one transaction (see the module docstring).

        With ``extension`` only that extension's record is written: changes ``change`` makes to the rest
        of the document are not stored (the embedded store behaves the same way)."""
        cache = self.db.views()
        if cache is not None:
            cache.pop(key.lower, None)
        self.db.offer_row(key.lower, None)  # a row kept for this thread's next change is not current after this one
        with self._dropped_days_forgotten(events), self.db.transaction() as conn:
            current, catalog_version = self._machines.lock(conn, key)
            along: tuple[str, tuple[Any, ...]] | None = None  # the record's write, sent with the events
            with self._catalog.fenced(catalog_version):
                if extension is not None and current is not None:
                    before = current["extensions"].get(extension)
                    new, result = change(current)
                    if new is None:
                        raise ValueError("an extension-scoped change cannot delete the machine")
                    changed = new["extensions"].get(extension)
                    if changed is not None or before is not None:
                        along = self._machines.extension_change(key, extension, changed)
                else:
                    new, result = change(current)
                    if new is not None or current is not None:
                        self._machines.write(conn, key, current is not None, new)
            if events:
                self._log_events(events, along)
            elif along is not None:
                conn.execute(*along)
        return result

    def mutate_extension(
        self,
        key: MachineKey,
        extension: str,
        change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]],
        events: list[Record] | None = None,
    ) -> T:
        """``mutate_machine(key, change, extension=extension, events=events)`` without a lock or a transaction when
        nobody else changes the machine meanwhile; ``change`` may then run more than once, so it must have no
        effect but on the document it is given and on ``events`` (put back as they were before each run).

        ``change`` runs on the row as last seen: as this thread's claim or last write of it left it
        (``Database.offer_row``), else as read now, with its version (``xmin``). One statement then writes the
        extension's record only if the row is still that version (and, if ``change`` looked at the catalog, the
        catalog still at the version it looked at), with the events. When it is not, ``change`` runs again on the
        row read afresh, and after a second miss under the row's lock (``mutate_machine``). A machine that does
        not exist, a change inside a transaction, or events that need a new day's partition take the lock."""
        cache = self.db.views()
        if cache is not None:
            cache.pop(key.lower, None)
        mark = len(events) if events is not None else 0
        if self.db.memo() is None:  # not inside a transaction
            kept = self.db.take_row(key.lower)
            if kept is not None:
                done, result = self._try_compare_and_set(key, extension, change, events, kept, fresh=False)
                if done:
                    return result
                if events is not None:
                    del events[mark:]
            seen = self._machines.read_versioned(key)
            if seen is not None:  # (no machine: the locked path decides what creating it means)
                done, result = self._try_compare_and_set(key, extension, change, events, seen, fresh=True)
                if done:
                    return result
        if events is not None:
            del events[mark:]
        return self.mutate_machine(key, change, extension=extension, events=events)

    def _try_compare_and_set(
        self,
        key: MachineKey,
        extension: str,
        change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]],
        events: list[Record] | None,
        seen: SeenRow,
        fresh: bool,
    ) -> tuple[bool, T]:
        """One optimistic attempt of ``mutate_extension`` on the row ``seen`` (``fresh``: read just now):
        (True, the result) if it stands, (False, ...) if it must run again."""
        doc: MachineDoc = seen.document()
        before = doc["extensions"].get(extension)
        with self._catalog.fenced(seen.catalog_version) as fence:
            try:
                new, result = change(doc)
            except Exception:
                if fresh:
                    raise
                # a row kept from before may be stale: what the change makes of it counts for nothing
                log.debug("A change failed on the row kept for %s; it runs again on the row read now", key.name)
                return False, cast(T, None)
        if new is None:
            raise ValueError("an extension-scoped change cannot delete the machine")
        changed = new["extensions"].get(extension)
        if changed is None and before is None and not events:
            # nothing to write: the result holds for the row as read now, not for one kept from before
            return fresh, result
        logged = self._events.insert_along(events) if events else None
        if events and logged is None:
            return False, result  # a new day's partition first: under the lock (mutate_machine)
        started = time.perf_counter()
        try:
            written = self._machines.compare_and_set(
                key, extension, changed, seen, fence.version if fence.used else None, logged
            )
        except psycopg.errors.CheckViolation as exc:
            if not events or not missing_partition(exc):
                raise
            # the day's partition this node knew is gone (another node pruned or reset the log): nothing was
            # written; the locked path makes the partition again
            self._events.forget(event_days(events))
            return False, result
        if written is None:
            return False, result
        self.db.observe(time.perf_counter() - started)
        self.db.offer_row(key.lower, written)
        if events:
            self._tell_events(list(events))
        return True, result

    def iter_machines(self) -> Iterator[MachineDoc]:
        return self._machines.scan()

    def project_machines(self, project: Callable[[MachineDoc], T | None]) -> list[T]:
        return self._project(project)

    def project_machines_naming_operations(self, project: Callable[[MachineDoc], T | None]) -> list[T]:
        return self._project(project, where=NAMES_OPERATION)

    def _project(self, project: Callable[[MachineDoc], T | None], where: str = "") -> list[T]:
        out: list[T] = []
        for doc in self._machines.scan(batch=1000, where=where):
            value = project(doc)
            if value is not None:
                out.append(value)
        return out

    def count_machines(self) -> int:
        return self._machines.count()

    # --- long-running operations -----------------------------------------------------------------
    def put_operation(self, op: OperationRecord) -> None:
        self._operations.put(op)

    def get_operation(self, op_id: str) -> OperationRecord | None:
        return self._operations.get(op_id)

    def list_operations(self, status: str | None = None) -> list[OperationRecord]:
        return self._operations.list(status)

    def delete_operations_before(self, iso_time: str) -> int:
        return self._operations.delete_ended_before(iso_time)

    # --- tokens --------------------------------------------------------------------------------
    def put_token(self, token: Record) -> None:
        self._tokens.put(token)

    def get_token_by_hash(self, token_hash: str) -> Record | None:
        return self._tokens.by_hash(token_hash)

    def list_tokens(self) -> list[Record]:
        return self._tokens.list()

    def delete_token(self, token_id: str) -> bool:
        return self._tokens.delete(token_id)

    # --- extension catalog -----------------------------------------------------------------------
    def put_extension_type(self, record: Record) -> None:
        self._catalog.put_type(record)

    def get_extension_type(self, publisher: str, type_: str) -> Record | None:
        return self._catalog.get_type(publisher, type_)

    def list_extension_types(self) -> list[Record]:
        return self._catalog.list_types()

    def put_extension_version(self, record: Record) -> None:
        self._catalog.put_version(record)

    def list_extension_versions(self, publisher: str, type_: str) -> list[Record]:
        return self._catalog.list_versions(publisher, type_)

    # --- maintenance ----------------------------------------------------------------------------
    def put_maintenance(self, table: str, key: str, record: Record) -> None:
        self._maintenance.put(table, key, record)

    def delete_maintenance(self, table: str, key: str) -> bool:
        return self._maintenance.delete(table, key)

    def list_maintenance(self, table: str) -> list[Record]:
        return self._maintenance.list(table)

    # --- rollouts --------------------------------------------------------------------------------
    def put_rollout(self, rollout: RolloutRecord) -> None:
        self._rollouts.put(rollout)
        self.db.after_commit(lambda: self._tell_rollout(rollout))

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None:
        return self._rollouts.get(rollout_id)

    def list_rollouts(self) -> list[RolloutRecord]:
        return self._rollouts.list()

    # --- activity log ------------------------------------------------------------------------------
    def append_events(self, events: list[Record]) -> None:
        if not events:
            return
        with self._dropped_days_forgotten(events), self.db.transaction():
            self._log_events(events)

    @contextmanager
    def _dropped_days_forgotten(self, events: list[Record] | None) -> Iterator[None]:
        """A transaction whose events found their day's partition gone (another node dropped it after this one saw
        it: its pruning, a test harness's reset) fails; the days are forgotten, so the next write of them makes
        them again."""
        try:
            yield
        except psycopg.errors.CheckViolation as exc:
            if events and missing_partition(exc):
                self._events.forget(event_days(events))
            raise

    def _log_events(self, events: list[Record], along: tuple[str, tuple[Any, ...]] | None = None) -> None:
        """Insert ``events`` (with the change ``along``, in one statement) in the thread's transaction; once it
        committed, remember the partitions it made and tell the listener."""
        generation = self._events.generation()
        with self.db.connection() as conn:
            made = self._events.insert(conn, events, along)
        logged = list(events)

        def committed() -> None:
            self._events.made(made, generation)
            self._tell_events(logged)

        self.db.after_commit(committed)

    def iter_events(self, start_day: str, end_day: str, where: tuple[str, str] | None = None) -> Iterator[Record]:
        return self._events.between(start_day, end_day, where)

    def query_events(
        self, start_day: str, end_day: str, subscription: str, resource_id: str | None = None, caller: str | None = None
    ) -> Iterator[Record]:
        return self._events.of_subscription(start_day, end_day, subscription, resource_id, caller)

    def prune_events_before(self, day: str) -> int:
        return self._events.prune_before(day)

    def prepare_event_days(self, days: Sequence[str]) -> bool:
        return self._events.prepare(date.fromisoformat(d) for d in days)

    # --- observers (the optional capabilities of store/capabilities.py) -------------------------------
    def set_event_listener(self, listener: Callable[[list[Record]], None] | None) -> None:
        """Call ``listener`` with the events of every append, once they are committed."""
        self._event_listener = listener

    def set_write_observer(self, observer: Callable[[float], None] | None) -> None:
        """Call ``observer`` with the seconds every commit of a machine change or event append took."""
        self.db.observer = observer

    def _tell_rollout(self, rollout: RolloutRecord) -> None:
        if self.rollout_listener is None:
            return
        try:
            self.rollout_listener(rollout)
        except Exception:  # observers never fail a write
            log.exception("A rollout listener failed")

    def _tell_events(self, events: list[Record]) -> None:
        if self._event_listener is None:
            return
        try:
            self._event_listener(events)
        except Exception:  # observers never fail a write
            log.exception("An activity-log listener failed")

    # --- the shared clock ---------------------------------------------------------------------------
    def get_clock(self, start: datetime) -> datetime:
        """The time of the manual clock every node shares; the first caller sets it to ``start``."""
        return self._clock.get(start)

    def advance_clock(self, seconds: float, start: datetime) -> datetime:
        """Move the shared manual clock forward (from ``start`` if it was never set); returns the new time."""
        return self._clock.advance(seconds, start)

    # --- housekeeping ------------------------------------------------------------------------------
    def clear(self, keep_tokens: bool = True) -> None:
        """Tests' reset: rows deleted (on small tables much quicker than TRUNCATE, which makes new files),
        the activity log's partitions dropped. The shared clock stays, as the embedded store's clock file."""
        tables = ["machines", "operations", "extension_types", "extension_versions", "maintenance", "rollouts"]
        if not keep_tokens:
            tables.append("tokens")
        with self.db.transaction() as conn:
            for table in tables:
                conn.execute(f"DELETE FROM {table}")
            self._events.drop_all(conn)
        self._rollouts.forget()

    def close(self) -> None:
        self.db.close()
