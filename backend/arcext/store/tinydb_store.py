"""The embedded store: many small TinyDB files plus in-memory indexes built at start.

Naive single-file TinyDB rewrites the whole database on every write (about 1 s at 50,000
documents). Here each machine document is its own TinyDB file (tables ``machine`` and
``extensions``) kept in memory by TinyDB's CachingMiddleware; a change rewrites only that
machine's file, atomically and with fsync, so an acknowledged write survives kill -9. Operations
are one JSON file each; tokens and the catalog are small TinyDB files of their own.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tinydb import Query, TinyDB
from tinydb.middlewares import CachingMiddleware

from ..ids import MachineKey, parse_resource_id
from .atomic_storage import AtomicJSONStorage, atomic_write_bytes, fsync_dir
from .base import MachineDoc, Record, jcopy
from .eventlog import EventLog

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


class _MachineFile:
    """One machine document on disk and in memory."""

    __slots__ = ("db", "lock", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = _open_db(path)
        self.lock = threading.Lock()

    def read(self) -> MachineDoc | None:
        machine = self.db.table("machine").get(doc_id=1)
        if machine is None:
            return None
        extensions = {d["key"]: d["record"] for d in self.db.table("extensions").all()}
        return {"machine": dict(machine), "extensions": extensions}

    def write(self, doc: MachineDoc) -> None:
        self.db.drop_tables()
        self.db.table("machine").insert(doc["machine"])
        ext = self.db.table("extensions")
        ext.insert_multiple({"key": k, "record": v} for k, v in doc["extensions"].items())
        try:
            _flush(self.db)
        except BaseException:
            self.reload()
            raise

    def reload(self) -> None:
        self.db = _open_db(self.path)

    def remove(self) -> None:
        cache: Any = self.db.storage
        cache.storage.remove()


class TinyDBStore:
    """Store implementation on TinyDB files under one data directory."""

    def __init__(self, data_dir: Path, *, tokens_only: bool = False) -> None:
        """Open (or create) the store; ``tokens_only`` skips loading machines (for CLI token commands)."""
        self.data_dir = Path(data_dir)
        self._tokens_only = tokens_only
        self._machines_dir = self.data_dir / "machines"
        self._ops_dir = self.data_dir / "operations"
        self._index_lock = threading.RLock()
        self._files: dict[str, _MachineFile] = {}
        # subscription -> sorted ["<rg lower>\0<name lower>"]
        self._by_sub: dict[str, list[str]] = {}
        self._ops: dict[str, Record] = {}
        self._ops_lock = threading.Lock()
        self._meta_lock = threading.RLock()
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
        self._tokens_mtime = self._tokens_file_mtime()
        self._token_by_hash = {t["hash"]: dict(t) for t in self._tokens.table("tokens").all()}
        if not self._tokens_only:
            # Loading allocates millions of long-lived objects; the cyclic GC would rescan them while they
            # pile up (two thirds of start-up at 25k machines) and pause ~0.8 s on every later full
            # collection. Nothing loaded forms cycles; freezing only exempts it from the cyclic GC.
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                self._load_machines()
                self._load_operations()
            finally:
                if gc_was_enabled:
                    gc.enable()
                gc.freeze()
            for path in self._rollouts_dir.glob("*.json"):
                rollout = AtomicJSONStorage(path).read()
                if rollout:
                    self._rollouts[rollout["id"]] = rollout

    def _load_machines(self) -> None:
        for shard in sorted(self._machines_dir.iterdir()):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard):
                path = Path(entry.path)
                if entry.name.endswith(".tmp"):
                    os.unlink(path)  # a write that never got its rename: it was never acknowledged
                    continue
                mf = _MachineFile(path)
                doc = mf.read()
                parsed = parse_resource_id(doc["machine"]["id"]) if doc else None
                if parsed is None:
                    log.warning("Ignoring unreadable machine document %s", path)
                    continue
                key = parsed[0]
                self._files[key.lower] = mf
                self._by_sub.setdefault(key.subscription, []).append(self._sort_key(key))
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

    def _machine_path(self, key: MachineKey) -> Path:
        digest = hashlib.sha1(key.lower.encode()).hexdigest()
        return self._machines_dir / digest[:2] / f"{digest}.json"

    # --- machine documents -----------------------------------------------------------------
    def get_machine(self, key: MachineKey) -> MachineDoc | None:
        mf = self._files.get(key.lower)
        if mf is None:
            return None
        with mf.lock:
            doc = mf.read()
        return jcopy(doc) if doc is not None else None

    def view_machine(self, key: MachineKey, view: Callable[[MachineDoc | None], T]) -> T:
        mf = self._files.get(key.lower)
        if mf is None:
            return view(None)
        with mf.lock:
            return view(mf.read())

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

    def mutate_machine(self, key: MachineKey, change: Callable[[MachineDoc | None], tuple[MachineDoc | None, T]]) -> T:
        with self._index_lock:
            mf = self._files.get(key.lower)
            if mf is None:
                # An entry, once made, stays for the life of the process (empty after a delete),
                # so two writers of one key always share one lock.
                path = self._machine_path(key)
                path.parent.mkdir(exist_ok=True)
                mf = _MachineFile(path)
                self._files[key.lower] = mf
        with mf.lock:
            current = mf.read()
            new, result = change(jcopy(current) if current is not None else None)
            if new is None:
                if current is not None:
                    mf.remove()
                    mf.reload()
                    self._unindex(key)
                return result
            mf.write(jcopy(new))
            if current is None:
                with self._index_lock:
                    bisect.insort(self._by_sub.setdefault(key.subscription, []), self._sort_key(key))
            return result

    def _unindex(self, key: MachineKey) -> None:
        with self._index_lock:
            keys = self._by_sub.get(key.subscription, [])
            sk = self._sort_key(key)
            i = bisect.bisect_left(keys, sk)
            if i < len(keys) and keys[i] == sk:
                del keys[i]

    def iter_machines(self) -> Iterator[MachineDoc]:
        with self._index_lock:
            files = list(self._files.values())
        for mf in files:
            with mf.lock:
                doc = mf.read()
            if doc is not None:
                yield jcopy(doc)

    def project_machines(self, project: Callable[[MachineDoc], T | None]) -> list[T]:
        with self._index_lock:
            files = list(self._files.values())
        out: list[T] = []
        for mf in files:
            with mf.lock:
                doc = mf.read()
                if doc is not None:
                    value = project(doc)
                    if value is not None:
                        out.append(value)
        return out

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
            atomic_write_bytes(path, json.dumps(op, separators=(",", ":")).encode())
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

    def get_extension_type(self, publisher: str, type_: str) -> Record | None:
        key = self._type_key(publisher, type_)
        with self._meta_lock:
            found = self._catalog.table("types").get(Query().key == key)
        return _strip_key(found)

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

    # --- rollouts ---------------------------------------------------------------------------
    def _rollout_path(self, rollout_id: str) -> Path:
        return self._rollouts_dir / f"{rollout_id}.json"

    def put_rollout(self, rollout: Record) -> None:
        with self._rollouts_lock:
            atomic_write_bytes(self._rollout_path(rollout["id"]), json.dumps(rollout, separators=(",", ":")).encode())
            self._rollouts[rollout["id"]] = jcopy(rollout)

    def get_rollout(self, rollout_id: str) -> Record | None:
        with self._rollouts_lock:
            rollout = self._rollouts.get(rollout_id)
            return jcopy(rollout) if rollout is not None else None

    def list_rollouts(self) -> list[Record]:
        with self._rollouts_lock:
            return [jcopy(r) for r in self._rollouts.values()]

    # --- activity log -----------------------------------------------------------------------
    def append_events(self, events: list[Record]) -> None:
        self._events.append(events)

    def iter_events(self, start_day: str, end_day: str) -> Iterator[Record]:
        return self._events.between(start_day, end_day)

    def prune_events_before(self, day: str) -> int:
        return self._events.prune_before(day)

    # --- housekeeping -----------------------------------------------------------------------
    def clear(self, keep_tokens: bool = True) -> None:
        with self._index_lock, self._ops_lock, self._meta_lock:
            for sub in (self._machines_dir, self._ops_dir):
                shutil.rmtree(sub, ignore_errors=True)
                sub.mkdir()
            fsync_dir(self.data_dir)
            self._files.clear()
            self._by_sub.clear()
            self._ops.clear()
            self._catalog.drop_tables()
            _flush(self._catalog)
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
        with self._meta_lock:
            self._tokens.close()
            self._catalog.close()


def _strip_key(doc: dict[str, Any] | None) -> Record | None:
    if doc is None:
        return None
    out = dict(doc)
    out.pop("key", None)
    out.pop("typeKey", None)
    return out
