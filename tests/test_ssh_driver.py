"""The ssh driver against a real OpenSSH server on loopback (tests/sshd.py): the handler protocol run
by the real POSIX sh agent with real sh handlers, checked on the files the scripts wrote."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from arcext.crypto import SecretBox
from arcext.errors import ArmError
from arcext.hosts import connections, packages
from arcext.hosts.base import ExtensionSpec, HandlerFailed, HostAuthError, UpgradeRefused
from arcext.hosts.packages import PackageStore
from arcext.hosts.ssh import HostKeyMismatch, SshDriver, SshTuning, SudoRefused
from sshd import (
    PLAIN_USER,
    Sshd,
    cached,
    commands,
    journal,
    make_package,
    settings_files,
    sshd_server,
    versions,
)

__all__ = ["sshd_server"]  # the fixture, imported

PUB, TYPE = "Contoso.Linux", "Agent"
HANDLER = f"{PUB}.{TYPE}"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TUNING = SshTuning(status_poll_s=0.1, deadline_margin_s=10)
UPGRADE_ORDER = [
    ("1.0.0", "disable"),
    ("1.1.0", "update"),
    ("1.0.0", "uninstall"),
    ("1.1.0", "install"),
    ("1.1.0", "enable"),
]
PWNED = Path("/tmp/arcext-ssh-pwned")
#: shell metacharacters in user values: they must arrive as data, never run
SETTINGS = {"workspaceId": "ws-1", "nested": {"a": [1, 2]}, "cmd": f"$(touch {PWNED}) `touch {PWNED}` '; touch {PWNED}"}
PROTECTED = {"workspaceKey": "very-secret"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "host"
    r.mkdir()
    return r


@pytest.fixture
def store(tmp_path: Path) -> PackageStore:
    return PackageStore(tmp_path / "packages")


def spec() -> ExtensionSpec:
    return ExtensionSpec("agent", PUB, TYPE, settings=SETTINGS, protected_settings=PROTECTED)


def driver(sshd: Sshd, root: Path, store: PackageStore, tmp_path: Path, **overrides: Any) -> SshDriver:
    box = SecretBox.from_data_dir(tmp_path / "data")
    public, secrets = connections.validate(sshd.connection(root, **overrides))
    conn = connections.load({**public, "credentials": box.seal(secrets)}, box)
    return SshDriver("m1", conn, store, {"agent": HANDLER}, TUNING, tmp_path / "data" / "ssh_known_hosts")


def publish(store: PackageStore, version: str, behaviour: dict[str, Any] | None = None, **kw: Any) -> None:
    store.put(PUB, TYPE, version, make_package(HANDLER, version, behaviour, **kw), NOW)


def installed_at_1_0(sshd: Sshd, root: Path, store: PackageStore, tmp_path: Path, **kw: Any) -> bytes:
    """1.0.0 installed through the driver; returns its settings file bytes."""
    d = driver(sshd, root, store, tmp_path)
    try:
        d.install(spec(), "1.0.0")
    finally:
        d.close()
    assert versions(root, HANDLER) == {"1.0.0": "Enabled"}
    assert commands(root) == [("1.0.0", "install"), ("1.0.0", "enable")]
    files = settings_files(root, HANDLER, "1.0.0")
    assert list(files) == ["0.settings"]
    return files["0.settings"]


def check_settings(raw: bytes) -> None:
    doc = json.loads(raw)["runtimeSettings"][0]["handlerSettings"]
    assert doc["publicSettings"] == SETTINGS
    assert json.loads(base64.b64decode(doc["protectedSettings"])) == PROTECTED


def job(root: Path) -> list[tuple[str, str]]:
    return commands(root)[2:]


# --- scenarios -----------------------------------------------------------------------------------
def test_install_then_upgrade_succeeds(sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path) -> None:
    publish(store, "1.0.0")
    publish(store, "1.1.0")
    settings = installed_at_1_0(sshd_server, root, store, tmp_path)
    check_settings(settings)
    layout = root / "var/lib/waagent" / f"{HANDLER}-1.0.0"
    env = json.loads((layout / "HandlerEnvironment.json").read_text())[0]["handlerEnvironment"]
    assert env["configFolder"] == str(layout / "config") and env["heartbeatFile"] == str(layout / "heartbeat.log")
    d = driver(sshd_server, root, store, tmp_path)
    try:
        d.upgrade(spec(), "1.0.0", "1.1.0")
        assert d.installed("agent") is not None
    finally:
        d.close()
    assert versions(root, HANDLER) == {"1.1.0": "Enabled"}
    assert settings_files(root, HANDLER, "1.1.0") == {"0.settings": settings}, "byte for byte, same N"
    assert job(root) == UPGRADE_ORDER
    assert cached(root, HANDLER) == ["1.1.0"], "the old package is dropped once the new one is healthy"
    j = journal(root, HANDLER)
    assert j is not None and j["finished"] is True and j["outcome"] == "succeeded"
    update_env = (root / "var/lib/waagent" / f"{HANDLER}-1.1.0" / "env.update").read_text()
    assert "AZURE_GUEST_AGENT_UPDATING_FROM_VERSION=1.0.0" in update_env and "VERSION=1.1.0" in update_env
    assert d.connections_opened == 1
    assert (root / "var/lib/waagent" / f"{HANDLER}-1.1.0" / "config/0.settings").stat().st_mode & 0o077 == 0
    assert not PWNED.exists(), "user values never reach a shell"


def test_agent_refuses_names_with_shell_syntax_and_sh_parses_it(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path
) -> None:
    import subprocess

    from arcext.hosts.base import RemoteScriptError
    from arcext.hosts.ssh import agent_text

    assert subprocess.run(["sh", "-n", "-c", agent_text()]).returncode == 0
    d = driver(sshd_server, root, store, tmp_path)
    try:
        for bad in (f"A.B;touch {PWNED}", f"$(touch {PWNED})", "../../etc", "-rf"):
            with pytest.raises(RemoteScriptError) as err:
                d.agent("state", [bad])  # the agent checks names again, on the host
            assert "invalid handler" in str(err.value)
        with pytest.raises(RemoteScriptError):
            d.agent("remove", ["A.B", "1.0/../../.."])
    finally:
        d.close()
    assert not PWNED.exists() and list(root.iterdir()) == []


def test_enable_fails_rolls_back_to_lkg(sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path) -> None:
    publish(store, "1.0.0")
    publish(store, "1.1.0", {"fail": {"enable": 3}, "quiet": True})
    settings = installed_at_1_0(sshd_server, root, store, tmp_path)
    d = driver(sshd_server, root, store, tmp_path)
    try:
        with pytest.raises(HandlerFailed) as err:
            d.upgrade(spec(), "1.0.0", "1.1.0")
        assert "[1009]" in str(err.value) and str(err.value).endswith("exited with 3"), "no stderr: no tail"
        d.rollback(spec(), "1.1.0", "1.0.0")
    finally:
        d.close()
    assert versions(root, HANDLER) == {"1.0.0": "Enabled"}
    assert settings_files(root, HANDLER, "1.0.0") == {"0.settings": settings}
    assert job(root) == UPGRADE_ORDER + [("1.1.0", "uninstall"), ("1.0.0", "install"), ("1.0.0", "enable")]
    assert cached(root, HANDLER) == ["1.0.0"], "the failed package is purged, the LKG stays cached"


def test_update_hangs_times_out_1011_and_rolls_back(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path
) -> None:
    publish(store, "1.0.0")
    publish(store, "1.1.0", {"hang": ["update"]})
    settings = installed_at_1_0(sshd_server, root, store, tmp_path)
    d = driver(sshd_server, root, store, tmp_path, handlerTimeoutSeconds={"update": 1})
    started = time.monotonic()
    try:
        with pytest.raises(HandlerFailed) as err:
            d.upgrade(spec(), "1.0.0", "1.1.0")
        assert "[1011]" in str(err.value)
        assert time.monotonic() - started < 8, "the hung handler was killed at its timeout"
        d.rollback(spec(), "1.1.0", "1.0.0")
    finally:
        d.close()
    assert versions(root, HANDLER) == {"1.0.0": "Enabled"}
    assert settings_files(root, HANDLER, "1.0.0") == {"0.settings": settings}
    # the old version was only disabled: rollback uninstalls the failed one and re-enables the LKG
    assert job(root) == [("1.0.0", "disable"), ("1.1.0", "update"), ("1.1.0", "uninstall"), ("1.0.0", "enable")]
    assert _processes_in(root) == [], "the timed-out handler's process group was killed"


def _processes_in(root: Path) -> list[int]:
    """Processes whose working directory is inside ``root`` (a handler runs in its version directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cwd").resolve().is_relative_to(root.resolve()):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_status_stays_transitioning_rolls_back(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path
) -> None:
    publish(store, "1.0.0")
    publish(store, "1.1.0", {"status": "transitioning"})
    settings = installed_at_1_0(sshd_server, root, store, tmp_path)
    d = driver(sshd_server, root, store, tmp_path, statusDeadlineSeconds=1)
    try:
        with pytest.raises(HandlerFailed) as err:
            d.upgrade(spec(), "1.0.0", "1.1.0")
        assert "status is transitioning" in str(err.value)
        d.rollback(spec(), "1.1.0", "1.0.0")
    finally:
        d.close()
    assert versions(root, HANDLER) == {"1.0.0": "Enabled"}
    assert settings_files(root, HANDLER, "1.0.0") == {"0.settings": settings}
    assert job(root) == UPGRADE_ORDER + [
        ("1.1.0", "disable"),
        ("1.1.0", "uninstall"),
        ("1.0.0", "install"),
        ("1.0.0", "enable"),
    ]


