"""Security findings 1 and 2 of issue #10, tried as an attacker with an ordinary token would, against the
psrp driver and a fake Windows host over real HTTP(S).

1. Stored host credentials must not follow a repointed connection: only an Owner writes hostConnection, and
   a change of where the credentials go (address, port, transport, auth, certificate checks, username) must
   carry the secret again.
2. publisher, type and typeHandlerVersion are checked at the API, so a name with separators or ``..`` never
   reaches a host: nothing on the host outside the handler folders changes.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from arcext.testing import ArcextServer
from arcext.testing.fakehost import FakeHost, make_package
from arcext.tls import ensure_self_signed
from conftest import API, SUB, ext_url, machine_url, wait_operation
from test_bad_input import assert_arm_error

PUB, TYPE = "Contoso.Fake", "Agent"
HANDLER = f"{PUB}.{TYPE}"


@pytest.fixture
def arc(driver_arc: ArcextServer) -> ArcextServer:
    return driver_arc


@pytest.fixture
def owner(arc: ArcextServer) -> Iterator[requests.Session]:
    with arc.session() as session:
        yield session


@pytest.fixture
def contributor(arc: ArcextServer) -> Iterator[requests.Session]:
    token = arc.create_token("Contributor", f"/subscriptions/{SUB}/resourceGroups/rg1", name="rg1-contributor")
    with arc.session(token) as session:
        yield session


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "host", auth="basic", tls=True) as host:
        yield host


class _Listener:
    """An attacker's https listener: records every Authorization header it is sent, answers 401."""

    def __init__(self, directory: Path) -> None:
        seen: list[str] = []
        self.seen = seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                seen.append(self.headers.get("Authorization") or "")
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="x"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        cert, key = ensure_self_signed(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[_Listener]:
    found = _Listener(tmp_path / "listener-tls")
    yield found
    found.close()


def hc_url(arc: ArcextServer, machine: str = "hc1") -> str:
    return f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/{machine}/hostConnection"


def put_machine(s: requests.Session, arc: ArcextServer, machine: str) -> None:
    r = s.put(machine_url(arc, machine), params={"api-version": API}, json={"location": "eastus"})
    assert r.status_code == 200, r.text


def connect(owner: requests.Session, arc: ArcextServer, host: FakeHost, machine: str) -> None:
    body = host.connection(operationTimeoutSeconds=3, statusDeadlineSeconds=2)
    r = owner.put(hc_url(arc, machine), json=body)
    assert r.status_code in (200, 201), r.text


# --- finding 1: credentials follow a repointed connection ---------------------------------------------
def test_contributor_cannot_repoint_the_owners_credentials(
    arc: ArcextServer, owner: requests.Session, contributor: requests.Session, fake: FakeHost, listener: _Listener
) -> None:
    put_machine(owner, arc, "hc1")
    connect(owner, arc, fake, "hc1")
    before = owner.get(hc_url(arc)).json()

    repoint = {
        "address": "127.0.0.1",
        "port": listener.port,
        "transport": "https",
        "auth": "basic",
        "username": fake.username,
        "certValidation": False,
    }
    error = assert_arm_error(contributor.put(hc_url(arc), json=repoint), 403, "AuthorizationFailed")
    assert "rg1-contributor" in error["message"]
    assert_arm_error(contributor.delete(hc_url(arc)), 403, "AuthorizationFailed")
    assert contributor.get(hc_url(arc)).json() == before, "a Contributor still reads it"

    # the Contributor's ordinary rights: an extension on hc1 goes to the Owner's host, not the listener
    r = contributor.put(
        ext_url(arc, "agent", "hc1"),
        params={"api-version": API},
        json={"location": "eastus", "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0.0"}},
    )
    wait_operation(contributor, r, timeout=30)
    assert listener.seen == [], "nothing reached the attacker's listener"
    secret = base64.b64encode(f"{fake.username}:{fake.password}".encode()).decode()
    assert all(secret not in header for header in listener.seen)


