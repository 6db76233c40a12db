"""Machine documents: in memory, journaled before every acknowledgement, checkpointed into shard files.

Each machine document (the machine and its extensions) lives in memory under its own lock. A change
is appended to the write-ahead journal (store/journal.py, group commit in store/groupcommit.py) and
fsynced before it is acknowledged, so it survives kill -9. A background checkpoint rewrites the
shard files holding changed documents (``machines/<00..ff>.json``, by the first byte of sha1(key),
in TinyDB's on-disk layout) and drops the journal segments they cover. Start-up loads the shards
(and, once, the first layout: store/migration.py) and replays the journal.

Activity-log events that belong to a change travel in its journal record: one durable write covers
both, and start-up restores events the log lost from the journal.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ..ids import MachineKey
from ..records import ActivityEvent
from .atomic_storage import AtomicJSONStorage, atomic_write_bytes
from .base import MachineDoc, jcopy
from .eventlog import EventLog
from .journal import Journal
from .migration import load_legacy_layout, remove_legacy_files

log = logging.getLogger(__name__)

T = TypeVar("T")
_SEP = "\x00"


def shard_of(key_lower: str) -> str:
    """The shard file a machine lives in: machines/<00..ff>.json, by the first byte of sha1(key)."""
    return hashlib.sha1(key_lower.encode()).hexdigest()[:2]


def _shard_layout(docs: list[tuple[str, MachineDoc]]) -> dict[str, Any]:
    """A shard's machine documents in TinyDB's on-disk layout: {table: {doc_id: document}}."""
    return {"machines": {str(i): {"key": key, **doc} for i, (key, doc) in enumerate(docs, 1)}}


def _sort_key(key: MachineKey) -> str:
    return f"{key.resource_group.lower()}{_SEP}{key.name.lower()}"


class _Slot:
    """One machine key: its lock and its current document (None once deleted)."""

    __slots__ = ("doc", "lock")

    def __init__(self, doc: MachineDoc | None = None) -> None:
        self.doc = doc
        self.lock = threading.Lock()


class MachineDocuments:
    """Every machine document of one data directory, with the journal and checkpoints that keep them."""

    # A checkpoint rewrites the shard files that hold changed documents (0.47 s for 10,000 machines), so
    # the fewer, the cheaper; what bounds them is the replay at start (1.7 s measured for 250 MiB of
    # journal). PostgreSQL's defaults are of the same kind: checkpoint_timeout 5 min, max_wal_size 1 GB.
    checkpoint_bytes = 256 * 1024 * 1024  # journal size that triggers a checkpoint
    checkpoint_seconds = 300.0  # and at least this often while anything changed

    def __init__(self, machines_dir: Path, journal_dir: Path, events: EventLog) -> None:
        self.machines_dir = machines_dir
        self._machines_dir_str = os.fspath(machines_dir)
        self.machines_dir.mkdir(parents=True, exist_ok=True)
        self.events = events
        self.journal = Journal(journal_dir)
        self._shard_keys: dict[str, set[str]] = {}  # shard -> machine keys in it (under _index_lock)
        self._legacy_files: list[Path] = []  # first-layout files, removed by the first checkpoint
        self._index_lock = threading.RLock()
        self._slots: dict[str, _Slot] = {}
        # subscription -> sorted ["<rg lower>\0<name lower>"]
        self._by_sub: dict[str, list[str]] = {}
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_checkpoint = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self.checkpoints = 0  # checkpoints that wrote anything, since start
        self.last_checkpoint_seconds = 0.0

    # --- start-up ----------------------------------------------------------------------------
    def load(self) -> list[ActivityEvent]:
        """Load the first layout, the shards and the journal; returns the events the journal carried."""
        legacy, self._legacy_files = load_legacy_layout(self.machines_dir)
        for key_lower, doc in legacy.items():
            self._slots[key_lower] = _Slot(doc)
            self._dirty.add(key_lower)
        # shard files (written after any first-layout file they share a machine with: they win)
        for entry in sorted(os.scandir(self.machines_dir), key=lambda e: e.name):
            if not entry.is_file():
                continue
            if entry.name.endswith(".tmp"):
                os.unlink(entry.path)  # a shard write that never got its rename
                continue
            data = AtomicJSONStorage(entry.path).read() or {}
            for stored in (data.get("machines") or {}).values():
                key_lower = stored.pop("key")
                self._slots[key_lower] = _Slot(stored)
                self._dirty.discard(key_lower)
        journal_events = self._replay()
        for key_lower, slot in self._slots.items():
            self._shard_keys.setdefault(shard_of(key_lower), set()).add(key_lower)
            if slot.doc is not None:
                sub, rg, name = key_lower.split("/")
                self._by_sub.setdefault(sub, []).append(f"{rg}{_SEP}{name}")
        for keys in self._by_sub.values():
            keys.sort()
        return journal_events

    def _replay(self) -> list[ActivityEvent]:
        journal_events: list[ActivityEvent] = []
        replayed = 0
        for record in Journal.replay(self.journal.segments()):
            if "ev" in record:
                journal_events.extend(record["ev"])
            slot = self._slots.setdefault(record["k"], _Slot())
            if "x" in record:  # one extension's record
                if slot.doc is not None:
                    if record["r"] is None:
                        slot.doc["extensions"].pop(record["x"], None)
                    else:
                        slot.doc["extensions"][record["x"]] = record["r"]
            else:
                slot.doc = record["d"]
            self._dirty.add(record["k"])
            replayed += 1
        if replayed:
            log.info("Replayed %d journal records", replayed)
        return journal_events

    def start_checkpoints(self) -> None:
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="arcext-checkpoint", daemon=True)
        self._checkpointer.start()

    # --- reads ---------------------------------------------------------------------------------
    def get(self, key: MachineKey) -> MachineDoc | None:
        slot = self._slots.get(key.lower)
        if slot is None:
            return None
        with slot.lock:
            return jcopy(slot.doc) if slot.doc is not None else None

    def view(self, key: MachineKey, view: Callable[[MachineDoc | None], T]) -> T:
        slot = self._slots.get(key.lower)
        if slot is None:
            return view(None)
        with slot.lock:
            return view(slot.doc)

    def view_many(self, views: Sequence[tuple[MachineKey, Callable[[MachineDoc | None], T]]]) -> list[T]:
        """Each view applied to its document, as ``view`` (in memory, nothing to batch)."""
        return [self.view(key, view) for key, view in views]

    def page(
        self, subscription: str, resource_group: str | None, after: str | None, limit: int
    ) -> tuple[list[MachineDoc], str | None]:
        sub = subscription.lower()
        with self._index_lock:
            keys = self._by_sub.get(sub, [])
            prefix = f"{resource_group.lower()}{_SEP}" if resource_group else ""
            start = bisect.bisect_left(keys, prefix)
            if after is not None:
                start = max(start, bisect.bisect_right(keys, after))
            page: list[str] = []
            i = start
            while i < len(keys) and len(page) < limit + 1:
                if prefix and not keys[i].startswith(prefix):
                    break
                page.append(keys[i])
                i += 1
        more = len(page) > limit
        page = page[:limit]
        docs: list[MachineDoc] = []
        for sk in page:
            rg, name = sk.split(_SEP)
            doc = self.get(MachineKey(sub, rg, name))
            if doc is not None:
                docs.append(doc)
        return docs, (page[-1] if more and page else None)

    def _all_slots(self) -> list[_Slot]:
        with self._index_lock:
            return list(self._slots.values())

    def iterate(self) -> Iterator[MachineDoc]:
        for slot in self._all_slots():
            with slot.lock:
                doc = jcopy(slot.doc) if slot.doc is not None else None
            if doc is not None:
                yield doc

    def project(self, project: Callable[[MachineDoc], T | None]) -> list[T]:
        out: list[T] = []
        for slot in self._all_slots():
            with slot.lock:
                if slot.doc is not None:
                    value = project(slot.doc)
                    if value is not None:
                        out.append(value)
        return out

    def count(self) -> int:
        with self._index_lock:
            return sum(len(keys) for keys in self._by_sub.values())

    def dirty_count(self) -> int:
        return len(self._dirty)

    # --- writes ----------------------------------------------------------------------------------
    def mutate(
        self,
        key: MachineKey,
        change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]],
        extension: str | None = None,
        events: list[ActivityEvent] | None = None,
    ) -> T:
        """Read-change-journal under the machine's lock; the new document is durable before this returns.

        ``events`` (filled by ``change`` or before) go to the activity log without an fsync of their own
        and into the journal record: the one durable write covers both. A crash before the event log
        reached the disk is repaired at start from the journal; a checkpoint syncs the event log before it
        drops journal segments.

        The document ``change`` returns becomes the store's own: callers must not keep changing it.
        With ``extension``, only that extension's record is a private copy (the rest of the document
        is shared and must not be changed) and only that record is journaled: the upgrade engine's
        steps touch one extension, and copying and journaling whole machines was most of their cost."""
        with self._index_lock:
            slot = self._slots.get(key.lower)
            if slot is None:
                # a slot, once made, stays for the life of the process (empty after a delete),
                # so two writers of one key always share one lock
                slot = self._slots[key.lower] = _Slot()
                self._shard_keys.setdefault(shard_of(key.lower), set()).add(key.lower)
        with slot.lock:
            current = slot.doc
            if extension is not None and current is not None:
                scoped = self._mutate_extension(key, slot, current, extension, change, events)
                self._maybe_checkpoint()
                return scoped
            new, result = change(jcopy(current) if current is not None else None)
            if new is None and current is None:
                if events:
                    self.events.append(events, durable=True)
                return result
            self._mark_dirty(key)
            self._journal_with_events({"k": key.lower, "d": new}, events)
            slot.doc = new
            if new is None:
                self._unindex(key)
            elif current is None:
                with self._index_lock:
                    bisect.insort(self._by_sub.setdefault(key.subscription, []), _sort_key(key))
        self._maybe_checkpoint()
        return result

    def _mark_dirty(self, key: MachineKey) -> None:
        with self._dirty_lock:
            self._dirty.add(key.lower)  # before the journal append: a checkpoint must not miss this change

    def _maybe_checkpoint(self) -> None:
        if self.journal.bytes_written > self.checkpoint_bytes:
            self._wake_checkpoint.set()

    def _mutate_extension(
        self,
        key: MachineKey,
        slot: _Slot,
        current: MachineDoc,
        extension: str,
        change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]],
        events: list[ActivityEvent] | None,
    ) -> T:
        record = current["extensions"].get(extension)
        draft: MachineDoc = {
            "machine": current["machine"],
            "extensions": {
                **current["extensions"],
                **({extension: jcopy(record)} if record is not None else {}),
            },
        }
        new, result = change(draft)
        if new is None:
            raise ValueError("an extension-scoped change cannot delete the machine")
        changed = new["extensions"].get(extension)
        if changed is None and record is None:  # nothing was there and nothing is: nothing to write
            if events:
                self.events.append(events, durable=True)
            return result
        self._mark_dirty(key)
        self._journal_with_events({"k": key.lower, "x": extension, "r": changed}, events)
        slot.doc = {"machine": current["machine"], "extensions": {**current["extensions"]}}
        if changed is None:
            slot.doc["extensions"].pop(extension, None)
        else:
            slot.doc["extensions"][extension] = changed
        return result

    def _journal_with_events(self, entry: dict[str, Any], events: list[ActivityEvent] | None) -> None:
        """Journal ``entry`` carrying ``events``, then hand them to the activity log (not fsynced); each
        event is serialized once, for both. Called under the machine's slot lock.

        The log gets them only once the journal holds them: a log written first could reach the disk
        (the lazy flush, another caller's sync) before a crash lost the journal write, leaving an event
        for a change that never happened (a Started with no Running job, so no end event ever), and
        would keep them even when the journal write failed. A checkpoint still sees them: the slot lock
        is held until they are in the log, and a checkpoint takes the lock of every dirty machine (this
        one is, before the journal write) before it syncs the log."""
        if not events:
            self.journal.append(entry)
            return
        lines = [orjson.dumps(e) for e in events]
        entry["ev"] = [orjson.Fragment(line) for line in lines]
        self.journal.append(entry)
        try:
            self.events.append_lines(lines, durable=False, records=events)
        except Exception:  # the change is durable and so are its events (journal): do not report a failure
            log.exception("Could not hand %d activity-log events to the log; start-up restores them", len(lines))

    def _unindex(self, key: MachineKey) -> None:
        with self._index_lock:
            keys = self._by_sub.get(key.subscription, [])
            sk = _sort_key(key)
            i = bisect.bisect_left(keys, sk)
            if i < len(keys) and keys[i] == sk:
                del keys[i]

    # --- checkpoints ---------------------------------------------------------------------------
    def _checkpoint_loop(self) -> None:
        while not self._stop.is_set():
            self._wake_checkpoint.wait(self.checkpoint_seconds)
            self._wake_checkpoint.clear()
            if self._stop.is_set():
                return
            try:
                self.checkpoint()
            except Exception:  # keep journaling; the next checkpoint tries again
                log.exception("Checkpoint failed")

    def checkpoint(self) -> int:
        """Rewrite the shard files of changed documents, sync, and drop the journal segments they cover.
        Returns how many documents had changed."""
        with self._checkpoint_lock:
            with self._dirty_lock:
                if not self._dirty:
                    return 0
            started = time.perf_counter()
            old_segments = self.journal.rotate()
            with self._dirty_lock:
                dirty, self._dirty = self._dirty, set()
            try:
                self._write_shards(dirty)
            except BaseException:
                # the old segments stay, but the next checkpoint drops them too: it must rewrite these
                with self._dirty_lock:
                    self._dirty |= dirty
                raise
            # first-layout files go before the journal: with the journal gone, a leftover file of a machine
            # deleted since would bring it back at the next start (no shard holds it, no record deletes it)
            self._remove_legacy_files()
            self.journal.remove(old_segments)
            self.checkpoints += 1
            self.last_checkpoint_seconds = time.perf_counter() - started
            return len(dirty)

    def _write_shards(self, dirty: set[str]) -> None:
        """Rewrite the shard files holding ``dirty`` machines and sync them and the event log."""
        for shard in sorted({shard_of(k) for k in dirty}):
            with self._index_lock:
                keys = sorted(self._shard_keys.get(shard, ()))
            docs: list[tuple[str, MachineDoc]] = []
            for key_lower in keys:
                slot = self._slots.get(key_lower)
                if slot is None:
                    continue
                with slot.lock:  # also waits for a writer between its journal write and its events
                    doc = slot.doc  # documents are replaced, never changed in place: safe to read after
                if doc is not None:
                    docs.append((key_lower, doc))
            path = f"{self._machines_dir_str}{os.sep}{shard}.json"
            if docs:
                atomic_write_bytes(path, orjson.dumps(_shard_layout(docs)), sync=False)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        os.sync()  # every snapshot is on disk before the journal that covered it goes
        self.events.sync()  # and so is every event that travelled in it

    def _remove_legacy_files(self) -> None:
        """First-layout files are gone once a checkpoint has written their machines into shards."""
        remove_legacy_files(self.machines_dir, self._legacy_files)
        self._legacy_files = []

    # --- housekeeping ----------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every machine document (the journal, the shards, the indexes)."""
        with self._checkpoint_lock, self._index_lock:
            self.journal.remove(self.journal.rotate())
            with self._dirty_lock:
                self._dirty.clear()
            shutil.rmtree(self.machines_dir, ignore_errors=True)
            self.machines_dir.mkdir()
            self._shard_keys.clear()
            self._legacy_files = []
            self._slots.clear()
            self._by_sub.clear()

    def close(self) -> None:
        """Stop the checkpoint thread and checkpoint once: a clean stop leaves nothing to replay."""
        if self._checkpointer is None:
            return
        self._stop.set()
        self._wake_checkpoint.set()
        self._checkpointer.join(timeout=30)
        self._checkpointer = None
        self.checkpoint()
        self.journal.close()
