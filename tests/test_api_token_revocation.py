"""A revoked token is refused on the very next request: after it was used many times (nothing it left behind keeps
it alive), when another process revokes it (``arcext token revoke``, once the command has returned), and on
another node sharing the PostgreSQL store. Issue #12 made the request path cheaper; authentication still asks the
store on every request (the embedded store: its in-memory table, re-read when the tokens file changed, which it
looks at every 50 ms at most while the command waits that long after its write; PostgreSQL: one indexed query), so
there is no cache that could outlive a revocation."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, ext_url, put_extension, put_machine
from pgdb import fresh_database


def _status(server: ArcextServer, token: str, session: requests.Session) -> int:
    return session.get(
        ext_url(server), params={"api-version": API}, headers={"Authorization": f"Bearer {token}"}
    ).status_code


def _token_id(server: ArcextServer, name: str) -> str:
    return str(next(t for t in server.services.tokens.list() if t["name"] == name)["id"])


@pytest.fixture
def plain() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.trust_env = False
        yield s


def test_revoked_after_heavy_use_is_refused_on_the_next_request(seeded: ArcextServer, plain: requests.Session) -> None:
    token = seeded.create_token("Reader", "/", name="busy-reader")
    for _ in range(30):
        assert _status(seeded, token, plain) == 200
    assert seeded.services.tokens.revoke(_token_id(seeded, "busy-reader"))
    assert _status(seeded, token, plain) == 401
    assert _status(seeded, seeded.token, plain) == 200  # the others still work


def test_revoked_by_another_process_is_refused_on_the_next_request(
    seeded: ArcextServer, plain: requests.Session
) -> None:
    token = seeded.create_token("Reader", "/", name="cli-revoked")
    for _ in range(10):
        assert _status(seeded, token, plain) == 200
    store = ["--database", seeded.database_url] if seeded.database_url else []
    subprocess.run(
        [sys.executable, "-m", "arcext.cli", "token", "revoke", _token_id(seeded, "cli-revoked")]
        + ["--data-dir", str(seeded.data_dir), *store],
        capture_output=True,
        check=True,
    )
    assert _status(seeded, token, plain) == 401


@pytest.mark.slow
def test_revoked_on_one_node_is_refused_by_another_on_its_next_request(plain: requests.Session) -> None:
    """Two servers on one PostgreSQL database (two nodes): a token both have just served, revoked through one,
    is refused by the other on its very next request."""
    url = fresh_database()
    a = ArcextServer(database_url=url).start()
    try:
        b = ArcextServer(database_url=url).start()
        try:
            with a.session() as owner:
                put_machine(owner, a)
                put_extension(owner, a)
            token = a.create_token("Reader", "/", name="two-node-reader")
            for _ in range(10):
                assert _status(a, token, plain) == 200 and _status(b, token, plain) == 200
            assert a.services.tokens.revoke(_token_id(a, "two-node-reader"))
            assert _status(b, token, plain) == 401
            assert _status(a, token, plain) == 401
        finally:
            b.stop()
    finally:
        a.stop()