def test_a_repointed_connection_must_carry_the_secret_again(
    arc: ArcextServer, owner: requests.Session, fake: FakeHost, listener: _Listener
) -> None:
    put_machine(owner, arc, "hc1")
    connect(owner, arc, fake, "hc1")
    before = owner.get(hc_url(arc)).json()
    kept = {k: v for k, v in fake.connection().items() if k != "password"}
    changes: dict[str, Any] = {
        "address": "localhost",
        "port": listener.port,
        "certValidation": False,
        "caCertificatePath": None,
        "username": "someone-else",
        "auth": "ntlm",
    }
    for name, value in changes.items():
        r = owner.put(hc_url(arc), json={**kept, name: value})
        error = assert_arm_error(r, 400, "InvalidParameter")
        assert error["target"] == "password", (name, error)
        assert "again" in error["message"] and name in error["message"], error
        assert owner.get(hc_url(arc)).json() == before, f"a refused change of {name} changed nothing"
    r = owner.put(hc_url(arc), json={**kept, "transport": "http", "port": listener.port, "auth": "ntlm"})
    assert_arm_error(r, 400, "InvalidParameter")
    assert owner.get(hc_url(arc)).json() == before

    # settings that do not say where the secret goes keep it
    r = owner.put(hc_url(arc), json={**kept, "operationTimeoutSeconds": 7})
    assert r.status_code == 200, r.text
    assert r.json()["hasCredentials"] is True and r.json()["operationTimeoutSeconds"] == 7
    # the same repoint with the password given again is the Owner's choice
    r = owner.put(hc_url(arc), json={**kept, "port": listener.port, "password": "another"})
    assert r.status_code == 200, r.text
    assert r.json()["port"] == listener.port and "another" not in r.text