def test_stale_heartbeat_rolls_back(sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path) -> None:
    publish(store, "1.0.0", report_heartbeat=True)
    publish(store, "1.1.0", {"heartbeat": "stale"}, report_heartbeat=True)
    settings = installed_at_1_0(sshd_server, root, store, tmp_path)
    d = driver(sshd_server, root, store, tmp_path, statusDeadlineSeconds=1)
    try:
        with pytest.raises(HandlerFailed) as err:
            d.upgrade(spec(), "1.0.0", "1.1.0")
        assert "heartbeat is stale" in str(err.value)
        d.rollback(spec(), "1.1.0", "1.0.0")
    finally:
        d.close()
    assert versions(root, HANDLER) == {"1.0.0": "Enabled"}
    assert settings_files(root, HANDLER, "1.0.0") == {"0.settings": settings}
    assert job(root)[len(UPGRADE_ORDER) :] == [
        ("1.1.0", "disable"),
        ("1.1.0", "uninstall"),
        ("1.0.0", "install"),
        ("1.0.0", "enable"),
    ]


def test_connection_dropped_mid_install_resumes_from_the_journal(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path
) -> None:
    publish(store, "1.0.0")
    publish(store, "1.1.0", {"slow": {"install": 2}})
    settings = installed_at_1_0(sshd_server, root, store, tmp_path)
    d = driver(sshd_server, root, store, tmp_path)
    killed: list[int] = []

    def cut() -> None:
        marker = root / "install-1.1.0.started"
        deadline = time.monotonic() + 20
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        killed.append(sshd_server.kill_sessions())  # the server side of the connection dies mid-install

    cutter = threading.Thread(target=cut)
    cutter.start()
    try:
        d.upgrade(spec(), "1.0.0", "1.1.0")
    finally:
        cutter.join()
        d.close()
    assert killed and killed[0] >= 1, "the fault fired"
    assert d.connections_opened == 2, "reconnected once"
    assert versions(root, HANDLER) == {"1.1.0": "Enabled"}
    assert settings_files(root, HANDLER, "1.1.0") == {"0.settings": settings}
    assert job(root) == UPGRADE_ORDER, "install ran once: the resumed job waited for it, nothing ran twice"
    j = journal(root, HANDLER)
    assert j is not None and j["finished"] is True and j["outcome"] == "succeeded"


