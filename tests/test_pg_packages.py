"""Extension packages on PostgreSQL (arcext.hosts.pg_packages): one node attaches a package, every node has it.

Two package stores on one scratch database, each with a data directory of its own, stand for two nodes; the API
test (a package put through one real `arcext serve --database` node, read through the others) is in
tests/test_multinode.py."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from arcext.errors import ArmError
from arcext.hosts import pg_packages
from arcext.hosts.packages import PackageStore
from arcext.hosts.pg_packages import DatabasePackageStore
from arcext.store.postgres.db import Database
from arcext.store.postgres.store import PostgresStore
from sshd import make_package

NOW = datetime(2026, 12, 5, tzinfo=UTC)


@pytest.fixture
def nodes(pg_url: str, tmp_path: Path) -> tuple[DatabasePackageStore, DatabasePackageStore]:
    PostgresStore(pg_url).close()  # the schema (migration 5: the packages' tables)
    db = Database(pg_url, max_size=4)
    yield DatabasePackageStore(db, tmp_path / "a" / "packages"), DatabasePackageStore(db, tmp_path / "b" / "packages")
    db.close()


def chunks(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM package_chunks").fetchone()
    return int(row[0]) if row else 0


def damage(url: str, sha: str) -> None:
    """The zip's chunks in the database made something else (a damaged or cut-short copy)."""
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE package_chunks SET data = %s WHERE sha256 = %s", (b"not the zip", sha))