# --- finding 2: path traversal on the host ------------------------------------------------------------
def disk(root: Path) -> dict[str, str]:
    """Every file and folder under the fake host's disk, with a digest of each file's bytes."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return out


def outside_handler_folders(snapshot: dict[str, str]) -> dict[str, str]:
    """What the agent may not touch for this handler: everything but its plugin folder, its cached packages,
    its journal, the agent's scripts and the fake host's own bookkeeping (and the folders holding them)."""
    mine = (
        f"C/Packages/Plugins/{HANDLER}",
        f"C/ProgramData/arcext/packages/{HANDLER}",
        f"C/ProgramData/arcext/journal/{HANDLER}.json",
        "C/ProgramData/arcext/scripts",
        "fakehost-model",
    )
    parents = {"C", "C/Packages", "C/Packages/Plugins", "C/ProgramData", "C/ProgramData/arcext"}
    parents |= {"C/ProgramData/arcext/packages", "C/ProgramData/arcext/journal"}
    return {k: v for k, v in snapshot.items() if not k.startswith(mine) and k not in parents}


ATTACKS: list[tuple[str, dict[str, str]]] = [
    ("properties.publisher", {"publisher": "..\\..\\Users\\", "type": "\\Public"}),
    ("properties.publisher", {"publisher": "../../Users/", "type": "Public"}),
    ("properties.publisher", {"publisher": "..", "type": "Public"}),
    ("properties.publisher", {"publisher": "Contoso..Fake", "type": "Agent"}),
    ("properties.publisher", {"publisher": "C:Users", "type": "Agent"}),
    ("properties.type", {"publisher": PUB, "type": "..\\..\\..\\Users\\Public"}),
    ("properties.type", {"publisher": PUB, "type": "Agent/x"}),
    ("properties.type", {"publisher": PUB, "type": "Agent\x00"}),
    ("properties.typeHandlerVersion", {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "..\\..\\Users"}),
    ("properties.typeHandlerVersion", {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0/../.."}),
    ("properties.typeHandlerVersion", {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0.0.0.0"}),
    ("properties.typeHandlerVersion", {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "١.٠"}),
]


def test_traversing_names_are_refused_and_nothing_outside_handler_folders_changes(
    arc: ArcextServer, owner: requests.Session, contributor: requests.Session, fake: FakeHost
) -> None:
    public = fake.machine.path(r"C:\Users\Public")
    for folder in ("Desktop", "Documents"):
        (public / folder).mkdir(parents=True, exist_ok=True)
        (public / folder / "keep.txt").write_text("user data")
    owner.put(f"{arc.url}/arcext/v1/catalog/{PUB}/{TYPE}", json={"autoUpgradeSupported": True})
    data = make_package(HANDLER, "1.0.0", {})
    r = owner.put(
        f"{arc.url}/arcext/v1/catalog/{PUB}/{TYPE}/versions/1.0.0/package",
        json={"zipBase64": base64.b64encode(data).decode()},
    )
    assert r.status_code in (200, 201), r.text
    put_machine(owner, arc, "m1")
    connect(owner, arc, fake, "m1")
    r = contributor.put(
        ext_url(arc, "agent", "m1"),
        params={"api-version": API},
        json={"location": "eastus", "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0.0"}},
    )
    assert wait_operation(contributor, r, timeout=30)["status"] == "Succeeded"
    before = disk(fake.machine.root)
    assert (public / "Desktop" / "keep.txt").exists()

    for i, (target, props) in enumerate(ATTACKS):
        for method in ("PUT", "PATCH"):
            name = f"evil{i}" if method == "PUT" else "agent"
            body: dict[str, Any] = {"properties": props}
            if method == "PUT":
                body["location"] = "eastus"
            r = contributor.request(method, ext_url(arc, name, "m1"), params={"api-version": API}, json=body)
            error = assert_arm_error(r, 400, "InvalidRequestContent")
            assert error["target"] == target, (props, error)
            assert target.split(".")[-1] in error["message"]
        r = contributor.delete(ext_url(arc, f"evil{i}", "m1"), params={"api-version": API})
        assert r.status_code == 204, r.text
    assert arc.wait_for_operations()

    after = disk(fake.machine.root)
    assert outside_handler_folders(after) == outside_handler_folders(before)
    assert (public / "Desktop" / "keep.txt").read_text() == "user data"
    assert fake.machine.versions(HANDLER) == {"1.0.0": "Enabled"}
    names = [e["name"] for e in owner.get(ext_url(arc, "", "m1")[:-1], params={"api-version": API}).json()["value"]]
    assert names == ["agent"], "no refused extension was stored"


@pytest.mark.parametrize(
    "path",
    [
        "catalog/..%5C..%5CUsers/Public",
        "catalog/Contoso..Fake/Agent",
        "catalog/Contoso.Fake/Agent%5Cx/versions/1.0.0",
        "catalog/Contoso.Fake/Agent/versions/1.0.0/package",
    ],
)
def test_catalog_paths_refuse_traversing_names(arc: ArcextServer, owner: requests.Session, path: str) -> None:
    if path.endswith("package"):
        path = "catalog/Contoso%5C..%5CFake/Agent/versions/1.0.0/package"
        r = owner.put(f"{arc.url}/arcext/v1/{path}", json={"zipBase64": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="})
    elif "versions" in path:
        r = owner.put(f"{arc.url}/arcext/v1/{path}", json={"critical": False})
    else:
        r = owner.put(f"{arc.url}/arcext/v1/{path}", json={"autoUpgradeSupported": True})
    error = assert_arm_error(r, 400, "InvalidResourceName")
    assert error["target"] in ("publisher", "type")


def test_a_machine_write_cannot_reach_the_host_connection(
    arc: ArcextServer, owner: requests.Session, contributor: requests.Session, fake: FakeHost, listener: _Listener
) -> None:
    """The hostConnection lives in the machine's document: a Contributor's machine PUT or PATCH that names one
    (at the top or under properties) neither replaces nor drops it."""
    put_machine(owner, arc, "hc1")
    connect(owner, arc, fake, "hc1")
    before = owner.get(hc_url(arc)).json()
    evil = {"address": "127.0.0.1", "port": listener.port, "certValidation": False}
    for method, body in (
        ("PUT", {"location": "eastus", "hostConnection": evil, "properties": {"hostConnection": evil}}),
        ("PATCH", {"hostConnection": evil, "properties": {"hostConnection": evil}}),
        ("PUT", {"location": "eastus"}),
    ):
        r = contributor.request(method, machine_url(arc, "hc1"), params={"api-version": API}, json=body)
        assert r.status_code == 200, r.text
        assert "hostConnection" not in r.text
        assert owner.get(hc_url(arc)).json() == before, (method, body)
