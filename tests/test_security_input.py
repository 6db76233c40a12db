"""Security finding 3 and the request-shape parts of 7 (issue #10): malformed JSON, oversize bodies, over-long
URLs and a full disk get ARM errors a client can act on, never a 500, and change nothing."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, put_extension, put_machine
from test_bad_input import assert_arm_error, snapshot

GOOD_PROPS = '"publisher": "Microsoft.Compute", "type": "CustomScriptExtension", "typeHandlerVersion": "1.10"'


def ext_body(settings: str) -> bytes:
    return f'{{"location": "eastus", "properties": {{{GOOD_PROPS}, "settings": {settings}}}}}'.encode()


MALFORMED: list[tuple[str, str, bytes]] = [
    ("nesting 200,000 deep", "ext", b"[" * 200_000),
    ("objects nesting 100,000 deep", "ext", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    ("settings nesting 300 deep", "ext", ext_body('{"a": ' + "[" * 300 + "]" * 300 + "}")),
    ("5,000-digit integer", "ext", ext_body('{"n": ' + "1" * 5000 + "}")),
    ("4,000-digit integer", "ext", ext_body('{"n": ' + "1" * 4000 + "}")),
    ("integer 2**64 in settings", "ext", ext_body('{"n": 18446744073709551616}')),
    ("integer below -2**63 in settings", "ext", ext_body('{"n": -9223372036854775809}')),
    ("NaN in settings", "ext", ext_body('{"n": NaN}')),
    ("Infinity in settings", "ext", ext_body('{"n": Infinity}')),
    ("-Infinity in settings", "ext", ext_body('{"n": -Infinity}')),
    ("1e999 in settings", "ext", ext_body('{"n": 1e999}')),
    ("lone surrogate in settings", "ext", ext_body('{"s": "\\ud800"}')),
    ("lone surrogate in a settings key", "ext", ext_body('{"\\udfff": 1}')),
    ("lone surrogate in tags", "machine", b'{"location": "eastus", "tags": {"t": "\\ud800x"}}'),
    ("lone surrogate in protectedSettings", "ext", ext_body('{}, "protectedSettings": {"k": "\\udc00"}')),
    ("invalid UTF-8", "machine", b'{"location": "east\xff\xfeus"}'),
    ("duplicate-free garbage", "machine", b"\x00\x01\x02"),
]


@pytest.mark.parametrize(("case", "where", "data"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_json_gets_400_invalid_request_content(
    seeded: ArcextServer, arcext_session: requests.Session, case: str, where: str, data: bytes
) -> None:
    before = snapshot(arcext_session, seeded)
    url = ext_url(seeded, "evil") if where == "ext" else machine_url(seeded, "m2")
    r = arcext_session.put(url, params={"api-version": API}, data=data, headers={"Content-Type": "application/json"})
    assert_arm_error(r, 400, "InvalidRequestContent")
    assert seeded.wait_for_operations()
    assert snapshot(arcext_session, seeded) == before, "nothing changed"


@pytest.mark.parametrize(
    "protected",
    ['{"pin": 123456789012345678901234567890}', '{"k": "s3cret-value\\ud800"}', '{"pin": 9e999999}'],
)
def test_refusals_never_quote_protected_settings(
    seeded: ArcextServer, arcext_session: requests.Session, protected: str
) -> None:
    r = arcext_session.put(
        ext_url(seeded, "evil"),
        params={"api-version": API},
        data=ext_body(f'{{}}, "protectedSettings": {protected}'),
        headers={"Content-Type": "application/json"},
    )
    assert_arm_error(r, 400, "InvalidRequestContent")
    for fragment in ("123456789012", "s3cret", "9e999999"):
        assert fragment not in r.text


def test_host_connection_and_admin_bodies_refuse_malformed_json_too(
    seeded: ArcextServer, arcext_session: requests.Session
) -> None:
    hc = f"{seeded.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/m1/hostConnection"
    for data in (b"[" * 200_000, b'{"address": "\\ud800"}', b'{"port": 1e999}', b'{"port": NaN}'):
        r = arcext_session.put(hc, data=data, headers={"Content-Type": "application/json"})
        assert_arm_error(r, 400, "InvalidRequestContent")
    r = arcext_session.put(
        f"{seeded.url}/arcext/v1/catalog/Contoso.X/Agent",
        data=b'{"autoUpgradeSupported": true, "x": "\\ud800"}',
        headers={"Content-Type": "application/json"},
    )
    assert_arm_error(r, 400, "InvalidRequestContent")


def test_large_but_valid_numbers_are_kept_exactly(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    settings = {"max": 18446744073709551615, "min": -9223372036854775808, "f": 1.5e300, "deep": [[[[[1]]]]]}
    r = put_extension(
        arcext_session,
        seeded,
        "big",
        properties={"publisher": "Microsoft.Compute", "type": "CustomScriptExtension", "settings": settings},
    )
    assert r.status_code == 202
    got = arcext_session.get(ext_url(seeded, "big"), params={"api-version": API}).json()
    assert got["properties"]["settings"] == settings


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"location": "eastus", "tags": {"pad": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}}'


def test_oversize_bodies_get_413_chunked_or_not(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    before = snapshot(arcext_session, seeded)
    url = machine_url(seeded, "m2")
    big = b"".join(_chunks(2 * 1024 * 1024))
    r = arcext_session.put(url, params={"api-version": API}, data=big, headers={"Content-Type": "application/json"})
    assert_arm_error(r, 413, "RequestEntityTooLarge")
    r = arcext_session.put(
        url, params={"api-version": API}, data=_chunks(2 * 1024 * 1024), headers={"Content-Type": "application/json"}
    )
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert_arm_error(r, 413, "RequestEntityTooLarge")
    # a small chunked body is still read and applied
    small = iter([b'{"location": ', b'"eastus"}'])
    r = arcext_session.put(url, params={"api-version": API}, data=small, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert snapshot(arcext_session, seeded) != before


def test_over_long_urls_get_an_arm_shaped_414(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    url = f"{seeded.url}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/machines"
    r = arcext_session.get(url, params={"api-version": API, "$skiptoken": "A" * 100_000})
    assert_arm_error(r, 414, "RequestUriTooLong")
    assert r.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("raw", ["1" * 5000, "\u0661", "-1", "1e3", "\x00", "9" * 13])
def test_forged_skiptokens_get_400_on_every_list(
    seeded: ArcextServer, arcext_session: requests.Session, raw: str
) -> None:
    import base64

    token = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    lists = [
        ext_url(seeded, "")[:-1],
        f"{seeded.url}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/machines",
        f"{seeded.url}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values",
        f"{seeded.url}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/locations/eastus/publishers/"
        "Microsoft.Compute/extensionTypes/CustomScriptExtension/versions",
    ]
    for url in lists:
        params = {"api-version": API, "$skiptoken": token}
        if "eventtypes" in url:
            params["$filter"] = "eventTimestamp ge '2020-01-01T00:00:00Z'"
        r = arcext_session.get(url, params=params)
        assert r.status_code in (200, 400), (url, r.status_code, r.text[:300])
        if r.status_code == 400:
            assert r.json()["error"]["target"] == "$skiptoken"


def _raw(server: ArcextServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = server.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def test_protocol_errors_are_arm_shaped(seeded: ArcextServer) -> None:
    """Errors the HTTP server answers itself (before the app sees the request) still use the ARM envelope."""
    import json

    for request in (
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
    ):
        status, headers, body = _raw(seeded, request)
        assert 400 <= status < 500, (status, body)
        assert headers["content-type"].startswith("application/json"), headers
        error = json.loads(body)["error"]
        assert error["code"] and len(error["message"]) > 20


def test_a_malformed_chunked_body_gets_400(seeded: ArcextServer) -> None:
    import json

    path = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/m9?api-version={API}"
    status, headers, body = _raw(
        seeded,
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {seeded.token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        "zz\r\n{}\r\n0\r\n\r\n".encode(),
    )
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "InvalidRequestContent"


# --- a full disk -------------------------------------------------------------------------------------
@pytest.fixture
def durable_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (errno.ENOSPC, 507, "InsufficientStorage"),
        (errno.EDQUOT, 507, "InsufficientStorage"),
        (errno.EIO, 503, "ServiceUnavailable"),
    ],
)
def test_a_full_disk_gets_507_and_loses_nothing_acknowledged(
    durable_dir: Path, failure: int, status: int, code: str
) -> None:
    with ArcextServer(data_dir=durable_dir) as arc, arc.session() as s:
        put_machine(s, arc, "kept")
        put_extension(s, arc, "cse", "kept")
        store: Any = arc.services.store

        def full(*_args: Any, **_kwargs: Any) -> None:
            raise OSError(failure, os.strerror(failure))

        real = store._journal.append
        store._journal.append = full
        try:
            r = s.put(machine_url(arc, "lost"), params={"api-version": API}, json={"location": "eastus"})
            error = assert_arm_error(r, status, code)
            assert "not made" in error["message"] and int(r.headers["Retry-After"]) > 0
            r = s.put(
                ext_url(arc, "cse2", "kept"),
                params={"api-version": API},
                json={"location": "eastus", "properties": {"publisher": "Microsoft.Compute", "type": "T"}},
            )
            assert_arm_error(r, status, code)
            r = s.delete(ext_url(arc, "cse", "kept"), params={"api-version": API})
            assert_arm_error(r, status, code)
            # reads keep working
            assert s.get(machine_url(arc, "kept"), params={"api-version": API}).status_code == 200
            assert s.get(machine_url(arc, "lost"), params={"api-version": API}).status_code == 404
        finally:
            store._journal.append = real
        assert arc.wait_for_operations()
    with ArcextServer(data_dir=durable_dir) as again, again.session() as s:
        assert s.get(machine_url(again, "kept"), params={"api-version": API}).status_code == 200
        names = [e["name"] for e in s.get(ext_url(again, "", "kept")[:-1], params={"api-version": API}).json()["value"]]
        assert names == ["cse"], "everything acknowledged is there, nothing refused is"
        assert s.get(machine_url(again, "lost"), params={"api-version": API}).status_code == 404
