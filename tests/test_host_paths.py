"""Issue 10 item 2, host side: a publisher, type or version that could leave the handler's folders
never reaches a host. The driver refuses stored data with such names before any host call; every
agent script binds its names against a ValidatePattern and resolves every path it builds inside its
root; Remove-HandlerVersion removes only version-shaped folders of the one handler and never
follows a link; package entries that would leave the version folder are refused by the driver and
again by the host. Each test asserts on the fake Windows host's disk that nothing outside the
handler's folders changed."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from arcext.crypto import SecretBox
from arcext.hosts import connections
from arcext.hosts.base import ExtensionSpec, IntegrityError
from arcext.hosts.packages import PackageStore
from arcext.hosts.psrp import DriverTuning, InvalidExtensionName, PsrpDriver, package_files, script_text
from arcext.testing.fakehost import FakeHost, make_package

HANDLER = "Contoso.Fake.Agent"
OP = "0b6f3c1e-2d4a-4e8b-9c7d-1a2b3c4d5e6f"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeHost]:
    with FakeHost(tmp_path / "host", auth="basic", tls=True) as h:
        yield h


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) on the fake host's disk, except the model's own record."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith("fakehost-model"):
            continue
        out[rel] = None if path.is_dir() else path.read_bytes()
    return out


def plant_user_data(host: FakeHost) -> None:
    for rel in (r"C:\Users\Public\Desktop\keep.txt", r"C:\Users\Public\Documents\keep.txt", r"C:\outside\keep.txt"):
        p = host.machine.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("user data")


def make_driver(tmp: Path, host: FakeHost, handlers: dict[str, str] | None = None) -> PsrpDriver:
    public, secrets = connections.validate(host.connection(operationTimeoutSeconds=3, statusDeadlineSeconds=2))
    box = SecretBox.from_data_dir(tmp / "data")
    conn = connections.load({**public, "credentials": box.seal(secrets)}, box)
    store = PackageStore(tmp / "data" / "packages")
    store.put("Contoso.Fake", "Agent", "1.0.0", make_package(HANDLER, "1.0.0"), datetime.now(UTC))
    return PsrpDriver("m1", conn, store, handlers, DriverTuning(status_poll_s=0.05))


BAD_SPECS = [
    ("..\\..\\Users\\", "\\Public", "1.0.0"),  # the reproduction
    ("Contoso", "..", "1.0.0"),
    ("Contoso/x", "Agent", "1.0.0"),
    ("Contoso", "Agent", "..\\..\\..\\Users"),
    ("Contoso", "Agent", "1.0.0/../../x"),
    ("Contoso", "Agent:stream", "1.0.0"),
]


@pytest.mark.parametrize(("publisher", "type_", "version"), BAD_SPECS)
def test_the_driver_refuses_stored_bad_names_before_any_host_call(
    tmp_path: Path, host: FakeHost, publisher: str, type_: str, version: str
) -> None:
    plant_user_data(host)
    before = snapshot(host.machine.root)
    d = make_driver(tmp_path, host)
    spec = ExtensionSpec("agent", publisher, type_, {"w": 1})
    try:
        with pytest.raises(InvalidExtensionName) as caught:
            d.install(spec, version)
        assert caught.value.code == "InvalidExtensionName" and "not" in caught.value.message
        with pytest.raises(InvalidExtensionName):
            d.upgrade(spec, version, "1.0.1")
        with pytest.raises(InvalidExtensionName):
            d.rollback(spec, "1.0.1", version)
    finally:
        d.close()
    assert d.scripts_run == [] and host.machine.scripts_run() == [], "nothing was sent to the host"
    assert snapshot(host.machine.root) == before


def test_remove_of_a_stored_bad_handler_is_refused(tmp_path: Path, host: FakeHost) -> None:
    plant_user_data(host)
    before = snapshot(host.machine.root)
    d = make_driver(tmp_path, host, {"agent": "..\\..\\Users\\.\\Public"})
    try:
        with pytest.raises(InvalidExtensionName, match="not Publisher.Type"):
            d.remove("agent")
        with pytest.raises(InvalidExtensionName):
            d.installed("agent")
    finally:
        d.close()
    assert host.machine.scripts_run() == [] and snapshot(host.machine.root) == before


def run_script(host: FakeHost, name: str, params: dict[str, Any], input_: list[str] | None = None) -> tuple[Any, str]:
    """One agent script straight through pypsrp (no driver-side checks): (output, errors)."""
    wsman = WSMan(**host.pypsrp_kwargs())
    with wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(script_text(name), use_local_scope=True)
        ps.add_parameters(params)
        ps.invoke(input=input_)
        return list(ps.output), "; ".join(str(e) for e in ps.streams.error)


def test_the_host_scripts_refuse_traversal_even_when_the_driver_is_bypassed(tmp_path: Path, host: FakeHost) -> None:
    d = make_driver(tmp_path, host)
    d.install(ExtensionSpec("agent", "Contoso.Fake", "Agent", {"w": 1}), "1.0.0")
    d.close()
    plant_user_data(host)
    before = snapshot(host.machine.root)
    bad_handler = "..\\..\\Users\\Public"
    calls: list[tuple[str, dict[str, Any]]] = [
        ("Get-ExtensionState", {"Handler": bad_handler}),
        ("Remove-HandlerVersion", {"Handler": bad_handler, "Version": "Desktop", "PurgeCache": True}),
        ("Remove-HandlerVersion", {"Handler": HANDLER, "Version": "..\\..\\..\\Users\\Public\\Desktop"}),
        ("Remove-HandlerVersion", {"Handler": HANDLER, "Version": "RuntimeSettings"}),
        ("Write-Journal", {"Handler": "..\\..\\..\\outside\\x", "ContentJson": json.dumps({"operationId": OP})}),
        (
            "Write-RuntimeSettings",
            {"Handler": HANDLER, "Version": "1.0.0\\..\\..", "SequenceNumber": 0, "ContentBase64": "e30="},
        ),
        ("Copy-RuntimeSettings", {"Handler": HANDLER, "FromVersion": "1.0.0", "ToVersion": "..\\..\\x"}),
        ("Get-HandlerStatus", {"Handler": HANDLER, "Version": "1.0.0", "SequenceNumber": -1}),
        ("Expand-Package", {"Handler": "a/../../b.c", "Version": "1.0.0", "Sha256": "0" * 64, "FilesJson": "{}"}),
    ]
    for name, params in calls:
        output, errors = run_script(host, name, params)
        assert output == [] and errors, f"{name} {params} was not refused"
        assert "does not match" in errors or "Refusing" in errors or "Cannot" in errors, errors
    assert snapshot(host.machine.root) == before, "nothing on the host changed"
    assert host.machine.versions(HANDLER) == {"1.0.0": "Enabled"}


def test_remove_handler_version_never_follows_a_link(tmp_path: Path, host: FakeHost) -> None:
    d = make_driver(tmp_path, host)
    d.install(ExtensionSpec("agent", "Contoso.Fake", "Agent", {"w": 1}), "1.0.0")
    d.close()
    plant_user_data(host)
    version_dir = host.machine.plugin_dir(HANDLER, "1.0.0")
    os.symlink(host.machine.path(r"C:\Users\Public\Desktop"), version_dir / "planted-junction")
    outside = snapshot(host.machine.path(r"C:\Users"))
    output, errors = run_script(host, "Remove-HandlerVersion", {"Handler": HANDLER, "Version": "1.0.0"})
    assert errors == "" and json.loads(output[-1]) == {"removed": True, "purged": False}
    assert not version_dir.exists()
    assert snapshot(host.machine.path(r"C:\Users")) == outside, "the link was removed, not what it points to"


def zip_with(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        manifest = {"installCommand": "i.cmd", "enableCommand": "e.cmd", "uninstallCommand": "u.cmd"}
        zf.writestr(
            "HandlerManifest.json", json.dumps([{"name": HANDLER, "version": "2.0.0", "handlerManifest": manifest}])
        )
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


@pytest.mark.parametrize(
    "entry",
    [
        "../../../../Users/Public/Desktop/evil.txt",
        "..\\..\\..\\outside\\evil.txt",
        "/abs/evil.txt",
        "C:/outside/evil.txt",
        "HandlerState",
        "bin/../../../evil.txt",
    ],
)
def test_package_entries_that_leave_the_version_folder_are_refused_by_driver_and_host(
    tmp_path: Path, host: FakeHost, entry: str
) -> None:
    data = zip_with({entry: b"evil"})
    path = tmp_path / "evil.zip"
    path.write_bytes(data)
    with pytest.raises(IntegrityError):
        package_files("m1", str(path))
    # the host checks again: the package cached by hand, a file list that names the entry
    sha = hashlib.sha256(data).hexdigest()
    chunk = base64.b64encode(data).decode()
    output, errors = run_script(
        host, "Receive-Package", {"Handler": HANDLER, "Version": "2.0.0", "Sha256": sha}, [chunk]
    )
    assert errors == "" and json.loads(output[-1])["verified"] is True
    plant_user_data(host)
    before = snapshot(host.machine.root)
    files = {entry: hashlib.sha256(b"evil").hexdigest(), "HandlerManifest.json": "0" * 64}
    params = {"Handler": HANDLER, "Version": "2.0.0", "Sha256": sha, "FilesJson": json.dumps(files)}
    output, errors = run_script(host, "Expand-Package", params)
    assert output == [] and "Refusing the package entry" in errors, errors
    after = snapshot(host.machine.root)
    changed = {k for k in set(before) | set(after) if before.get(k, b"-") != after.get(k, b"-")}
    inside = "C/Packages/Plugins/Contoso.Fake.Agent"
    escaped = {k for k in changed if not (k.startswith(inside) or inside.startswith(k))}  # (or its new parents)
    assert changed and escaped == set(), escaped
    assert not any("evil" in k for k in after)


def test_the_extracted_tree_is_verified_against_the_package_before_use(tmp_path: Path, host: FakeHost) -> None:
    d = make_driver(tmp_path, host)
    d.install(ExtensionSpec("agent", "Contoso.Fake", "Agent", {"w": 1}), "1.0.0")
    ref = d.packages.get("Contoso.Fake", "Agent", "1.0.0")
    assert ref is not None
    tampered = host.machine.plugin_dir(HANDLER, "1.0.0") / "enable.cmd"
    tampered.write_text("@echo planted\r\n")
    files = json.dumps(package_files("m1", str(ref.path)))
    params = {"Handler": HANDLER, "Version": "1.0.0", "Sha256": ref.sha256, "FilesJson": files}
    output, errors = run_script(host, "Expand-Package", params)
    assert output == [] and "enable.cmd" in errors and "SHA-256" in errors
    d.close()