def test_failed_rollback_raises(sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path) -> None:
    publish(store, "1.0.0")
    publish(store, "1.1.0", {"fail": {"enable": 3}})
    settings = installed_at_1_0(sshd_server, root, store, tmp_path)
    (root / "break-1.0.0").touch()  # the LKG's enable fails from now on
    d = driver(sshd_server, root, store, tmp_path)
    try:
        with pytest.raises(HandlerFailed):
            d.upgrade(spec(), "1.0.0", "1.1.0")
        with pytest.raises(HandlerFailed) as err:
            d.rollback(spec(), "1.1.0", "1.0.0")
        assert "exited with 9" in str(err.value)
    finally:
        d.close()
    assert versions(root, HANDLER) == {"1.0.0": "Installed"}
    assert settings_files(root, HANDLER, "1.0.0") == {"0.settings": settings}
    j = journal(root, HANDLER)
    assert j is not None and j["kind"] == "rollback" and j["finished"] is False


# --- connection and auth -------------------------------------------------------------------------
def test_wrong_key_is_refused(sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    d = driver(sshd_server, root, store, tmp_path, privateKeyPem=pem)
    with pytest.raises(HostAuthError) as err:
        d.installed("agent")
    assert err.value.nothing_ran and "refused the credentials" in str(err.value)
    assert pem not in str(err.value)


def test_wrong_password_is_refused(sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path) -> None:
    d = driver(sshd_server, root, store, tmp_path, privateKeyPem=None, password="not-the-password")
    with pytest.raises(HostAuthError) as err:
        d.installed("agent")
    assert "not-the-password" not in str(err.value)


def test_password_auth_installs(sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path) -> None:
    publish(store, "1.0.0")
    d = driver(sshd_server, root, store, tmp_path, privateKeyPem=None, password=sshd_server.password)
    try:
        d.install(spec(), "1.0.0")
    finally:
        d.close()
    assert versions(root, HANDLER) == {"1.0.0": "Enabled"}
    check_settings(settings_files(root, HANDLER, "1.0.0")["0.settings"])


def test_wrong_host_key_is_refused(sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path) -> None:
    wrong = "SHA256:" + "A" * 43
    d = driver(sshd_server, root, store, tmp_path, hostKeyFingerprint=wrong)
    with pytest.raises(HostKeyMismatch) as err:
        d.installed("agent")
    assert sshd_server.host_fingerprint in str(err.value) and "does not match the pinned" in str(err.value)
    assert err.value.nothing_ran and not err.value.retryable


def test_trust_on_first_use_records_the_key_then_refuses_a_change(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path
) -> None:
    d = driver(sshd_server, root, store, tmp_path, hostKeyFingerprint=None, trustOnFirstUse=True)
    assert d.installed("agent") is None
    d.close()
    known = (tmp_path / "data" / "ssh_known_hosts").read_text()
    assert f"[127.0.0.1]:{sshd_server.port} ssh-ed25519" in known
    assert (
        driver(sshd_server, root, store, tmp_path, hostKeyFingerprint=None, trustOnFirstUse=True).installed("agent")
        is None
    )
    other = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    (tmp_path / "data" / "ssh_known_hosts").write_text(f"[127.0.0.1]:{sshd_server.port} {other.decode()}\n")
    with pytest.raises(HostKeyMismatch) as err:
        driver(sshd_server, root, store, tmp_path, hostKeyFingerprint=None, trustOnFirstUse=True).installed("agent")
    assert "differs from the one recorded on first use" in str(err.value)


def test_sudo_refused(sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path) -> None:
    publish(store, "1.0.0")
    d = driver(sshd_server, root, store, tmp_path, username=PLAIN_USER, privateKeyPem=sshd_server.rsa_key_pem)
    with pytest.raises(SudoRefused) as err:
        d.install(spec(), "1.0.0")
    assert f"sudo -n refused '{PLAIN_USER}'" in str(err.value) and "password is required" in str(err.value)
    assert versions(root, HANDLER) == {}


def test_rsa_key_without_sudo_in_a_root_the_user_owns(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path
) -> None:
    import pwd
    import shutil

    publish(store, "1.0.0")
    user = pwd.getpwnam(PLAIN_USER)
    shutil.chown(root, user.pw_uid, user.pw_gid)
    for parent in root.parents:
        if parent == Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o711)
    d = driver(
        sshd_server, root, store, tmp_path, username=PLAIN_USER, privateKeyPem=sshd_server.rsa_key_pem, sudo=False
    )
    try:
        d.install(spec(), "1.0.0")
    finally:
        d.close()
    assert versions(root, HANDLER) == {"1.0.0": "Enabled"}
    assert (root / "var/lib/waagent" / f"{HANDLER}-1.0.0" / "config/0.settings").stat().st_uid == user.pw_uid


