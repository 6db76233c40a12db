"""Extension packages: zips with a HandlerManifest.json, attached to published versions.

Blobs live under ``<data-dir>/packages/blobs/<sha256>.zip`` (content-addressed, written atomically);
``<data-dir>/packages/index.json`` maps publisher/type/version to the blob and its manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import errors
from ..clock import iso

MAX_PACKAGE_BYTES = 512 * 1024 * 1024
#: Caps on what a package may inflate to (issue #10, finding 4): in total, per entry relative to its compressed
#: size (entries over RATIO_FLOOR bytes; small files may compress further), the manifest, and the entry count.
MAX_UNCOMPRESSED_BYTES = 1024 * 1024 * 1024
MAX_RATIO = 100
RATIO_FLOOR = 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_ENTRIES = 10_000
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class PackageRef:
    publisher: str
    type: str
    version: str
    sha256: str
    size: int
    path: Path
    manifest: dict[str, Any]


def entry_problem(name: str) -> str | None:
    """Why a zip entry name may not be expanded on a host (it would land outside the package folder), or None."""
    if "\0" in name:
        return "holds a NUL character"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "is an absolute path"
    if any(part == ".." for part in re.split(r"[\\/]", name)):
        return "leaves the package folder ('..')"
    return None


def _check_entries(infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_ENTRIES:
        raise errors.invalid_request_content(f"The package has more than {MAX_ENTRIES} entries.")
    total = 0
    for info in infos:
        problem = entry_problem(info.filename)
        if problem:
            raise errors.invalid_request_content(f"The package entry '{info.filename}' {problem}.")
        total += info.file_size
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise errors.invalid_request_content(
                f"The package entry '{info.filename}' inflates {info.file_size // max(info.compress_size, 1)} times "
                f"its compressed size; the compression ratio is capped at {MAX_RATIO}."
            )
    if total > MAX_UNCOMPRESSED_BYTES:
        raise errors.invalid_request_content(
            f"The package inflates to {total} bytes; the cap is {MAX_UNCOMPRESSED_BYTES} bytes uncompressed."
        )


def read_manifest(data: bytes) -> dict[str, Any]:
    """The handlerManifest of a package zip, or an ArmError saying what is wrong with it. Entry names and sizes
    are checked from the zip's directory first; the manifest is read only up to MAX_MANIFEST_BYTES."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            _check_entries(infos)
            names = {i.filename.lower(): i for i in infos}
            if "handlermanifest.json" not in names:
                raise errors.invalid_request_content("The package has no HandlerManifest.json at its root.")
            info = names["handlermanifest.json"]
            if info.file_size > MAX_MANIFEST_BYTES:
                raise errors.invalid_request_content(
                    f"HandlerManifest.json is larger than {MAX_MANIFEST_BYTES} bytes uncompressed."
                )
            with zf.open(info) as fh:
                raw = fh.read(MAX_MANIFEST_BYTES + 1)
            if len(raw) > MAX_MANIFEST_BYTES:
                raise errors.invalid_request_content(
                    f"HandlerManifest.json is larger than {MAX_MANIFEST_BYTES} bytes uncompressed."
                )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error):
        raise errors.invalid_request_content("The package is not a zip file this server can read.") from None
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
        entry = doc[0] if isinstance(doc, list) else doc
        manifest = entry["handlerManifest"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        raise errors.invalid_request_content(
            'HandlerManifest.json must be [{"name", "version", "handlerManifest": {...}}].'
        ) from None
    if not isinstance(manifest, dict) or not manifest.get("enableCommand") or not manifest.get("installCommand"):
        raise errors.invalid_request_content("handlerManifest needs at least installCommand and enableCommand.")
    return manifest


def new_record(publisher: str, type_: str, version: str, data: bytes, now: datetime) -> dict[str, Any]:
    """The record of a package about to be attached, its zip checked first (its size, entries and manifest: an
    ArmError saying what is wrong)."""
    if len(data) > MAX_PACKAGE_BYTES:
        raise errors.request_too_large(MAX_PACKAGE_BYTES)
    manifest = read_manifest(data)
    return {
        "publisher": publisher,
        "type": type_,
        "version": version,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "handlerManifest": manifest,
        "uploadedAt": iso(now),
    }


class PackageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.index_path = root / "index.json"
        self._lock = threading.Lock()

    @staticmethod
    def _key(publisher: str, type_: str, version: str) -> str:
        return f"{publisher}/{type_}/{version}".lower()

    def _index(self) -> dict[str, Any]:
        if not self.index_path.exists():
            return {}
        data: dict[str, Any] = json.loads(self.index_path.read_text())
        return data

    def put(self, publisher: str, type_: str, version: str, data: bytes, now: datetime) -> dict[str, Any]:
        record = new_record(publisher, type_, version, data, now)
        sha = record["sha256"]
        with self._lock:
            self.blobs.mkdir(parents=True, exist_ok=True)
            blob = self.blobs / f"{sha}.zip"
            if not blob.exists():
                tmp = blob.with_suffix(".tmp")
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, blob)
            index = self._index()
            index[self._key(publisher, type_, version)] = record
            tmp_index = self.index_path.with_suffix(".tmp")
            tmp_index.write_text(json.dumps(index, indent=1))
            os.replace(tmp_index, self.index_path)
        return record

    def record(self, publisher: str, type_: str, version: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._index().get(self._key(publisher, type_, version))
        return dict(value) if value else None

    def get(self, publisher: str, type_: str, version: str) -> PackageRef | None:
        record = self.record(publisher, type_, version)
        if record is None:
            return None
        path = self.blobs / f"{record['sha256']}.zip"
        if not path.exists():
            return None
        return PackageRef(publisher, type_, version, record["sha256"], record["size"], path, record["handlerManifest"])

    def delete(self, publisher: str, type_: str, version: str) -> bool:
        with self._lock:
            index = self._index()
            removed = index.pop(self._key(publisher, type_, version), None)
            if removed is None:
                return False
            tmp_index = self.index_path.with_suffix(".tmp")
            tmp_index.write_text(json.dumps(index, indent=1))
            os.replace(tmp_index, self.index_path)
            if not any(r["sha256"] == removed["sha256"] for r in index.values()):
                (self.blobs / f"{removed['sha256']}.zip").unlink(missing_ok=True)
            return True
