"""Dropping a scratch database while a superuser's session is in it (an autovacuum worker, for one).

``DROP DATABASE ... WITH (FORCE)`` may not end a superuser's session for a role that is not one: the drop
failed with InsufficientPrivilege when autovacuum happened to be working in the database (seen at the end of
a benchmark). A psql session of the ``postgres`` superuser stands in for the autovacuum worker here.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import psycopg
import pytest

from arcext.store.postgres import provision
from pgdb import skip_reason


def _superuser_psql() -> list[str] | None:
    if shutil.which("sudo") is None or shutil.which("psql") is None:
        return None
    probe = subprocess.run(["sudo", "-n", "-u", "postgres", "psql", "-Atc", "SELECT 1"], capture_output=True)
    return ["sudo", "-n", "-u", "postgres", "psql"] if probe.returncode == 0 else None


def _exists(name: str) -> bool:
    with psycopg.connect(provision.admin_url(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return bool(row and row[0])


def test_drop_waits_out_a_superusers_session_it_may_not_end() -> None:
    if skip_reason():
        pytest.skip(skip_reason() or "")
    psql = _superuser_psql()
    if psql is None:
        pytest.skip(
            "no local psql as the postgres superuser (sudo -u postgres): the superuser's session cannot be made"
        )
    url = provision.create("arcext_dropped")
    name = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    session = subprocess.Popen([*psql, "-d", name, "-Atc", "SELECT pg_sleep(1.5)"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        with psycopg.connect(provision.admin_url(), autocommit=True) as conn:
            while time.monotonic() < deadline:  # the superuser's session is in the database
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename = 'postgres'", (name,)
                ).fetchone()
                if row and row[0]:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the superuser's session never showed in pg_stat_activity")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # what FORCE alone meets
                conn.execute(psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(name)))
        provision.drop(url)  # waits until the session ends, then drops
        assert not _exists(name)
    finally:
        session.wait(timeout=30)
        provision.drop(url)