# --- settings, names, policy ---------------------------------------------------------------------
def test_protected_settings_encrypted_to_the_host_certificate(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "host")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    publish(store, "1.0.0")
    d = driver(sshd_server, root, store, tmp_path, protectedSettingsCertificatePem=pem)
    try:
        d.install(spec(), "1.0.0")
    finally:
        d.close()
    raw = settings_files(root, HANDLER, "1.0.0")["0.settings"]
    assert b"very-secret" not in raw
    hs = json.loads(raw)["runtimeSettings"][0]["handlerSettings"]
    assert hs["protectedSettingsCertThumbprint"] == cert.fingerprint(hashes.SHA1()).hex().upper()
    clear = pkcs7.pkcs7_decrypt_der(base64.b64decode(hs["protectedSettings"]), cert, key, [])
    assert json.loads(clear) == PROTECTED


def test_names_and_versions_are_validated_driver_side(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path
) -> None:
    d = driver(sshd_server, root, store, tmp_path)
    for bad_spec, version in (
        (ExtensionSpec("x", "Evil/..", TYPE), "1.0.0"),
        (ExtensionSpec("x", "..", TYPE), "1.0.0"),
        (ExtensionSpec("x", PUB, "A;rm -rf /"), "1.0.0"),
        (ExtensionSpec("x", "-rf", TYPE), "1.0.0"),
        (ExtensionSpec("x", PUB, TYPE), "1.0.0/../../etc"),
        (ExtensionSpec("x", PUB, TYPE), "1.0.0-beta"),
    ):
        with pytest.raises(UpgradeRefused):
            d.install(bad_spec, version)
    assert d.connections_opened == 0, "refused before connecting"


