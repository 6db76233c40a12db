"""The host-connection and package admin endpoints: validation, roles, secrets never returned."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import requests

from arcext.testing import ArcextServer
from arcext.testing.fakehost import make_package
from conftest import API, SUB, machine_url

URL = "/arcext/v1/subscriptions/{sub}/resourceGroups/rg1/machines/m1/hostConnection"
GOOD = {"address": "win1.example", "auth": "ntlm", "username": "admin", "password": "P@ss-w0rd-secret"}


@pytest.fixture(scope="module")
def arc() -> Iterator[ArcextServer]:
    with ArcextServer(simulate=False) as server:
        yield server


def test_host_connection_round_trip_never_returns_secrets(arc: ArcextServer) -> None:
    with arc.session() as s:
        s.put(machine_url(arc, "m1"), params={"api-version": API}, json={"location": "eastus"})
        url = arc.url + URL.format(sub=SUB)
        r = s.put(url, json=GOOD)
        assert r.status_code == 201, r.text
        assert r.json()["hasCredentials"] is True and "P@ss-w0rd-secret" not in r.text
        assert r.json()["port"] == 5986 and r.json()["transport"] == "https"
        # credentials are kept when not resent, as long as the endpoint stays the same (issue #10)
        r = s.put(url, json={k: v for k, v in GOOD.items() if k != "password"} | {"operationTimeoutSeconds": 7})
        assert r.status_code == 200, "credentials kept when not resent"
        got = s.get(url)
        assert got.status_code == 200 and got.json()["operationTimeoutSeconds"] == 7
        assert got.json()["hasCredentials"] is True and "P@ss-w0rd-secret" not in got.text
        machine = s.get(machine_url(arc, "m1"), params={"api-version": API})
        assert "hostConnection" not in machine.text and "P@ss-w0rd-secret" not in machine.text
        store_text = "".join(p.read_text(errors="ignore") for p in arc.data_dir.rglob("*.json"))
        assert "P@ss-w0rd-secret" not in store_text, "sealed at rest"
        assert s.delete(url).status_code == 200
        assert s.get(url).status_code == 404


@pytest.mark.parametrize(
    ("body", "target"),
    [
        ({**GOOD, "transport": "http", "auth": "basic"}, "auth"),
        ({**GOOD, "address": ""}, "address"),
        ({**GOOD, "port": 70000}, "port"),
        ({**GOOD, "extensionsBlockList": ["NoSlash"]}, "extensionsBlockList"),
        ({**GOOD, "bogus": 1}, "bogus"),
        ({k: v for k, v in GOOD.items() if k != "password"}, "password"),
    ],
)
def test_bad_host_connections_are_400(arc: ArcextServer, body: dict[str, object], target: str) -> None:
    with arc.session() as s:
        s.put(machine_url(arc, "m2"), params={"api-version": API}, json={"location": "eastus"})
        r = s.put(arc.url + URL.format(sub=SUB).replace("/m1/", "/m2/"), json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["target"] == target


def test_readers_cannot_change_host_connections(arc: ArcextServer) -> None:
    token = arc.create_token("Reader", f"/subscriptions/{SUB}", name="reader")
    with arc.session() as s:
        s.put(machine_url(arc, "m1"), params={"api-version": API}, json={"location": "eastus"})
    r = requests.put(arc.url + URL.format(sub=SUB), json=GOOD, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403


def test_packages_attach_by_sha256(arc: ArcextServer) -> None:
    data = make_package("Contoso.Fake.Agent", "2.0.0")
    with arc.session() as s:
        url = f"{arc.url}/arcext/v1/catalog/Contoso.Fake/Agent/versions/2.0.0/package"
        r = s.put(url, json={"zipBase64": base64.b64encode(data).decode()})
        assert r.status_code == 201, r.text
        import hashlib

        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert (arc.data_dir / "packages" / "blobs" / f"{r.json()['sha256']}.zip").read_bytes() == data
        assert s.get(url).json()["handlerManifest"]["enableCommand"] == "enable.cmd"
        bad = s.put(url, json={"zipBase64": base64.b64encode(b"not a zip").decode()})
        assert bad.status_code == 400


def test_packages_upload_as_raw_zip_beyond_the_json_body_limit(arc: ArcextServer) -> None:
    """A package is a zip body (application/zip), and may be larger than ARM's 1 MiB body limit."""
    import hashlib
    import io
    import os
    import zipfile

    buffer = io.BytesIO(make_package("Contoso.Fake.Agent", "2.1.0"))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("payload.bin", os.urandom(2 * 1024 * 1024))  # incompressible: the zip is > 2 MiB
    data = buffer.getvalue()
    assert len(data) > 2 * 1024 * 1024
    url = f"{arc.url}/arcext/v1/catalog/Contoso.Fake/Agent/versions/2.1.0/package"
    with arc.session() as s:
        r = s.put(url, data=data, headers={"Content-Type": "application/zip"})
        assert r.status_code == 201, r.text
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
        # the same size as JSON on an ARM route is still refused
        too_big = s.put(
            machine_url(arc, "m1"),
            params={"api-version": API},
            data=b'{"location": "' + b"x" * (1024 * 1024) + b'"}',
            headers={"Content-Type": "application/json"},
        )
        assert too_big.status_code == 413
