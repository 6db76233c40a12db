"""Security findings 4-7 of issue #10 over real HTTP: package zip bombs and traversing entry names, portal
sign-out, absolute URLs from the configured public URL (never the Host header), and the smaller leaks."""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import stat
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from arcext.testing import ArcextServer
from arcext.testing.fakehost import make_package
from conftest import API, SUB, ext_url, machine_url, put_extension, put_machine, rg_url, wait_operation
from test_bad_input import assert_arm_error

PUB, TYPE = "Contoso.Sec", "Agent"


def package_url(server: ArcextServer, version: str = "1.0.0") -> str:
    return f"{server.url}/arcext/v1/catalog/{PUB}/{TYPE}/versions/{version}/package"


def upload(s: requests.Session, server: ArcextServer, data: bytes, version: str = "1.0.0") -> requests.Response:
    return s.put(package_url(server, version), data=data, headers={"Content-Type": "application/zip"})


# --- finding 4: package uploads --------------------------------------------------------------------------
def _bomb(inflated: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("HandlerManifest.json", "w") as fh:
        fh.write(b'[{"name": "x", "version": "1.0.0", ')
        fh.write(b'"handlerManifest": {"installCommand": "i", "enableCommand": "e"}}')
        chunk = b" " * (1024 * 1024)
        for _ in range(inflated // len(chunk)):
            fh.write(chunk)
        fh.write(b"]")
    return buf.getvalue()


def test_a_zip_bomb_is_refused_without_being_inflated(
    arcext_server: ArcextServer, arcext_session: requests.Session
) -> None:
    data = _bomb(100 * 1024 * 1024)
    assert len(data) < 200 * 1024
    r = upload(arcext_session, arcext_server, data, "2.0.1")
    error = assert_arm_error(r, 400, "InvalidRequestContent")
    assert "HandlerManifest.json" in error["message"]
    assert arcext_session.get(package_url(arcext_server, "2.0.1")).status_code == 404


def test_packages_are_capped_in_total_uncompressed_size_and_ratio(
    arcext_server: ArcextServer, arcext_session: requests.Session
) -> None:
    from arcext.hosts import packages

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        manifest = zipfile.ZipFile(io.BytesIO(make_package("a.b", "1.0.0"))).read("HandlerManifest.json")
        zf.writestr("HandlerManifest.json", manifest)
        zf.writestr("zeros.bin", b"\0" * (20 * 1024 * 1024))
    r = upload(arcext_session, arcext_server, buf.getvalue(), "2.0.2")
    error = assert_arm_error(r, 400, "InvalidRequestContent")
    assert "zeros.bin" in error["message"] and "ratio" in error["message"]
    assert packages.MAX_RATIO <= 200 and packages.MAX_UNCOMPRESSED_BYTES <= 2 * 1024**3


@pytest.mark.parametrize("entry", ["../../x", "/abs/x", "..\\..\\x", "C:\\x", "c:/x", "a/../../x", "\\\\server\\x"])
def test_traversing_entry_names_are_refused(
    arcext_server: ArcextServer, arcext_session: requests.Session, entry: str
) -> None:
    data = make_package(f"{PUB}.{TYPE}", "2.0.3", extra_files={entry: b"pwned"})
    r = upload(arcext_session, arcext_server, data, "2.0.3")
    error = assert_arm_error(r, 400, "InvalidRequestContent")
    assert entry in error["message"]
    assert arcext_session.get(package_url(arcext_server, "2.0.3")).status_code == 404


def test_a_good_package_is_still_accepted_and_deleted_without_html(
    arcext_server: ArcextServer, arcext_session: requests.Session
) -> None:
    data = make_package(f"{PUB}.{TYPE}", "1.0.0", extra_files={"bin/tool.exe": b"MZ" + b"\x90" * 4096})
    arcext_session.delete(package_url(arcext_server, "2.0.9"))
    r = upload(arcext_session, arcext_server, data, "2.0.9")
    assert r.status_code == 201, r.text
    r = arcext_session.delete(package_url(arcext_server, "2.0.9"))
    assert r.status_code == 200 and not r.content
    assert "text/html" not in r.headers.get("Content-Type", "")
    r = arcext_session.delete(package_url(arcext_server, "2.0.9"))
    assert r.status_code == 204 and not r.content
    assert "text/html" not in r.headers.get("Content-Type", "")


def test_deletes_without_a_body_send_no_html_content_type(
    seeded: ArcextServer, arcext_session: requests.Session
) -> None:
    hc = f"{seeded.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/m1/hostConnection"
    for url, params in ((hc, {}), (ext_url(seeded, "nothing"), {"api-version": API})):
        r = arcext_session.delete(url, params=params)
        assert r.status_code == 204, r.text
        assert "text/html" not in r.headers.get("Content-Type", ""), url


# --- finding 5: portal sign-out ------------------------------------------------------------------------
def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def test_sign_out_ends_the_session_on_the_server(seeded: ArcextServer) -> None:
    with requests.Session() as browser:
        browser.trust_env = False
        csrf = _csrf(browser.get(f"{seeded.url}/portal/signin").text)
        r = browser.post(
            f"{seeded.url}/portal/signin", data={"token": seeded.token, "csrf_token": csrf}, allow_redirects=False
        )
        assert r.status_code == 303, r.text
        stolen = browser.cookies.get("arcext_portal", path="/portal")
        assert stolen
        page = browser.get(f"{seeded.url}/portal/machines", allow_redirects=False)
        assert page.status_code == 200
        csrf = _csrf(page.text)
        r = browser.post(f"{seeded.url}/portal/signout", data={"csrf_token": csrf}, allow_redirects=False)
        assert r.status_code == 303

    with requests.Session() as replay:
        replay.trust_env = False
        replay.cookies.set("arcext_portal", stolen, path="/portal")
        r = replay.get(f"{seeded.url}/portal/machines", allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"].startswith("/portal/signin"), r.text[:300]
        form = {"action": "disable", "extension": "cse", "csrf_token": csrf}
        r = replay.post(
            f"{seeded.url}/portal/subscriptions/{SUB}/resourceGroups/rg1/machines/m1/extensions",
            data=form,
            allow_redirects=False,
        )
        assert r.status_code in (303, 400), r.text[:300]
        assert r.status_code != 303 or r.headers["Location"].startswith("/portal/signin")
    with seeded.session() as s:
        body = s.get(ext_url(seeded), params={"api-version": API}).json()
        assert body["properties"].get("enableAutomaticUpgrade", True) is True, "the replayed write changed nothing"


def test_a_session_from_before_a_restart_is_still_signed_in(tmp_path: Any) -> None:
    with ArcextServer(data_dir=tmp_path / "d") as arc, requests.Session() as browser:
        browser.trust_env = False
        csrf = _csrf(browser.get(f"{arc.url}/portal/signin").text)
        browser.post(f"{arc.url}/portal/signin", data={"token": arc.token, "csrf_token": csrf}, allow_redirects=False)
        cookie = browser.cookies.get("arcext_portal", path="/portal")
        token = arc.token
    assert cookie
    with ArcextServer(data_dir=tmp_path / "d") as again, requests.Session() as browser:
        browser.trust_env = False
        browser.cookies.set("arcext_portal", cookie, path="/portal")
        assert token
        r = browser.get(f"{again.url}/portal/machines", allow_redirects=False)
        assert r.status_code == 200, r.status_code


# --- finding 6: absolute URLs --------------------------------------------------------------------------
@pytest.fixture
def public() -> Iterator[ArcextServer]:
    with ArcextServer(config={"ARCEXT_PUBLIC_URL": "https://arc.example.test:8443/"}) as arc:
        yield arc


def test_absolute_urls_come_from_the_public_url_never_the_host_header(public: ArcextServer) -> None:
    evil = {"Host": "evil.example:666", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}
    with public.session() as s:
        put_machine(s, public, "m1")
        r = s.put(
            ext_url(public, "cse"),
            params={"api-version": API},
            json={"location": "eastus", "properties": {"publisher": "Microsoft.Compute", "type": "T"}},
            headers=evil,
        )
        assert r.status_code == 202, r.text
        for header in ("Azure-AsyncOperation", "Location"):
            assert r.headers[header].startswith("https://arc.example.test:8443/subscriptions/"), r.headers[header]
        for i in range(3):
            put_machine(s, public, f"p{i}")
        public.app.config["ARCEXT_PAGE_SIZE"] = 2  # type: ignore[union-attr]
        try:
            page = s.get(f"{rg_url(public)}/machines", params={"api-version": API}, headers=evil).json()
        finally:
            public.app.config["ARCEXT_PAGE_SIZE"] = 100  # type: ignore[union-attr]
        assert page["nextLink"].startswith("https://arc.example.test:8443/subscriptions/"), page["nextLink"]
        assert "evil" not in repr(page)


def test_without_a_public_url_the_harness_uses_its_own_address(seeded: ArcextServer) -> None:
    with seeded.session() as s:
        r = s.delete(ext_url(seeded), params={"api-version": API}, headers={"Host": "evil.example"})
        assert r.headers["Azure-AsyncOperation"].startswith(seeded.url + "/"), r.headers["Azure-AsyncOperation"]
        assert wait_operation(s, r)["status"] == "Succeeded"


def test_serve_defaults_the_public_url_from_host_port_and_tls() -> None:
    from arcext.cli import default_public_url

    assert default_public_url("127.0.0.1", 5000, tls=False) == "http://127.0.0.1:5000"
    assert default_public_url("localhost", 443, tls=True) == "https://localhost:443"
    assert default_public_url("::1", 5000, tls=False) == "http://[::1]:5000"
    assert default_public_url("0.0.0.0", 5000, tls=True).startswith("https://")
    assert "0.0.0.0" not in default_public_url("0.0.0.0", 5000, tls=True)


# --- the rest of finding 7 ---------------------------------------------------------------------------------
def test_health_tells_no_one_without_a_token_how_many_machines_exist(seeded: ArcextServer) -> None:
    with requests.Session() as anonymous:
        anonymous.trust_env = False
        r = anonymous.get(f"{seeded.url}/arcext/v1/health")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        r = anonymous.get(f"{seeded.url}/arcext/v1/health", headers={"Authorization": "Bearer arcext_nope"})
        assert r.status_code == 200 and r.json() == {"status": "ok"}
    reader = seeded.create_token("Reader", f"/subscriptions/{SUB}/resourceGroups/rg1")
    with seeded.session(reader) as s:
        assert "machines" not in s.get(f"{seeded.url}/arcext/v1/health").json()
    with seeded.session() as s:
        assert s.get(f"{seeded.url}/arcext/v1/health").json() == {"status": "ok", "machines": 1}


def test_simulated_hosts_file_is_private_and_holds_no_plain_digest_of_protected_settings(
    arcext_server: ArcextServer, arcext_session: requests.Session
) -> None:
    put_machine(arcext_session, arcext_server, "m1")
    secret = {"workspaceKey": "1234"}  # short secrets are the ones a plain digest gives away
    put_extension(
        arcext_session,
        arcext_server,
        "ama",
        properties={"publisher": "Microsoft.Compute", "type": "T", "protectedSettings": secret},
    )
    import json

    plain = hashlib.sha256(json.dumps(secret, sort_keys=True).encode()).hexdigest()
    if arcext_server.database_url:  # on PostgreSQL the simulated hosts are rows every node reads (arcext.cluster)
        import psycopg

        with psycopg.connect(arcext_server.database_url) as conn:
            stored = "".join(str(row[0]) for row in conn.execute("SELECT doc::text FROM simhosts").fetchall())
        assert "protectedSha256" in stored and plain not in stored and "1234" not in stored
    else:
        path = arcext_server.data_dir / "simhosts" / "hosts.jsonl"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert plain not in path.read_text()
    r = arcext_session.get(f"{arcext_server.url}/arcext/v1/simulated-hosts/m1")
    assert r.status_code == 200, r.text
    assert plain not in r.text and "1234" not in r.text
    digest = r.json()["hosts"][0]["extensions"]["ama"]["protectedSha256"] if "hosts" in r.json() else None
    if digest is not None:
        assert not hmac.compare_digest(digest, plain)


def test_instance_view_type_handler_version_is_a_string(
    arcext_server: ArcextServer, arcext_session: requests.Session
) -> None:
    put_machine(arcext_session, arcext_server, "m1")
    put_extension(arcext_session, arcext_server, "nov", properties={"publisher": "Microsoft.Compute", "type": "T"})
    body = arcext_session.get(ext_url(arcext_server, "nov"), params={"api-version": API}).json()
    assert isinstance(body["properties"]["instanceView"]["typeHandlerVersion"], str), body
    listed = arcext_session.get(machine_url(arcext_server, "m1") + "/extensions", params={"api-version": API}).json()
    assert all(isinstance(e["properties"]["instanceView"]["typeHandlerVersion"], str) for e in listed["value"])