def test_unsafe_zip_member_is_refused(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("HandlerManifest.json", make_zip_manifest())
        zf.writestr("../../escape.sh", "echo escaped")
    # the upload refuses such a package (issue #10, finding 4) ...
    with pytest.raises(ArmError) as refused:
        store.put(PUB, TYPE, "1.0.0", out.getvalue(), NOW)
    assert refused.value.status == 400 and "escape.sh" in refused.value.message
    # ... and the driver refuses one that reached the store before that check existed
    monkeypatch.setattr(packages, "_check_entries", lambda infos: None)
    store.put(PUB, TYPE, "1.0.0", out.getvalue(), NOW)
    d = driver(sshd_server, root, store, tmp_path)
    try:
        with pytest.raises(UpgradeRefused) as err:
            d.install(spec(), "1.0.0")
    finally:
        d.close()
    assert "unsafe member name" in str(err.value)
    assert not (tmp_path / "escape.sh").exists() and versions(root, HANDLER) == {}


def make_zip_manifest() -> str:
    manifest = {"installCommand": "handler.sh install", "enableCommand": "handler.sh enable"}
    return json.dumps([{"name": HANDLER, "version": "1.0.0", "handlerManifest": manifest}])


def test_block_and_allow_lists(sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path) -> None:
    publish(store, "1.0.0")
    blocked = driver(sshd_server, root, store, tmp_path, extensionsBlockList=[f"{PUB}/{TYPE}"])
    with pytest.raises(UpgradeRefused) as err:
        blocked.install(spec(), "1.0.0")
    assert "blocklist" in str(err.value)
    allowed_other = driver(sshd_server, root, store, tmp_path, extensionsAllowList=["Other/Type"])
    with pytest.raises(UpgradeRefused) as err:
        allowed_other.upgrade(spec(), "1.0.0", "1.1.0")
    assert "allowlist" in str(err.value)
    assert versions(root, HANDLER) == {} and blocked.connections_opened == 0


def test_update_without_install_skips_install(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path
) -> None:
    publish(store, "1.0.0")
    publish(store, "1.1.0", update_mode="UpdateWithoutInstall")
    settings = installed_at_1_0(sshd_server, root, store, tmp_path)
    d = driver(sshd_server, root, store, tmp_path)
    try:
        d.upgrade(spec(), "1.0.0", "1.1.0")
        d.remove("agent")
    finally:
        d.close()
    assert job(root) == [
        ("1.0.0", "disable"),
        ("1.1.0", "update"),
        ("1.0.0", "uninstall"),
        ("1.1.0", "enable"),
        ("1.1.0", "disable"),
        ("1.1.0", "uninstall"),
    ]
    assert settings
    assert versions(root, HANDLER) == {} and cached(root, HANDLER) == []


def test_passphrase_protected_key(sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path) -> None:
    key = serialization.load_ssh_private_key(sshd_server.user_key_pem.encode(), None)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"correct horse"),
    ).decode()
    with pytest.raises(ArmError) as err:  # a wrong passphrase is a 400 at PUT, not a failure at upgrade time
        connections.validate(sshd_server.connection(root, privateKeyPem=pem, privateKeyPassphrase="wrong"))
    assert "correct horse" not in err.value.message and "BEGIN" not in err.value.message
    d = driver(sshd_server, root, store, tmp_path, privateKeyPem=pem, privateKeyPassphrase="correct horse")
    try:
        assert d.installed("agent") is None
    finally:
        d.close()
    assert d.connections_opened == 1


