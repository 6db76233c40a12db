"""Extension packages in the database several nodes share (``arcext serve --database``).

A package attached through one node is the package of every node: a job another node claims installs it from
there. The records are rows of ``packages`` and the zips, content-addressed, chunks of ``package_chunks``
(schema migration 5), written in one transaction with the record. The host drivers read a package from a file,
so a node keeps a copy of each zip it used under ``<data-dir>/packages/blobs/<sha256>.zip``: fetched from the
database the first time, checked against its SHA-256, written atomically. A copy is only ever of the content its
name says, so a copy left behind by a package detached through another node is never wrong, only unused.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from psycopg.types.json import Jsonb

from .. import errors
from ..clock import iso
from ..store.postgres.db import Database
from .packages import MAX_PACKAGE_BYTES, PackageRef, PackageStore, read_manifest

#: bytes of a zip per row of ``package_chunks``
CHUNK_BYTES: Final = 1024 * 1024
#: the class of the advisory locks (two-key) that serialise the writes of one zip: its upload with the deletion of its
#: last user (else a delete could drop the chunks an upload of the same zip had found there and kept)
ZIP_LOCK_CLASS: Final = 0x61706B67  # "apkg"
#: chunks read at once when a node fetches its copy of a zip
FETCH_CHUNKS: Final = 8


class DatabasePackageStore(PackageStore):
    def __init__(self, db: Database, root: Path) -> None:
        super().__init__(root)
        self.db = db

    def put(self, publisher: str, type_: str, version: str, data: bytes, now: datetime) -> dict[str, Any]:
        if len(data) > MAX_PACKAGE_BYTES:
            raise errors.request_too_large(MAX_PACKAGE_BYTES)
        manifest = read_manifest(data)
        sha = hashlib.sha256(data).hexdigest()
        key = self._key(publisher, type_, version)
        record = {
            "publisher": publisher,
            "type": type_,
            "version": version,
            "sha256": sha,
            "size": len(data),
            "handlerManifest": manifest,
            "uploadedAt": iso(now),
        }
        with self.db.transaction() as conn:
            # the key's row locked first: two uploads of one version take turns (the last one's zip stays)
            row = conn.execute("SELECT sha256 FROM packages WHERE key = %s FOR UPDATE", (key,)).fetchone()
            replaced = str(row[0]) if row else None
            for zip_sha in sorted({sha, replaced or sha}):  # in one order: two uploads never wait in a circle
                self._lock_zip(conn, zip_sha)
            for n, start in enumerate(range(0, len(data), CHUNK_BYTES)):
                conn.execute(
                    "INSERT INTO package_chunks (sha256, n, data) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (sha, n, data[start : start + CHUNK_BYTES]),
                )
            conn.execute(
                "INSERT INTO packages (key, sha256, record) VALUES (%s, %s, %s)"
                " ON CONFLICT (key) DO UPDATE SET sha256 = excluded.sha256, record = excluded.record",
                (key, sha, Jsonb(record)),
            )
            if replaced is not None and replaced != sha:
                self._drop_unused(conn, replaced)
        self._keep_copy(sha, data)
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
            return None
        return PackageRef(publisher, type_, version, sha, size, path, record["handlerManifest"])

    def delete(self, publisher: str, type_: str, version: str) -> bool:
        with self.db.transaction() as conn:
            row = conn.execute(
                "DELETE FROM packages WHERE key = %s RETURNING sha256", (self._key(publisher, type_, version),)
            ).fetchone()
            if row is None:
                return False
            gone = self._drop_unused(conn, str(row[0]))
        if gone:
            (self.blobs / f"{row[0]}.zip").unlink(missing_ok=True)
        return True

    @staticmethod
    def _drop_unused(conn: Any, sha: str) -> bool:
        """Delete the zip ``sha`` names when no package uses it any more (in the caller's transaction)."""
        DatabasePackageStore._lock_zip(conn, sha)
        used = conn.execute("SELECT 1 FROM packages WHERE sha256 = %s LIMIT 1", (sha,)).fetchone()
        if used:
            return False
        conn.execute("DELETE FROM package_chunks WHERE sha256 = %s", (sha,))
        return True

    @staticmethod
    def _lock_zip(conn: Any, sha: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (ZIP_LOCK_CLASS, sha))

    def _fetch(self, sha: str, size: int, path: Path) -> bool:
        """This node's copy of the zip ``sha`` names, from the database (False: it is not there any more)."""
        with self._lock:
            if path.exists():  # another thread fetched it meanwhile
                return True
            digest = hashlib.sha256()
            written = 0
            self.blobs.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as fh:
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
        with self._lock:
            if path.exists():
                return
            self.blobs.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
