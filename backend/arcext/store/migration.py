"""The first on-disk layout of machines, read once at start and removed by the first checkpoint.

The first layout kept one TinyDB file per machine (``machines/<xx>/<sha1>.json``, tables ``machine``
and ``extensions``). The current one keeps machines in shard files (``machines/<xx>.json``, see
store/machines.py). A store opened on an old directory loads these files, marks their machines
changed (so the first checkpoint writes them into shards), and removes them once it has.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from tinydb import TinyDB

from ..ids import parse_resource_id
from .atomic_storage import AtomicJSONStorage, fsync_dir
from .base import MachineDoc

log = logging.getLogger(__name__)


def read_legacy_snapshot(path: Path) -> MachineDoc | None:
    """One machine's first-layout file as a machine document (None when it holds no machine)."""
    db = TinyDB(path, storage=AtomicJSONStorage)
    try:
        machine = db.table("machine").get(doc_id=1)
        if machine is None:
            return None
        extensions = {d["key"]: d["record"] for d in db.table("extensions").all()}
        return {"machine": dict(machine), "extensions": extensions}
    finally:
        db.close()


def load_legacy_layout(machines_dir: Path) -> tuple[dict[str, MachineDoc], list[Path]]:
    """The first layout's machines by lower-case key, and every file to remove once they are in shards
    (including snapshot writes that never got their rename)."""
    docs: dict[str, MachineDoc] = {}
    files: list[Path] = []
    for folder in sorted(p for p in machines_dir.iterdir() if p.is_dir()):
        for entry in os.scandir(folder):
            path = Path(entry.path)
            if entry.name.endswith(".tmp"):
                files.append(path)
                continue
            doc = read_legacy_snapshot(path)
            parsed = parse_resource_id(doc["machine"]["id"]) if doc else None
            if doc is None or parsed is None:
                log.warning("Ignoring unreadable machine document %s", path)
                continue
            files.append(path)
            docs[parsed[0].lower] = doc
    return docs, files


def remove_legacy_files(machines_dir: Path, files: list[Path]) -> None:
    """Remove first-layout files (and their emptied folders) and sync the machines directory."""
    if not files:
        return
    for path in files:
        path.unlink(missing_ok=True)
    for folder in {p.parent for p in files}:
        with contextlib.suppress(OSError):
            folder.rmdir()
    fsync_dir(machines_dir)