def test_continue_on_update_failure_passes_exit_codes_on(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path
) -> None:
    publish(store, "1.0.0", {"fail": {"disable": 5}})
    publish(store, "1.1.0", continue_on_update_failure=True)
    settings = installed_at_1_0(sshd_server, root, store, tmp_path)
    d = driver(sshd_server, root, store, tmp_path)
    try:
        d.upgrade(spec(), "1.0.0", "1.1.0")
    finally:
        d.close()
    assert versions(root, HANDLER) == {"1.1.0": "Enabled"}
    assert settings_files(root, HANDLER, "1.1.0") == {"0.settings": settings}
    new = root / "var/lib/waagent" / f"{HANDLER}-1.1.0"
    assert "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE=5" in (new / "env.update").read_text()
    assert "AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE=0" in (new / "env.install").read_text()
    assert "AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE=0" in (new / "env.enable").read_text()


def test_old_disable_failure_stops_the_upgrade_without_continue_on_update_failure(
    sshd_server: Sshd, root: Path, store: PackageStore, tmp_path: Path
) -> None:
    publish(store, "1.0.0", {"fail": {"disable": 5}})
    publish(store, "1.1.0")
    installed_at_1_0(sshd_server, root, store, tmp_path)
    d = driver(sshd_server, root, store, tmp_path)
    try:
        with pytest.raises(HandlerFailed) as err:
            d.upgrade(spec(), "1.0.0", "1.1.0")
    finally:
        d.close()
    assert "disable of Contoso.Linux.Agent 1.0.0 exited with 5" in str(err.value)
    assert job(root) == [("1.0.0", "disable")], "nothing after the failed disable"