def test_a_package_attached_through_one_node_is_read_whole_by_another(
    nodes: tuple[DatabasePackageStore, DatabasePackageStore],
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = nodes
    monkeypatch.setattr(pg_packages, "CHUNK_BYTES", 300)  # a zip of several chunks, read a few at a time
    monkeypatch.setattr(pg_packages, "FETCH_CHUNKS", 3)
    data = make_package("Contoso.Agent", "1.1.0")
    assert len(data) > 3 * 300, "more chunks than one fetch reads"
    record = a.put("Contoso", "Agent", "1.1.0", data, NOW)
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
    assert b.record("contoso", "agent", "1.1.0") == record  # names without case, as on the embedded store
    ref = b.get("Contoso", "Agent", "1.1.0")
    assert ref is not None and ref.path.parent == b.blobs
    assert ref.path.read_bytes() == data and ref.manifest == record["handlerManifest"]
    assert chunks(pg_url) == -(-len(data) // 300)
    assert not list(b.blobs.glob("*.tmp"))


def test_replacing_and_detaching_a_package_reaches_every_node_and_frees_its_zip(
    nodes: tuple[DatabasePackageStore, DatabasePackageStore],
    pg_url: str,
) -> None:
    a, b = nodes
    old, new = make_package("Contoso.Agent", "1.1.0"), make_package("Contoso.Agent", "1.1.0", {"quiet": True})
    a.put("Contoso", "Agent", "1.1.0", old, NOW)
    a.put("Contoso", "Agent", "1.2.0", old, NOW)  # one zip, two versions
    first = b.get("Contoso", "Agent", "1.1.0")
    assert first is not None and first.path.read_bytes() == old
    b.put("Contoso", "Agent", "1.1.0", new, NOW)  # replaced through the other node
    again = a.get("Contoso", "Agent", "1.1.0")
    assert again is not None and again.path.read_bytes() == new
    still = a.get("Contoso", "Agent", "1.2.0")
    assert still is not None and still.path.read_bytes() == old  # its zip is still used: kept
    assert b.delete("Contoso", "Agent", "1.2.0")
    assert a.get("Contoso", "Agent", "1.2.0") is None and a.record("Contoso", "Agent", "1.2.0") is None
    assert not b.delete("Contoso", "Agent", "1.2.0")
    assert chunks(pg_url) == -(-len(new) // pg_packages.CHUNK_BYTES)  # the old zip's chunks went with its last user


def test_a_zip_its_store_lost_is_not_served(
    nodes: tuple[DatabasePackageStore, DatabasePackageStore],
    pg_url: str,
) -> None:
    """A copy is made only of the whole zip its name says: chunks missing or changed give no package at all."""
    a, b = nodes
    data = make_package("Contoso.Agent", "1.1.0")
    record = a.put("Contoso", "Agent", "1.1.0", data, NOW)
    damage(pg_url, record["sha256"])
    assert b.get("Contoso", "Agent", "1.1.0") is None
    assert not (b.blobs / f"{record['sha256']}.zip").exists()
    assert a.get("Contoso", "Agent", "1.1.0") is not None  # the node that was given it kept its own copy


def test_an_upload_waits_for_the_deletion_of_its_zip_s_last_user_and_writes_the_zip_again(
    nodes: tuple[DatabasePackageStore, DatabasePackageStore],
    pg_url: str,
) -> None:
    """The interleaving that would lose a zip: a deletion found no other user of the zip and is about to drop its
    chunks (it holds the zip's lock, as ``delete`` does) while an upload of the same zip finds the chunks there.
    The upload waits for the deletion, then writes the chunks again: the package it attached is whole."""
    a, b = nodes
    data = make_package("Contoso.Agent", "1.1.0")
    sha = hashlib.sha256(data).hexdigest()
    a.put("Contoso", "Agent", "1.0.0", data, NOW)  # the zip's chunks are there
    with psycopg.connect(pg_url) as deleter:
        deleter.execute("DELETE FROM packages WHERE key = 'contoso/agent/1.0.0'")
        deleter.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (pg_packages.ZIP_LOCK_CLASS, sha))
        done = threading.Event()
        upload = threading.Thread(target=lambda: (b.put("Contoso", "Agent", "1.1.0", data, NOW), done.set()))
        upload.start()
        assert not done.wait(0.5), "the upload did not wait for the deletion holding the zip's lock"
        deleter.execute("DELETE FROM package_chunks WHERE sha256 = %s", (sha,))  # no user left, as it saw
        deleter.commit()
        upload.join(10)
    assert done.is_set()
    for store in (a, b):
        (store.blobs / f"{sha}.zip").unlink(missing_ok=True)  # read from the database
        ref = store.get("Contoso", "Agent", "1.1.0")
        assert ref is not None and ref.path.read_bytes() == data


def test_a_bad_package_is_refused_and_changes_nothing(
    nodes: tuple[DatabasePackageStore, DatabasePackageStore],
    pg_url: str,
) -> None:
    a, b = nodes
    with pytest.raises(ArmError) as refused:
        a.put("Contoso", "Agent", "1.1.0", b"PK\x03\x04 not a zip", NOW)
    assert refused.value.status == 400
    assert b.record("Contoso", "Agent", "1.1.0") is None and chunks(pg_url) == 0


def test_an_upload_repairs_a_damaged_zip_and_first_uploads_at_once_leave_no_orphan_chunks(
    nodes: tuple[DatabasePackageStore, DatabasePackageStore],
    pg_url: str,
) -> None:
    a, b = nodes
    data = make_package("Contoso.Agent", "1.1.0")
    record = a.put("Contoso", "Agent", "1.1.0", data, NOW)
    damage(pg_url, record["sha256"])
    assert b.get("Contoso", "Agent", "1.1.0") is None
    a.put("Contoso", "Agent", "1.1.0", data, NOW)  # the same zip again: written whole
    ref = b.get("Contoso", "Agent", "1.1.0")
    assert ref is not None and ref.path.read_bytes() == data
    for round_ in range(5):  # two first uploads of one new version at once, each with a zip of its own
        zips = [make_package("Contoso.Agent", f"{round_}.{n}", {"slow": {"install": n}}) for n in (1, 2)]
        threads = [
            threading.Thread(target=store.put, args=("Contoso", "Agent", f"9.{round_}", z, NOW))
            for store, z in zip((a, b), zips, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with psycopg.connect(pg_url) as conn:
        orphans = conn.execute(
            "SELECT count(DISTINCT sha256) FROM package_chunks c"
            " WHERE NOT EXISTS (SELECT 1 FROM packages p WHERE p.sha256 = c.sha256)"
        ).fetchone()
    assert orphans == (0,)


def test_packages_a_node_attached_before_are_put_in_the_database_once(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Upgrading a cluster whose nodes kept packages in their data directories: each node's are put in the
    database when it first opens it; a version another node put there first stays as it is."""
    PostgresStore(pg_url).close()
    first, second = make_package("Contoso.Agent", "1.0.0"), make_package("Contoso.Agent", "1.0.0", {"quiet": True})
    PackageStore(tmp_path / "a").put("Contoso", "Agent", "1.0.0", first, NOW)
    PackageStore(tmp_path / "a").put("Contoso", "Agent", "2.0.0", first, NOW)
    PackageStore(tmp_path / "b").put("Contoso", "Agent", "1.0.0", second, NOW)
    (tmp_path / "b" / "blobs" / ".stale.tmp").write_bytes(b"left by a process that died")
    os.utime(tmp_path / "b" / "blobs" / ".stale.tmp", (time.time() - 7200,) * 2)
    (tmp_path / "b" / "blobs" / ".fresh.tmp").write_bytes(b"another node writing now")
    db = Database(pg_url, max_size=4)
    try:
        a = DatabasePackageStore(db, tmp_path / "a")
        with caplog.at_level(logging.WARNING, logger="arcext.hosts.pg_packages"):
            b = DatabasePackageStore(db, tmp_path / "b")
        for version in ("1.0.0", "2.0.0"):
            ref = b.get("Contoso", "Agent", version)
            assert ref is not None and ref.path.read_bytes() == first  # a's, put first
        assert any("the database's stays" in r.getMessage() for r in caplog.records)
        assert not (tmp_path / "a" / "index.json").exists() and (tmp_path / "a" / "index.json.imported").exists()
        assert not (tmp_path / "b" / "blobs" / ".stale.tmp").exists()
        assert (tmp_path / "b" / "blobs" / ".fresh.tmp").exists()
        a.delete("Contoso", "Agent", "2.0.0")
        DatabasePackageStore(db, tmp_path / "a")  # opened again: nothing is put in again
        assert b.record("Contoso", "Agent", "2.0.0") is None
    finally:
        db.close()


def test_workers_starting_at_once_put_the_node_s_former_packages_in_once(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every worker of a node opens the package store as it boots: one puts the old packages in, the others find
    the index gone, and none fails to start or complains."""
    PostgresStore(pg_url).close()
    store = DatabasePackageStore._store

    def slow_store(self: DatabasePackageStore, *args: Any, **kwargs: Any) -> bool:
        time.sleep(0.1)  # large zips: the workers' imports overlap
        return store(self, *args, **kwargs)

    monkeypatch.setattr(DatabasePackageStore, "_store", slow_store)
    data = make_package("Contoso.Agent", "1.0.0")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        PackageStore(tmp_path / "packages").put("Contoso", "Agent", version, data, NOW)
    db = Database(pg_url, max_size=8)
    try:
        opened: list[DatabasePackageStore] = []
        failed: list[BaseException] = []

        def open_store() -> None:
            try:
                opened.append(DatabasePackageStore(db, tmp_path / "packages"))
            except BaseException as exc:  # (reported below)
                failed.append(exc)

        workers = [threading.Thread(target=open_store) for _ in range(4)]
        with caplog.at_level(logging.WARNING, logger="arcext.hosts.pg_packages"):
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        assert failed == [] and len(opened) == 4
        assert [r.getMessage() for r in caplog.records] == []  # one import, no "the database's stays", no error
        assert [opened[0].record("Contoso", "Agent", v) is not None for v in ("1.0.0", "1.1.0", "1.2.0")] == [True] * 3
        assert (tmp_path / "packages" / "index.json.imported").exists()
    finally:
        db.close()


def test_attaching_again_repairs_a_zip_damaged_in_place(
    nodes: tuple[DatabasePackageStore, DatabasePackageStore], pg_url: str
) -> None:
    """Bytes changed without changing the length: the upload compares the zip's digest, not only its size."""
    a, b = nodes
    data = make_package("Contoso.Agent", "1.1.0")
    sha = a.put("Contoso", "Agent", "1.1.0", data, NOW)["sha256"]
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "UPDATE package_chunks SET data = overlay(data placing '\\x00'::bytea from 40) WHERE sha256 = %s", (sha,)
        )
    assert b.get("Contoso", "Agent", "1.1.0") is None
    a.put("Contoso", "Agent", "1.1.0", data, NOW)
    ref = b.get("Contoso", "Agent", "1.1.0")
    assert ref is not None and ref.path.read_bytes() == data
