"""Extension packages in the database several nodes share (``arcext serve --database``).

A package attached through one node is the package of every node: a job another node claims installs it from
there. The records are rows of ``packages`` and the zips, content-addressed, chunks of ``package_chunks``
(schema migration 5), written in one transaction with the record. The host drivers read a package from a file,
so a node keeps a copy of each zip it used under ``<data-dir>/packages/blobs/<sha256>.zip``: fetched from the
database the first time, checked against its SHA-256, written through a temporary file of its own and renamed.
A copy is only ever of the content its name says, so a copy left behind by a package detached through another node
is never wrong, only unused; nodes sharing a data directory share the copies too.

Packages a node attached before this store existed (``<data-dir>/packages/index.json``, one node's own) are put in
the database when the node first opens it, unless the database has that version already.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from psycopg.types.json import Jsonb

from ..store.postgres.db import Database
from .packages import PackageRef, PackageStore, new_record

log = logging.getLogger(__name__)

#: bytes of a zip per row of ``package_chunks``
CHUNK_BYTES: Final = 1024 * 1024
#: the classes of the advisory locks (two-key) of one version's record and of one zip: an upload takes its
#: version's and then, in one order, its zip's and the replaced zip's; a detach its version's and its zip's. So two
#: uploads of one version take turns (else the loser's zip stayed, used by nobody), and an upload of a zip waits for
#: the deletion of the zip's last user (else the deletion could drop the chunks the upload had found there)
KEY_LOCK_CLASS: Final = 0x61706B6B  # "apkk"
ZIP_LOCK_CLASS: Final = 0x61706B67  # "apkg"
#: the session lock under which one process at a time puts its node's former packages in the database (the workers
#: of a node, and nodes sharing a data directory, start at once)
IMPORT_LOCK: Final = 0x61706B69  # "apki"
#: chunks read at once when a node fetches its copy of a zip
FETCH_CHUNKS: Final = 8
#: a temporary file in the copies' folder older than this is a leftover of a process that died while writing it
STALE_TEMP_SECONDS: Final = 3600.0


class DatabasePackageStore(PackageStore):
    def __init__(self, db: Database, root: Path) -> None:
        super().__init__(root)
        self.db = db
        self._fetching: dict[str, threading.Lock] = {}  # a lock per zip being fetched (one fetch of it at a time)
        self._sweep_temporary()
        self._import_local_index()

    # --- the Store's operations --------------------------------------------------------------------
    def put(self, publisher: str, type_: str, version: str, data: bytes, now: datetime) -> dict[str, Any]:
        record = new_record(publisher, type_, version, data, now)
        self._store(self._key(publisher, type_, version), record, data, replace=True)
        self._keep_copy(str(record["sha256"]), data)
        return record

    def record(self, publisher: str, type_: str, version: str) -> dict[str, Any] | None:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT record FROM packages WHERE key = %s", (self._key(publisher, type_, version),)
            ).fetchone()
        return dict(row[0]) if row else None

    def get(self, publisher: str, type_: str, version: str) -> PackageRef | None:
        record = self.record(publisher, type_, version)
        if record is None:
            return None
        sha, size = str(record["sha256"]), int(record["size"])
        path = self.blobs / f"{sha}.zip"
        if not path.exists() and not self._fetch(sha, size, path):
            log.error(
                "The zip of package %s/%s %s is not whole in the database (detached meanwhile, or damaged); "
                "attach the package again",
                publisher,
                type_,
                version,
            )
            return None
        return PackageRef(publisher, type_, version, sha, size, path, record["handlerManifest"])

    def delete(self, publisher: str, type_: str, version: str) -> bool:
        key = self._key(publisher, type_, version)
        with self.db.transaction() as conn:
            self._advisory(conn, KEY_LOCK_CLASS, key)
            row = conn.execute("DELETE FROM packages WHERE key = %s RETURNING sha256", (key,)).fetchone()
            if row is None:
                return False
            gone = self._drop_unused(conn, str(row[0]))
        if gone:
            (self.blobs / f"{row[0]}.zip").unlink(missing_ok=True)
        return True

    # --- the database --------------------------------------------------------------------------------
    def _store(self, key: str, record: dict[str, Any], data: bytes, replace: bool) -> bool:
        """Write ``record`` and its zip under ``key`` in one transaction; ``replace`` False: only if the key has none
        yet. Whether it was written."""
        sha = str(record["sha256"])
        with self.db.transaction() as conn:
            self._advisory(conn, KEY_LOCK_CLASS, key)
            row = conn.execute("SELECT sha256 FROM packages WHERE key = %s", (key,)).fetchone()
            if row is not None and not replace:
                return False
            replaced = str(row[0]) if row else None
            for zip_sha in sorted({sha, replaced or sha}):  # in one order: two uploads never wait in a circle
                self._advisory(conn, ZIP_LOCK_CLASS, zip_sha)
            # each chunk's digest, not the whole zip's: a whole 512 MiB zip would be built in the server's memory
            held = [
                bytes(digest)
                for _n, digest in conn.execute(
                    "SELECT n, sha256(data) FROM package_chunks WHERE sha256 = %s ORDER BY n", (sha,)
                ).fetchall()
            ]
            wanted = [
                hashlib.sha256(data[start : start + CHUNK_BYTES]).digest() for start in range(0, len(data), CHUNK_BYTES)
            ]
            if held != wanted:
                # none yet, or not the zip (damaged, cut short): written whole, so attaching it again repairs it
                conn.execute("DELETE FROM package_chunks WHERE sha256 = %s", (sha,))
                for n, start in enumerate(range(0, len(data), CHUNK_BYTES)):
                    conn.execute(
                        "INSERT INTO package_chunks (sha256, n, data) VALUES (%s, %s, %s)",
                        (sha, n, data[start : start + CHUNK_BYTES]),
                    )
            conn.execute(
                "INSERT INTO packages (key, sha256, record) VALUES (%s, %s, %s)"
                " ON CONFLICT (key) DO UPDATE SET sha256 = excluded.sha256, record = excluded.record",
                (key, sha, Jsonb(record)),
            )
            if replaced is not None and replaced != sha:
                self._drop_unused(conn, replaced)
        return True

    @staticmethod
    def _advisory(conn: Any, lock_class: int, name: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (lock_class, name))

    @classmethod
    def _drop_unused(cls, conn: Any, sha: str) -> bool:
        """Delete the zip ``sha`` names when no package uses it any more (in the caller's transaction)."""
        cls._advisory(conn, ZIP_LOCK_CLASS, sha)
        used = conn.execute("SELECT 1 FROM packages WHERE sha256 = %s LIMIT 1", (sha,)).fetchone()
        if used:
            return False
        conn.execute("DELETE FROM package_chunks WHERE sha256 = %s", (sha,))
        return True

    # --- this node's copies ------------------------------------------------------------------------
    def _zip_lock(self, sha: str) -> threading.Lock:
        with self._lock:
            return self._fetching.setdefault(sha, threading.Lock())

    def _fetch(self, sha: str, size: int, path: Path) -> bool:
        """This node's copy of the zip ``sha`` names, from the database (False: it is not there whole)."""
        with self._zip_lock(sha):
            if path.exists():  # another thread fetched it meanwhile
                return True
            digest = hashlib.sha256()
            written = 0
            self.blobs.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.blobs, prefix=f".{sha}.", suffix=".tmp")
            tmp = Path(name)
            try:
                with os.fdopen(fd, "wb") as fh:
                    after = -1
                    while True:  # a few chunks at a time: a large zip is never whole in memory
                        with self.db.connection() as conn:
                            rows = conn.execute(
                                "SELECT n, data FROM package_chunks WHERE sha256 = %s AND n > %s ORDER BY n LIMIT %s",
                                (sha, after, FETCH_CHUNKS),
                            ).fetchall()
                        for n, chunk in rows:
                            piece = bytes(chunk)
                            digest.update(piece)
                            fh.write(piece)
                            written += len(piece)
                            after = int(n)
                        if len(rows) < FETCH_CHUNKS:
                            break
                    fh.flush()
                    os.fsync(fh.fileno())
                if written != size or digest.hexdigest() != sha:
                    return False  # detached meanwhile (its chunks went), or not whole
                os.replace(tmp, path)
                return True
            finally:
                tmp.unlink(missing_ok=True)

    def _keep_copy(self, sha: str, data: bytes) -> None:
        """This node's copy of a zip it was just given (the next job here need not fetch it)."""
        path = self.blobs / f"{sha}.zip"
        with self._zip_lock(sha):
            if path.exists():
                return
            self.blobs.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.blobs, prefix=f".{sha}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(name, path)
            finally:
                Path(name).unlink(missing_ok=True)

    def _sweep_temporary(self) -> None:
        """Remove temporary files a process that died while writing a copy left behind (old ones only: on a shared
        data directory another node may be writing one now)."""
        if not self.blobs.is_dir():
            return
        for leftover in self.blobs.glob(".*.tmp"):
            try:
                if time.time() - leftover.stat().st_mtime > STALE_TEMP_SECONDS:
                    leftover.unlink()
            except OSError:
                pass  # gone meanwhile

    # --- packages attached before the database held them ---------------------------------------------
    def _import_local_index(self) -> None:
        """Put the packages of ``index.json`` (attached to this node before packages lived in the database) in the
        database, those whose zip is here whole and whose version the database has none of yet; then the index is
        renamed ``index.json.imported`` so that it is read once. One process at a time (``IMPORT_LOCK``); an index
        that cannot be read is logged and left (a node starts without it)."""
        if not self.index_path.exists():
            return
        with self.db.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (IMPORT_LOCK,))
            try:
                self._import_index_now()
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.error(
                    "The packages this node kept before (%s) could not be put in the database: %s: %s; "
                    "attach them again",
                    self.index_path,
                    type(exc).__name__,
                    exc,
                )
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (IMPORT_LOCK,))

    def _import_index_now(self) -> None:
        try:
            index = self._index()  # another worker of this node may have put them in and renamed it meanwhile
        except FileNotFoundError:
            return
        imported = kept = 0
        for key, record in sorted(index.items()):
            blob = self.blobs / f"{record['sha256']}.zip"
            try:
                data = blob.read_bytes()
            except OSError:
                log.warning("Package %s: its zip is missing from %s; attach it again", key, self.blobs)
                continue
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                log.warning("Package %s: its zip in %s is not the one recorded; attach it again", key, self.blobs)
                continue
            if self._store(key, record, data, replace=False):
                imported += 1
            else:
                kept += 1
                log.warning(
                    "Package %s was attached on this node before packages lived in the database, and the database "
                    "has that version already (from another node): the database's stays",
                    key,
                )
        try:
            self.index_path.rename(self.index_path.with_name("index.json.imported"))
        except FileNotFoundError:
            return  # (a node sharing this data directory renamed it)
        log.info("Packages of this node put in the database: %d (%d the database had already)", imported, kept)
