"""Server-issued bearer tokens: 401 without a valid one, 403 outside its role or scope."""

from __future__ import annotations

import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, put_machine, rg_url
from test_bad_input import assert_arm_error

OTHER_SUB = "11111111-1111-1111-1111-111111111111"


def _get(server: ArcextServer, url: str, token: str | None, method: str = "GET", **kw: object) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with requests.Session() as s:
        s.trust_env = False
        return s.request(method, url, params={"api-version": API}, headers=headers, **kw)  # type: ignore[arg-type]


def test_no_token_bad_token_and_wrong_scheme_get_401(seeded: ArcextServer) -> None:
    url = ext_url(seeded)
    assert_arm_error(_get(seeded, url, None), 401, "AuthenticationFailed")
    assert_arm_error(_get(seeded, url, "arcext_not-a-real-token"), 401, "AuthenticationFailed")
    with requests.Session() as s:
        s.trust_env = False
        r = s.get(url, params={"api-version": API}, headers={"Authorization": f"Basic {seeded.token}"})
    error = assert_arm_error(r, 401, "AuthenticationFailed")
    assert "Bearer" in error["message"]
    assert "Bearer" in r.headers["WWW-Authenticate"]


def test_reader_reads_but_cannot_write(seeded: ArcextServer) -> None:
    reader = seeded.create_token("Reader", f"/subscriptions/{SUB}", name="auditor")
    assert _get(seeded, ext_url(seeded), reader).status_code == 200
    r = _get(seeded, ext_url(seeded), reader, "PATCH", json={"properties": {"enableAutomaticUpgrade": False}})
    error = assert_arm_error(r, 403, "AuthorizationFailed")
    assert "auditor" in error["message"] and "extensions/write" in error["message"]
    r = _get(seeded, machine_url(seeded, "m9"), reader, "PUT", json={"location": "eastus"})
    assert_arm_error(r, 403, "AuthorizationFailed")
    assert _get(seeded, machine_url(seeded, "m9"), seeded.token).status_code == 404  # nothing was written
    assert _get(seeded, ext_url(seeded), reader).json()["properties"]["enableAutomaticUpgrade"] is True


def test_resource_group_scope(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    put_machine(arcext_session, seeded, "m2", rg="rg2")
    scoped = seeded.create_token("Contributor", f"/subscriptions/{SUB}/resourceGroups/rg1")
    assert _get(seeded, ext_url(seeded), scoped).status_code == 200
    assert _get(seeded, f"{rg_url(seeded, 'RG1')}/machines", scoped).status_code == 200  # scopes ignore case
    assert_arm_error(_get(seeded, machine_url(seeded, "m2", rg="rg2"), scoped), 403, "AuthorizationFailed")
    r = _get(seeded, machine_url(seeded, "m3", rg="rg2"), scoped, "PUT", json={"location": "eastus"})
    assert_arm_error(r, 403, "AuthorizationFailed")
    all_machines = f"{seeded.url}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/machines"
    assert_arm_error(_get(seeded, all_machines, scoped), 403, "AuthorizationFailed")
    # a token for one subscription sees nothing of another
    sub_token = seeded.create_token("Owner", f"/subscriptions/{SUB}")
    other = f"{seeded.url}/subscriptions/{OTHER_SUB}/providers/Microsoft.HybridCompute/machines"
    assert_arm_error(_get(seeded, other, sub_token), 403, "AuthorizationFailed")


def test_admin_surface_needs_owner(arcext_server: ArcextServer) -> None:
    contributor = arcext_server.create_token("Contributor", "/")
    url = f"{arcext_server.url}/arcext/v1/catalog/Contoso/Agent/versions/1.0.0"
    assert_arm_error(_get(arcext_server, url, contributor, "PUT", json={}), 403, "AuthorizationFailed")
    owner = arcext_server.create_token("Owner", f"/subscriptions/{SUB}")
    assert _get(arcext_server, url, owner, "PUT", json={}).status_code == 201


def test_operation_status_is_scoped(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    r = arcext_session.patch(ext_url(seeded), params={"api-version": API}, json={"properties": {}})
    status_url = r.headers["Azure-AsyncOperation"]
    other_rg = seeded.create_token("Reader", f"/subscriptions/{SUB}/resourceGroups/elsewhere")
    with requests.Session() as s:
        s.trust_env = False
        denied = s.get(status_url, headers={"Authorization": f"Bearer {other_rg}"})
    assert_arm_error(denied, 403, "AuthorizationFailed")


def test_revoked_token_stops_working(seeded: ArcextServer) -> None:
    token = seeded.create_token("Reader", "/", name="soon-revoked")
    assert _get(seeded, ext_url(seeded), token).status_code == 200
    record = next(t for t in seeded.services.tokens.list() if t["name"] == "soon-revoked")
    assert seeded.services.tokens.revoke(record["id"])
    assert_arm_error(_get(seeded, ext_url(seeded), token), 401, "AuthenticationFailed")


@pytest.mark.embedded_store(
    "reads the embedded store's tokens.json (the PostgreSQL store's tokens table: test_store_postgres.py)"
)
def test_tokens_are_stored_hashed(seeded: ArcextServer) -> None:
    token = seeded.create_token("Reader", "/")
    stored = (seeded.data_dir / "tokens.json").read_text()
    assert token not in stored and seeded.token not in stored
    assert all("hash" not in t for t in seeded.services.tokens.list())


def test_a_principal_follows_its_token_record_on_every_request(tmp_path: object) -> None:
    """TokenService makes each record's Principal once, but reads the record every time: a revoked token is refused
    on the next call, and a record whose role or scope changed gives the new Principal."""
    from datetime import UTC, datetime
    from pathlib import Path

    from arcext.auth import Role, TokenService
    from arcext.errors import ArmError
    from arcext.store.tinydb_store import TinyDBStore

    store = TinyDBStore(Path(str(tmp_path)))
    try:
        tokens = TokenService(store)
        token, record = tokens.create(Role.READER, "/", "reader", datetime.now(UTC))
        first = tokens.authenticate(f"Bearer {token}")
        assert first == tokens.authenticate(f"Bearer {token}")
        assert (first.role, first.scope, first.name) == (Role.READER, "/", "reader")
        store.put_token({**record, "role": "Owner", "scope": f"/subscriptions/{SUB}"})
        changed = tokens.authenticate(f"Bearer {token}")
        assert (changed.role, changed.scope) == (Role.OWNER, f"/subscriptions/{SUB}")
        assert tokens.revoke(record["id"])
        with pytest.raises(ArmError) as refused:
            tokens.authenticate(f"Bearer {token}")
        assert refused.value.status == 401
    finally:
        store.close()
