"""The embedded store: small TinyDB files, a write-ahead journal, and in-memory indexes.

Naive single-file TinyDB rewrites the whole database on every write (about 1 s at 50,000
documents). Here each machine document (the machine and its extensions) is its own small TinyDB
file, a *snapshot* (tables ``machine`` and ``extensions``), and all documents live in memory. A
change is appended to the journal (store/journal.py) and fsynced before it is acknowledged, so it
survives kill -9; a background checkpoint writes changed documents to their snapshot files and
drops journal segments they cover. Start-up loads the snapshots and replays the journal.
Operations and rollouts are one JSON file each; tokens and the catalog are small TinyDB files.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
from tinydb import Query, TinyDB
from tinydb.middlewares import CachingMiddleware

from ..ids import MachineKey, parse_resource_id
from .atomic_storage import AtomicJSONStorage, atomic_write_bytes, fsync_dir
from .base import MachineDoc, Record, jcopy
from .eventlog import EventLog, field_fragment
from .journal import Journal

log = logging.getLogger(__name__)

T = TypeVar("T")
_SEP = "\x00"


class _WriteThroughCache(CachingMiddleware):
    """CachingMiddleware that never flushes on its own: the store flushes once per change."""

    WRITE_CACHE_SIZE = 1 << 30


def _open_db(path: Path) -> TinyDB:
    return TinyDB(path, storage=_WriteThroughCache(AtomicJSONStorage))  # type: ignore[no-untyped-call]


def _flush(db: TinyDB) -> None:
    cache: Any = db.storage
    cache.flush()


def _shard_of(key_lower: str) -> str:
    """The snapshot file a machine lives in: machines/<00..ff>.json, by the first byte of sha1(key)."""
    return hashlib.sha1(key_lower.encode()).hexdigest()[:2]


def _shard_layout(docs: list[tuple[str, MachineDoc]]) -> dict[str, Any]:
    """A shard's machine documents in TinyDB's on-disk layout: {table: {doc_id: document}}."""
    return {"machines": {str(i): {"key": key, **doc} for i, (key, doc) in enumerate(docs, 1)}}


def _read_legacy_snapshot(path: Path) -> MachineDoc | None:
    """A snapshot of the first layout (one TinyDB file per machine, machines/<xx>/<sha1>.json)."""
    db = TinyDB(path, storage=AtomicJSONStorage)
    try:
        machine = db.table("machine").get(doc_id=1)
        if machine is None:
            return None
        extensions = {d["key"]: d["record"] for d in db.table("extensions").all()}
        return {"machine": dict(machine), "extensions": extensions}
    finally:
        db.close()


class _Slot:
    """One machine key: its lock and its current document (None once deleted)."""

    __slots__ = ("doc", "lock")

    def __init__(self, doc: MachineDoc | None = None) -> None:
        self.doc = doc
        self.lock = threading.Lock()


class TinyDBStore:
    """Store implementation on TinyDB files under one data directory."""

    def __init__(self, data_dir: Path, *, tokens_only: bool = False) -> None:
        """Open (or create) the store; ``tokens_only`` skips loading machines (for CLI token commands)."""
        self.data_dir = Path(data_dir)
        self._tokens_only = tokens_only
        self._machines_dir = self.data_dir / "machines"
        self._machines_dir_str = os.fspath(self._machines_dir)
        self._shard_keys: dict[str, set[str]] = {}  # shard -> machine keys in it (under _index_lock)
        self._legacy_snapshots: list[Path] = []  # first-layout files, removed by the first checkpoint
        self._ops_dir = self.data_dir / "operations"
        self._index_lock = threading.RLock()
        self._slots: dict[str, _Slot] = {}
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._wake_checkpoint = threading.Event()
        # subscription -> sorted ["<rg lower>\0<name lower>"]
        self._by_sub: dict[str, list[str]] = {}
        self._ops: dict[str, Record] = {}
        self._ops_lock = threading.Lock()
        self._meta_lock = threading.RLock()
        #: observers (arcext.telemetry): every rollout write, once durable
        self.rollout_listener: Callable[[Record], None] | None = None
        self.checkpoints = 0  # checkpoints that wrote anything, since start
        self.last_checkpoint_seconds = 0.0
        self._open()

    # --- start-up ----------------------------------------------------------------------------
    def _open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._machines_dir.mkdir(exist_ok=True)
        self._ops_dir.mkdir(exist_ok=True)
        self._rollouts_dir = self.data_dir / "rollouts"
        self._rollouts_dir.mkdir(exist_ok=True)
        self._rollouts_lock = threading.Lock()
        self._rollouts: dict[str, Record] = {}
        self._events = EventLog(self.data_dir / "activity")
        self._tokens = _open_db(self.data_dir / "tokens.json")
        self._catalog = _open_db(self.data_dir / "catalog.json")
        self._maintenance = _open_db(self.data_dir / "maintenance.json")
        # the engine asks for a type on every job: a dict, kept in step with the catalog table
        self._types_by_key: dict[str, Record] = {d["key"]: dict(d) for d in self._catalog.table("types").all()}
        self._tokens_mtime = self._tokens_file_mtime()
        self._token_by_hash = {t["hash"]: dict(t) for t in self._tokens.table("tokens").all()}
        if not self._tokens_only:
            self._journal = Journal(self.data_dir / "journal")
            # Loading allocates millions of long-lived objects; the cyclic GC would rescan them while they
            # pile up (two thirds of start-up at 25k machines) and pause ~0.8 s on every later full
            # collection. Nothing loaded forms cycles; freezing only exempts it from the cyclic GC.
            gc_was_enabled = gc.isenabled()
            gc.disable()
            self._journal_events: list[Record] = []
            try:
                self._load_machines()
                self._load_operations()
            finally:
                if gc_was_enabled:
                    gc.enable()
                gc.freeze()
            restored = self._events.ensure(self._journal_events)
            if restored:
                log.info("Restored %d activity-log events from the journal", restored)
            del self._journal_events
            for path in self._rollouts_dir.glob("*.json"):
                rollout = AtomicJSONStorage(path).read()
                plan_path = path.with_suffix(".plan")
                if not rollout or not plan_path.exists():
                    continue
                plan = orjson.loads(plan_path.read_bytes())
                for wave, targets in zip(rollout["waves"], plan, strict=True):
                    for batch, batch_targets in zip(wave["batches"], targets, strict=True):
                        batch["targets"] = batch_targets
                self._rollouts[rollout["id"]] = rollout
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="arcext-checkpoint", daemon=True)
            self._checkpointer.start()

    def _load_machines(self) -> None:
        # the first layout (a folder per shard, a file per machine), read once and moved by the first checkpoint
        for folder in sorted(p for p in self._machines_dir.iterdir() if p.is_dir()):
            for entry in os.scandir(folder):
                path = Path(entry.path)
                if entry.name.endswith(".tmp"):
                    self._legacy_snapshots.append(path)  # a snapshot write that never got its rename
                    continue
                doc = _read_legacy_snapshot(path)
                parsed = parse_resource_id(doc["machine"]["id"]) if doc else None
                if parsed is None:
                    log.warning("Ignoring unreadable machine document %s", path)
                    continue
                self._legacy_snapshots.append(path)
                self._slots[parsed[0].lower] = _Slot(doc)
                self._dirty.add(parsed[0].lower)
        # shard files (written after any first-layout file they share a machine with: they win)
        for entry in sorted(os.scandir(self._machines_dir), key=lambda e: e.name):
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
        replayed = 0
        for record in Journal.replay(self._journal.segments()):
            if "ev" in record:
                self._journal_events.extend(record["ev"])
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
        for key_lower, slot in self._slots.items():
            self._shard_keys.setdefault(_shard_of(key_lower), set()).add(key_lower)
            if slot.doc is not None:
                sub, rg, name = key_lower.split("/")
                self._by_sub.setdefault(sub, []).append(f"{rg}{_SEP}{name}")
        for keys in self._by_sub.values():
            keys.sort()

    def _load_operations(self) -> None:
        for shard in self._ops_dir.iterdir():
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard):
                if entry.name.endswith(".tmp"):
                    os.unlink(entry.path)
                    continue
                op = AtomicJSONStorage(entry.path).read()
                if op:
                    self._ops[op["id"]] = op

    @staticmethod
    def _sort_key(key: MachineKey) -> str:
        return f"{key.resource_group.lower()}{_SEP}{key.name.lower()}"

    # --- machine documents -----------------------------------------------------------------
    def get_machine(self, key: MachineKey) -> MachineDoc | None:
        slot = self._slots.get(key.lower)
        if slot is None:
            return None
        with slot.lock:
            return jcopy(slot.doc) if slot.doc is not None else None

    def view_machine(self, key: MachineKey, view: Callable[[MachineDoc | None], T]) -> T:
        slot = self._slots.get(key.lower)
        if slot is None:
            return view(None)
        with slot.lock:
            return view(slot.doc)

    def list_machines(
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
            doc = self.get_machine(MachineKey(sub, rg, name))
            if doc is not None:
                docs.append(doc)
        return docs, (page[-1] if more and page else None)

    def mutate_machine(
        self,
        key: MachineKey,
        change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]],
        extension: str | None = None,
        events: list[Record] | None = None,
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
                self._shard_keys.setdefault(_shard_of(key.lower), set()).add(key.lower)
        with slot.lock:
            current = slot.doc
            if extension is not None and current is not None:
                scoped = self._mutate_extension(key, slot, current, extension, change, events)
                self._maybe_checkpoint()
                return scoped
            new, result = change(jcopy(current) if current is not None else None)
            if new is None and current is None:
                if events:
                    self._events.append(events, durable=True)
                return result
            with self._dirty_lock:
                self._dirty.add(key.lower)  # before the append: a checkpoint must not miss this change
            self._journal_with_events({"k": key.lower, "d": new}, events)
            slot.doc = new
            if new is None:
                self._unindex(key)
            elif current is None:
                with self._index_lock:
                    bisect.insort(self._by_sub.setdefault(key.subscription, []), self._sort_key(key))
        self._maybe_checkpoint()
        return result

    def _maybe_checkpoint(self) -> None:
        if self._journal.bytes_written > self.checkpoint_bytes:
            self._wake_checkpoint.set()

    def _mutate_extension(
        self,
        key: MachineKey,
        slot: _Slot,
        current: MachineDoc,
        extension: str,
        change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]],
        events: list[Record] | None,
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
                self._events.append(events, durable=True)
            return result
        with self._dirty_lock:
            self._dirty.add(key.lower)
        self._journal_with_events({"k": key.lower, "x": extension, "r": changed}, events)
        slot.doc = {"machine": current["machine"], "extensions": {**current["extensions"]}}
        if changed is None:
            slot.doc["extensions"].pop(extension, None)
        else:
            slot.doc["extensions"][extension] = changed
        return result

    def _journal_with_events(self, entry: dict[str, Any], events: list[Record] | None) -> None:
        """Journal ``entry`` carrying ``events``, then hand them to the activity log (not fsynced); each
        event is serialized once, for both. Called under the machine's slot lock.

        The log gets them only once the journal holds them: a log written first could reach the disk
        (the lazy flush, another caller's sync) before a crash lost the journal write, leaving an event
        for a change that never happened (a Started with no Running job, so no end event ever), and
        would keep them even when the journal write failed. A checkpoint still sees them: the slot lock
        is held until they are in the log, and a checkpoint takes the lock of every dirty machine (this
        one is, before the journal write) before it syncs the log."""
        if not events:
            self._journal.append(entry)
            return
        lines = [orjson.dumps(e) for e in events]
        entry["ev"] = [orjson.Fragment(line) for line in lines]
        self._journal.append(entry)
        try:
            self._events.append_lines(lines, durable=False, records=events)
        except Exception:  # the change is durable and so are its events (journal): do not report a failure
            log.exception("Could not hand %d activity-log events to the log; start-up restores them", len(lines))

    def _unindex(self, key: MachineKey) -> None:
        with self._index_lock:
            keys = self._by_sub.get(key.subscription, [])
            sk = self._sort_key(key)
            i = bisect.bisect_left(keys, sk)
            if i < len(keys) and keys[i] == sk:
                del keys[i]

    def iter_machines(self) -> Iterator[MachineDoc]:
        with self._index_lock:
            slots = list(self._slots.values())
        for slot in slots:
            with slot.lock:
                doc = jcopy(slot.doc) if slot.doc is not None else None
            if doc is not None:
                yield doc

    def project_machines(self, project: Callable[[MachineDoc], T | None]) -> list[T]:
        with self._index_lock:
            slots = list(self._slots.values())
        out: list[T] = []
        for slot in slots:
            with slot.lock:
                if slot.doc is not None:
                    value = project(slot.doc)
                    if value is not None:
                        out.append(value)
        return out

    # --- checkpoints ---------------------------------------------------------------------------
    # A checkpoint rewrites the shard files that hold changed documents (0.47 s for 10,000 machines), so
    # the fewer, the cheaper; what bounds them is the replay at start (1.7 s measured for 250 MiB of
    # journal). PostgreSQL's defaults are of the same kind: checkpoint_timeout 5 min, max_wal_size 1 GB.
    checkpoint_bytes = 256 * 1024 * 1024  # journal size that triggers a checkpoint
    checkpoint_seconds = 300.0  # and at least this often while anything changed

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
            old_segments = self._journal.rotate()
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
            self._remove_legacy_snapshots()
            self._journal.remove(old_segments)
            self.checkpoints += 1
            self.last_checkpoint_seconds = time.perf_counter() - started
            return len(dirty)

    def _write_shards(self, dirty: set[str]) -> None:
        """Rewrite the shard files holding ``dirty`` machines and sync them and the event log."""
        for shard in sorted({_shard_of(k) for k in dirty}):
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
        self._events.sync()  # and so is every event that travelled in it

    def _remove_legacy_snapshots(self) -> None:
        """First-layout files are gone once a checkpoint has written their machines into shards."""
        if not self._legacy_snapshots:
            return
        folders = {p.parent for p in self._legacy_snapshots}
        for path in self._legacy_snapshots:
            path.unlink(missing_ok=True)
        for folder in folders:
            with contextlib.suppress(OSError):
                folder.rmdir()
        fsync_dir(self._machines_dir)
        self._legacy_snapshots = []

    def count_machines(self) -> int:
        with self._index_lock:
            return sum(len(keys) for keys in self._by_sub.values())

    # --- operations -----------------------------------------------------------------------
    def _op_path(self, op_id: str) -> Path:
        return self._ops_dir / op_id[:2] / f"{op_id}.json"

    def put_operation(self, op: Record) -> None:
        path = self._op_path(op["id"])
        with self._ops_lock:
            if not path.parent.exists():
                path.parent.mkdir()
                fsync_dir(self._ops_dir)
            atomic_write_bytes(path, orjson.dumps(op))
            self._ops[op["id"]] = jcopy(op)

    def get_operation(self, op_id: str) -> Record | None:
        op = self._ops.get(op_id)
        return jcopy(op) if op is not None else None

    def list_operations(self, status: str | None = None) -> list[Record]:
        with self._ops_lock:
            ops = list(self._ops.values())
        return [jcopy(o) for o in ops if status is None or o.get("status") == status]

    def delete_operations_before(self, iso_time: str) -> int:
        with self._ops_lock:
            old = [
                o["id"]
                for o in self._ops.values()
                if o.get("endTime") and o["endTime"] < iso_time and o.get("status") != "InProgress"
            ]
            for op_id in old:
                AtomicJSONStorage(self._op_path(op_id)).remove()
                del self._ops[op_id]
        return len(old)

    # --- tokens ---------------------------------------------------------------------------
    def put_token(self, token: Record) -> None:
        with self._meta_lock:
            self._tokens.table("tokens").upsert(token, Query().id == token["id"])
            _flush(self._tokens)
            self._tokens_mtime = self._tokens_file_mtime()
            self._token_by_hash[token["hash"]] = dict(token)

    def get_token_by_hash(self, token_hash: str) -> Record | None:
        if self._tokens_file_mtime() != self._tokens_mtime:
            # `arcext token create|revoke` in another process changed the file (one stat per request).
            with self._meta_lock:
                self._tokens = _open_db(self.data_dir / "tokens.json")
                self._tokens_mtime = self._tokens_file_mtime()
                self._token_by_hash = {t["hash"]: dict(t) for t in self._tokens.table("tokens").all()}
        token = self._token_by_hash.get(token_hash)
        return dict(token) if token is not None else None

    def _tokens_file_mtime(self) -> tuple[int, int, int]:
        """The tokens file's identity: every atomic write makes a new inode (mtime alone is too coarse)."""
        try:
            st = (self.data_dir / "tokens.json").stat()
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def list_tokens(self) -> list[Record]:
        with self._meta_lock:
            return [dict(t) for t in self._tokens.table("tokens").all()]

    def delete_token(self, token_id: str) -> bool:
        with self._meta_lock:
            removed = self._tokens.table("tokens").remove(Query().id == token_id)
            if not removed:
                return False
            _flush(self._tokens)
            self._tokens_mtime = self._tokens_file_mtime()
            self._token_by_hash = {h: t for h, t in self._token_by_hash.items() if t["id"] != token_id}
            return True

    # --- catalog --------------------------------------------------------------------------
    @staticmethod
    def _type_key(publisher: str, type_: str) -> str:
        return f"{publisher.lower()}{_SEP}{type_.lower()}"

    def put_extension_type(self, record: Record) -> None:
        key = self._type_key(record["publisher"], record["type"])
        with self._meta_lock:
            self._catalog.table("types").upsert({**record, "key": key}, Query().key == key)
            _flush(self._catalog)
            self._types_by_key[key] = jcopy({**record, "key": key})

    def get_extension_type(self, publisher: str, type_: str) -> Record | None:
        key = self._type_key(publisher, type_)
        with self._meta_lock:
            found = self._types_by_key.get(key)
            return _strip_key(jcopy(found) if found is not None else None)

    def list_extension_types(self) -> list[Record]:
        with self._meta_lock:
            return [r for r in (_strip_key(d) for d in self._catalog.table("types").all()) if r]

    def put_extension_version(self, record: Record) -> None:
        tkey = self._type_key(record["publisher"], record["type"])
        key = f"{tkey}{_SEP}{record['version'].lower()}"
        with self._meta_lock:
            self._catalog.table("versions").upsert({**record, "key": key, "typeKey": tkey}, Query().key == key)
            _flush(self._catalog)

    def list_extension_versions(self, publisher: str, type_: str) -> list[Record]:
        tkey = self._type_key(publisher, type_)
        with self._meta_lock:
            found = self._catalog.table("versions").search(Query().typeKey == tkey)
        return [r for r in (_strip_key(d) for d in found) if r]

    # --- maintenance ------------------------------------------------------------------------
    def put_maintenance(self, table: str, key: str, record: Record) -> None:
        """Upsert by a (lower-case) key; durable on return (an atomic replace of maintenance.json)."""
        with self._meta_lock:
            self._maintenance.table(table).upsert({**record, "key": key}, Query().key == key)
            _flush(self._maintenance)

    def delete_maintenance(self, table: str, key: str) -> bool:
        with self._meta_lock:
            removed = self._maintenance.table(table).remove(Query().key == key)
            _flush(self._maintenance)
            return bool(removed)

    def list_maintenance(self, table: str) -> list[Record]:
        with self._meta_lock:
            return [dict(d) for d in self._maintenance.table(table).all()]

    # --- rollouts ---------------------------------------------------------------------------
    def _rollout_path(self, rollout_id: str) -> Path:
        return self._rollouts_dir / f"{rollout_id}.json"

    def put_rollout(self, rollout: Record) -> None:
        """A rollout is stored as its plan (the waves' targets: large, written once) and its state
        (small, rewritten on every change). The store keeps a reference, not a copy: its writer
        (the engine) owns the record."""
        with self._rollouts_lock:
            plan_path = self._rollouts_dir / f"{rollout['id']}.plan"
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
            atomic_write_bytes(self._rollout_path(rollout["id"]), orjson.dumps(state))
            self._rollouts[rollout["id"]] = rollout
        if self.rollout_listener is not None:
            try:
                self.rollout_listener(rollout)
            except Exception:  # observers never fail a write
                log.exception("A rollout listener failed")

    def get_rollout(self, rollout_id: str) -> Record | None:
        with self._rollouts_lock:
            rollout = self._rollouts.get(rollout_id)
            return jcopy(rollout) if rollout is not None else None

    def list_rollouts(self) -> list[Record]:
        with self._rollouts_lock:
            return [jcopy(r) for r in self._rollouts.values()]

    # --- activity log -----------------------------------------------------------------------
    def set_event_listener(self, listener: Callable[[list[Record]], None] | None) -> None:
        """Call ``listener`` with the events of every append, once the log holds them."""
        self._events.listener = listener

    def set_write_observer(self, observer: Callable[[float], None] | None) -> None:
        """Call ``observer`` with the seconds every durable journal append took."""
        if not self._tokens_only:
            self._journal.observer = observer

    def journal_figures(self) -> dict[str, float]:
        """The journal's size since the last checkpoint, its segments, and the checkpoints so far."""
        if self._tokens_only:
            return {}
        return {
            "journal_bytes": float(self._journal.bytes_written),
            "journal_segments": float(len(self._journal.segments())),
            "checkpoints": float(self.checkpoints),
            "last_checkpoint_seconds": self.last_checkpoint_seconds,
            "dirty_documents": float(len(self._dirty)),
        }

    def append_events(self, events: list[Record]) -> None:
        self._events.append(events, durable=True)

    def iter_events(self, start_day: str, end_day: str, where: tuple[str, str] | None = None) -> Iterator[Record]:
        if where is None:
            return self._events.between(start_day, end_day)
        name, value = where
        found = self._events.between(start_day, end_day, contains=field_fragment(name, value))
        return (e for e in found if e.get(name) == value)  # the fragment could also sit deeper in an event

    def prune_events_before(self, day: str) -> int:
        return self._events.prune_before(day)

    # --- housekeeping -----------------------------------------------------------------------
    def clear(self, keep_tokens: bool = True) -> None:
        with self._checkpoint_lock, self._index_lock, self._ops_lock, self._meta_lock:
            self._journal.remove(self._journal.rotate())
            with self._dirty_lock:
                self._dirty.clear()
            for sub in (self._machines_dir, self._ops_dir):
                shutil.rmtree(sub, ignore_errors=True)
                sub.mkdir()
            self._shard_keys.clear()
            self._legacy_snapshots = []
            fsync_dir(self.data_dir)
            self._slots.clear()
            self._by_sub.clear()
            self._ops.clear()
            self._catalog.drop_tables()
            _flush(self._catalog)
            self._maintenance.drop_tables()
            _flush(self._maintenance)
            self._types_by_key.clear()
            with self._rollouts_lock:
                shutil.rmtree(self._rollouts_dir, ignore_errors=True)
                self._rollouts_dir.mkdir()
                self._rollouts.clear()
            self._events.clear()
            if not keep_tokens:
                self._tokens.drop_tables()
                _flush(self._tokens)
                self._token_by_hash.clear()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._stop.set()
            self._wake_checkpoint.set()
            self._checkpointer.join(timeout=30)
            self._checkpointer = None
            self.checkpoint()  # a clean stop leaves nothing to replay
            self._journal.close()
        self._events.close()
        with self._meta_lock:
            self._tokens.close()
            self._catalog.close()
            self._maintenance.close()


def _strip_key(doc: dict[str, Any] | None) -> Record | None:
    if doc is None:
        return None
    out = dict(doc)
    out.pop("key", None)
    out.pop("typeKey", None)
    return out
