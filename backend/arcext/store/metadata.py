"""Tokens, the extension catalog and the maintenance tables: small TinyDB files, rewritten on each change.

Each table set is one file (``tokens.json``, ``catalog.json``, ``maintenance.json``) opened through a
cache that never flushes on its own; every write flushes it once, as an atomic replace of the file
(store/atomic_storage.py), so a write is durable when it returns. Tokens are also changed by the
``arcext token`` command in another process: the server notices a new tokens file and reads it again. It
looks at the file at most every :data:`TOKENS_RECHECK_SECONDS` (a ``stat`` per request cost about 20 us of CPU
under load: the system call lets go of the GIL, issue #12), and the command's write returns only after that
long, so when ``arcext token revoke`` returns, the revoked token fails on every request a server answers.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.middlewares import CachingMiddleware

from .atomic_storage import AtomicJSONStorage
from .base import Record, jcopy

_SEP = "\x00"

#: How often a server looks for a tokens file written by another process (``arcext token``), at most.
TOKENS_RECHECK_SECONDS = 0.05


class _WriteThroughCache(CachingMiddleware):
    """CachingMiddleware that never flushes on its own: the store flushes once per change."""

    WRITE_CACHE_SIZE = 1 << 30


def _open_db(path: Path) -> TinyDB:
    return TinyDB(path, storage=_WriteThroughCache(AtomicJSONStorage))  # type: ignore[no-untyped-call]


def _flush(db: TinyDB) -> None:
    cache: Any = db.storage
    cache.flush()


def _type_key(publisher: str, type_: str) -> str:
    return f"{publisher.lower()}{_SEP}{type_.lower()}"


def _strip_key(doc: dict[str, Any] | None) -> Record | None:
    if doc is None:
        return None
    out = dict(doc)
    out.pop("key", None)
    out.pop("typeKey", None)
    return out


def _file_identity(path: Path) -> tuple[int, int, int]:
    """A file's identity: every atomic write makes a new inode (mtime alone is too coarse)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class MetadataTables:
    """The tokens, catalog and maintenance TinyDB files of one data directory.

    ``peer_of_server``: opened by a process beside a running server (``arcext token``): each token write then
    waits until any server has looked at the file again (:data:`TOKENS_RECHECK_SECONDS`) before it returns.
    """

    def __init__(self, data_dir: Path, *, peer_of_server: bool = False) -> None:
        self._tokens_path = data_dir / "tokens.json"
        self._peer_of_server = peer_of_server
        self._lock = threading.RLock()
        self._tokens = _open_db(self._tokens_path)
        self._catalog = _open_db(data_dir / "catalog.json")
        self._maintenance = _open_db(data_dir / "maintenance.json")
        # the engine asks for a type on every job: a dict, kept in step with the catalog table
        self._types_by_key: dict[str, Record] = {d["key"]: dict(d) for d in self._catalog.table("types").all()}
        self._load_tokens()

    # --- tokens ---------------------------------------------------------------------------
    def _load_tokens(self) -> None:
        self._tokens_checked = time.monotonic()  # taken before the stat: the file is at least this new
        self._tokens_identity = _file_identity(self._tokens_path)
        self._token_by_hash = {t["hash"]: dict(t) for t in self._tokens.table("tokens").all()}

    def put_token(self, token: Record) -> None:
        with self._lock:
            self._tokens.table("tokens").upsert(token, Query().id == token["id"])
            _flush(self._tokens)
            self._tokens_identity = _file_identity(self._tokens_path)
            self._token_by_hash[token["hash"]] = dict(token)
        self._until_servers_looked()

    def _until_servers_looked(self) -> None:
        if self._peer_of_server:
            time.sleep(TOKENS_RECHECK_SECONDS * 1.2)

    def get_token_by_hash(self, token_hash: str) -> Record | None:
        now = time.monotonic()
        if now - self._tokens_checked >= TOKENS_RECHECK_SECONDS:
            # `arcext token create|revoke` in another process may have changed the file: it waits this long
            # after its write, so a lookup this long after the last one sees any write made before it
            self._tokens_checked = now
            if _file_identity(self._tokens_path) != self._tokens_identity:
                with self._lock:
                    self._tokens = _open_db(self._tokens_path)
                    self._load_tokens()
        token = self._token_by_hash.get(token_hash)
        return dict(token) if token is not None else None

    def list_tokens(self) -> list[Record]:
        with self._lock:
            return [dict(t) for t in self._tokens.table("tokens").all()]

    def delete_token(self, token_id: str) -> bool:
        with self._lock:
            removed = self._tokens.table("tokens").remove(Query().id == token_id)
            if not removed:
                return False
            _flush(self._tokens)
            self._tokens_identity = _file_identity(self._tokens_path)
            self._token_by_hash = {h: t for h, t in self._token_by_hash.items() if t["id"] != token_id}
        self._until_servers_looked()
        return True

    # --- catalog --------------------------------------------------------------------------
    def put_extension_type(self, record: Record) -> None:
        key = _type_key(record["publisher"], record["type"])
        with self._lock:
            self._catalog.table("types").upsert({**record, "key": key}, Query().key == key)
            _flush(self._catalog)
            self._types_by_key[key] = jcopy({**record, "key": key})

    def get_extension_type(self, publisher: str, type_: str) -> Record | None:
        with self._lock:
            found = self._types_by_key.get(_type_key(publisher, type_))
            return _strip_key(jcopy(found) if found is not None else None)

    def list_extension_types(self) -> list[Record]:
        with self._lock:
            return [r for r in (_strip_key(d) for d in self._catalog.table("types").all()) if r]

    def put_extension_version(self, record: Record) -> None:
        tkey = _type_key(record["publisher"], record["type"])
        key = f"{tkey}{_SEP}{record['version'].lower()}"
        with self._lock:
            self._catalog.table("versions").upsert({**record, "key": key, "typeKey": tkey}, Query().key == key)
            _flush(self._catalog)

    def list_extension_versions(self, publisher: str, type_: str) -> list[Record]:
        tkey = _type_key(publisher, type_)
        with self._lock:
            found = self._catalog.table("versions").search(Query().typeKey == tkey)
        return [r for r in (_strip_key(d) for d in found) if r]

    # --- maintenance ------------------------------------------------------------------------
    def put_maintenance(self, table: str, key: str, record: Record) -> None:
        """Upsert by a (lower-case) key; durable on return (an atomic replace of maintenance.json)."""
        with self._lock:
            self._maintenance.table(table).upsert({**record, "key": key}, Query().key == key)
            _flush(self._maintenance)

    def delete_maintenance(self, table: str, key: str) -> bool:
        with self._lock:
            removed = self._maintenance.table(table).remove(Query().key == key)
            _flush(self._maintenance)
            return bool(removed)

    def list_maintenance(self, table: str) -> list[Record]:
        with self._lock:
            return [dict(d) for d in self._maintenance.table(table).all()]

    # --- housekeeping -----------------------------------------------------------------------
    def clear(self, keep_tokens: bool) -> None:
        with self._lock:
            self._catalog.drop_tables()
            _flush(self._catalog)
            self._maintenance.drop_tables()
            _flush(self._maintenance)
            self._types_by_key.clear()
            if not keep_tokens:
                self._tokens.drop_tables()
                _flush(self._tokens)
                self._token_by_hash.clear()

    def close(self) -> None:
        with self._lock:
            self._tokens.close()
            self._catalog.close()
            self._maintenance.close()
