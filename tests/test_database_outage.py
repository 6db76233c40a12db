"""The PostgreSQL store's connections cut under a running server (what a database restart or fail-over does to
them): requests that meet a dead connection answer 503 ServiceUnavailable with Retry-After, never a 500, and
change nothing; the pool replaces the dead connections, so the retry that follows succeeds. The unmodified Azure
SDK retries a 503 by itself, so a client using it sees no error at all."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, ext_url, put_extension, put_machine
from pgdb import fresh_database


@pytest.fixture
def pg_server() -> Iterator[ArcextServer]:
    server = ArcextServer(database_url=fresh_database()).start()
    try:
        with server.session() as owner:
            put_machine(owner, server)
            put_extension(owner, server)
        yield server
    finally:
        server.stop()


def cut_every_connection(url: str) -> int:
    """Terminate every other session on the server's database; how many there were."""
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_requests_on_cut_connections_answer_503_and_the_retry_succeeds(pg_server: ArcextServer) -> None:
    assert pg_server.database_url is not None
    headers = {"Authorization": f"Bearer {pg_server.token}"}
    statuses: list[int] = []
    with requests.Session() as plain:
        plain.trust_env = False
        for _ in range(5):
            assert cut_every_connection(pg_server.database_url) > 0
            for _ in range(25):  # a fresh connection comes back within a few requests
                response = plain.get(ext_url(pg_server), params={"api-version": API}, headers=headers, timeout=30)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    break
                assert response.status_code == 503, response.text
                error = response.json()["error"]
                assert error["code"] == "ServiceUnavailable"
                assert "database" in error["message"] and "Retry" in error["message"]
                assert response.headers["Retry-After"] == "1"
            assert statuses[-1] == 200, f"no success after the cut: {statuses}"
    assert 503 in statuses, f"no request met a cut connection: {statuses}"


def test_the_azure_sdk_rides_over_cut_connections(pg_server: ArcextServer) -> None:
    assert pg_server.database_url is not None
    client = pg_server.sdk_client()
    for _ in range(3):
        cut_every_connection(pg_server.database_url)
        extension = client.machine_extensions.get("rg1", "m1", "cse")
        assert extension.name == "cse"
