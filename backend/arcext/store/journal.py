"""The write-ahead journal of machine documents: durable appends with group commit.

Every change of a machine document is one JSON line, appended and fsynced before the change is
acknowledged. Concurrent writers share fsyncs (one of them writes everything queued so far), so a
fleet of upgrade workers pays one fsync per burst instead of one file rewrite each. A checkpoint
rotates to a new segment, writes the changed documents to their shard files (store/machines.py), syncs, and
drops the old segments; at start, snapshots are loaded and the remaining segments replayed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from .atomic_storage import fsync_dir
from .groupcommit import GroupCommitFile


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        segments = self.segments()
        self._seq = int(segments[-1].stem) + 1 if segments else 1
        self.bytes_written = 0
        self._writer = GroupCommitFile(self._open_segment(), self._count)
        #: called with the seconds every durable append took (arcext.telemetry: store write latency)
        self.observer: Callable[[float], None] | None = None

    def _count(self, payload: bytes) -> None:
        self.bytes_written += len(payload)

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.log"))

    def _open_segment(self) -> int:
        path = self.directory / f"{self._seq:010d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fsync_dir(self.directory)
        return fd

    def append(self, record: dict[str, Any]) -> None:
        """Append one record; returns once it is on disk."""
        observer = self.observer
        if observer is None:
            self._writer.append(orjson.dumps(record) + b"\n")
            return
        started = time.perf_counter()
        self._writer.append(orjson.dumps(record) + b"\n")
        observer(time.perf_counter() - started)

    def rotate(self) -> list[Path]:
        """Start a new segment; returns the older ones (to delete once a checkpoint covers them)."""
        old = self.segments()
        self._seq += 1
        fd = self._open_segment()
        try:
            old_fd = self._writer.swap(fd)
        except BaseException:  # the journal failed a write (see groupcommit): it stays on its segment
            os.close(fd)
            raise
        os.close(old_fd)
        self.bytes_written = 0
        return old

    @staticmethod
    def replay(paths: list[Path]) -> Iterator[dict[str, Any]]:
        """Records of the given segments in order; a torn final line (a crash mid-write) ends a segment."""
        for path in paths:
            with open(path, "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break
                    yield orjson.loads(line)

    def remove(self, paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)
        fsync_dir(self.directory)

    def close(self) -> None:
        self._writer.close()
        os.close(self._writer.swap(-1))
