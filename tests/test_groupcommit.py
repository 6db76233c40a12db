"""Group commit (store/groupcommit.py) under concurrency and failures: no waiter is left blocked, a
waited append returns only once its bytes are fsynced, each thread's appends stay in order across
swaps and lazy flushes, and a failed write is never followed by a success that hides it."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from arcext.store import groupcommit
from arcext.store.groupcommit import GroupCommitFile


def _open(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def test_many_threads_mixed_appends_with_concurrent_swaps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: dict[int, int] = {}  # fd -> file size at its last fsync or fdatasync
    synced_lock = threading.Lock()
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def tracked(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            size = os.fstat(fd).st_size
            real(fd)
            with synced_lock:
                synced[fd] = max(synced.get(fd, 0), size)

        return sync

    monkeypatch.setattr(groupcommit.os, "fsync", tracked(real_fsync))
    monkeypatch.setattr(groupcommit.os, "fdatasync", tracked(real_fdatasync))
    paths = [tmp_path / "0.log"]
    fds = {_open(paths[0]): paths[0]}
    writer = GroupCommitFile(next(iter(fds)))
    writer.lazy_seconds = 0.002
    writer.lazy_bytes = 512
    threads_n, appends_n = 16, 150
    problems: list[str] = []
    done = threading.Event()

    def on_disk_synced(line: bytes) -> bool:
        with synced_lock:
            snapshot = dict(synced)
        for fd, path in list(fds.items()):
            if line in path.read_bytes()[: snapshot.get(fd, 0)]:
                return True
        return False

    def worker(t: int) -> None:
        rnd = random.Random(t)
        try:
            for n in range(appends_n):
                line = f"t{t:02d}-{n:04d}\n".encode()
                if rnd.random() < 0.5:
                    writer.append(line, wait=False)
                else:
                    writer.append(line)
                    if not on_disk_synced(line):
                        problems.append(f"{line!r} returned before it was fsynced")
                if rnd.random() < 0.05:
                    writer.sync()
        except BaseException as exc:  # pragma: no cover - reported below
            problems.append(repr(exc))

    def swapper() -> None:
        i = 0
        while not done.is_set():
            i += 1
            path = tmp_path / f"{i}.log"
            fd = _open(path)
            fds[fd] = path
            paths.append(path)
            old = writer.swap(fd)
            with synced_lock:
                size = synced.get(old, 0)
            if size != os.fstat(old).st_size:
                problems.append("swap returned a descriptor with unsynced bytes")
            done.wait(0.003)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    swap_thread = threading.Thread(target=swapper)
    swap_thread.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a waiter was left blocked"
    done.set()
    swap_thread.join(timeout=60)
    assert not swap_thread.is_alive()
    writer.close()
    writer.swap(-1)
    assert not problems, problems[:5]
    lines = b"".join(p.read_bytes() for p in paths).splitlines()
    assert len(lines) == threads_n * appends_n
    assert len(set(lines)) == len(lines)
    for t in range(threads_n):
        mine = [line for line in lines if line.startswith(f"t{t:02d}-".encode())]
        assert mine == sorted(mine), f"thread {t}'s appends were reordered"


def test_a_failed_unwaited_write_fails_the_next_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes nobody waited for that could not be written must not be covered by a later successful sync:
    the store's checkpoint syncs the event log before it drops the journal that carried those events."""
    path = tmp_path / "log"
    writer = GroupCommitFile(_open(path))
    writer.lazy_bytes = 4
    real_write = os.write
    failures = [OSError(28, "No space left on device")]

    def write(fd: int, data: bytes) -> int:
        if failures:
            raise failures.pop()
        return real_write(fd, data)

    monkeypatch.setattr(groupcommit.os, "write", write)
    writer.append(b"lost\n", wait=False)  # past lazy_bytes: written now, and the write fails
    with pytest.raises(OSError):
        writer.sync()
    with pytest.raises(OSError):
        writer.append(b"later\n")  # nothing is acknowledged after a hole in the file
    writer.close()
    with pytest.raises(OSError):
        writer.swap(-1)


def test_a_failed_swap_write_is_reported_to_the_waiters_it_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter whose bytes went into swap's failed write must not be told they are on disk."""
    path = tmp_path / "log"
    writer = GroupCommitFile(_open(path))
    real_write = os.write
    in_swap = threading.Event()
    release = threading.Event()
    calls = {"n": 0}

    def write(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:  # swap's write: let a waiter queue its bytes, then fail
            in_swap.set()
            release.wait(5)
            raise OSError(5, "Input/output error")
        return real_write(fd, data)

    monkeypatch.setattr(groupcommit.os, "write", write)
    writer.append(b"buffered\n", wait=False)
    outcome: list[BaseException | None] = []

    def swap() -> None:
        try:
            writer.swap(_open(tmp_path / "next"))
        except OSError as exc:
            outcome.append(exc)

    swapper = threading.Thread(target=swap)
    swapper.start()
    assert in_swap.wait(5)

    def waited() -> None:
        try:
            writer.append(b"waited\n")
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=waited)
    waiter.start()
    release.set()
    swapper.join(5)
    waiter.join(5)
    assert not waiter.is_alive() and not swapper.is_alive()
    assert b"buffered" not in path.read_bytes()
    assert all(isinstance(o, OSError) for o in outcome), outcome
