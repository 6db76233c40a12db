"""The handler-protocol rules every host driver shares (arcext.hosts.agent), checked on the real driver
classes without a host: the journal's timestamp comes from the injected clock, ``installed`` orders
versions numerically, a handler command's outcome and the health verdict map to WALA's codes, and the
resolver hands the drivers the service's SecretBox and clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from arcext.crypto import KEY_FILE, SecretBox
from arcext.hosts import connections
from arcext.hosts.agent import INVALID_STATUS_CODE, TIMED_OUT_CODE, UNHEALTHY_CODE, HandlerCommandFailed
from arcext.hosts.packages import PackageStore
from arcext.hosts.psrp import PsrpDriver
from arcext.hosts.registry import HostResolver
from arcext.hosts.simulated import SimulatedFleet
from arcext.hosts.ssh import SshDriver
from arcext.hosts.winrm import WinrmDriver
from arcext.ids import MachineKey

KEY = MachineKey("00000000-0000-0000-0000-000000000000", "rg1", "m1")
FIXED = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


def connection(driver: str = "psrp", **overrides: Any) -> connections.HostConnection:
    body: dict[str, Any] = {"driver": driver, "address": "host1", "username": "u", "password": "p", **overrides}
    if driver == "ssh":
        body["hostKeyFingerprint"] = "SHA256:" + "A" * 43
    public, secrets = connections.validate(body)
    box = SecretBox(Fernet.generate_key())
    return connections.load({**public, "credentials": box.seal(secrets)}, box)


def psrp(tmp_path: Path, now: Any = None) -> PsrpDriver:
    return PsrpDriver("m1", connection(), PackageStore(tmp_path / "packages"), {"ext": "Contoso.Agent"}, now=now)


def test_the_journal_is_stamped_with_the_injected_clock(tmp_path: Path) -> None:
    driver = psrp(tmp_path, now=lambda: FIXED.astimezone(timezone(timedelta(hours=2))))
    op_id, call = driver._start_call("Contoso.Agent", "upgrade", {}, fromVersion="1.0", toVersion="1.1")
    assert call is not None
    name, params = call
    document = json.loads(params["ContentJson"])
    assert name == "Write-Journal" and document["operationId"] == op_id
    assert document["startedAt"] == "2031-05-06T07:08:09Z", "UTC whatever the clock's zone"


def test_an_unfinished_journal_of_the_same_operation_is_resumed(tmp_path: Path) -> None:
    driver = psrp(tmp_path)
    journal = {"operationId": "op-1", "kind": "upgrade", "fromVersion": "1.0", "toVersion": "1.1", "finished": False}
    assert driver._start_call("Contoso.Agent", "upgrade", {"journal": journal}, fromVersion="1.0", toVersion="1.1") == (
        "op-1",
        None,
    )
    other, call = driver._start_call(
        "Contoso.Agent", "upgrade", {"journal": journal}, fromVersion="1.0", toVersion="2.0"
    )
    assert other != "op-1" and call is not None, "another target is a new operation"


def test_installed_reports_the_enabled_version_else_the_numerically_newest(tmp_path: Path) -> None:
    driver = psrp(tmp_path)
    versions = {v: {"version": v, "state": "Installed"} for v in ("1.9.0", "1.10.0", "1.2.0")}
    chosen = driver._installed("ext", versions)
    assert chosen is not None and (chosen.version, chosen.state) == ("1.10.0", "disabled")
    versions["1.2.0"]["state"] = "Enabled"
    chosen = driver._installed("ext", versions)
    assert chosen is not None and (chosen.version, chosen.state) == ("1.2.0", "enabled")
    assert driver._installed("ext", {}) is None


def test_a_handler_commands_outcome_maps_to_walas_codes(tmp_path: Path) -> None:
    driver = psrp(tmp_path)
    driver._command_outcome("s", "Contoso.Agent", "1.0", "enable", 300, False, "0", "")  # success: no error
    with pytest.raises(HandlerCommandFailed) as timed_out:
        driver._command_outcome("s", "Contoso.Agent", "1.0", "enable", 300, True, "0", "")
    assert timed_out.value.wala_code == TIMED_OUT_CODE and "after 300 s" in timed_out.value.message
    with pytest.raises(HandlerCommandFailed) as failed:
        driver._command_outcome("s", "Contoso.Agent", "1.0", "install", 900, False, "-3", "first\nlast line\n")
    assert (failed.value.wala_code, failed.value.exit_code) == (1007, -3)
    assert failed.value.message.endswith("exited with -3: last line")
    with pytest.raises(HandlerCommandFailed) as unknown:
        driver._command_outcome("s", "Contoso.Agent", "1.0", "disable", 900, False, "?", "")
    assert (unknown.value.wala_code, unknown.value.exit_code) == (1010, None)


def test_the_health_verdict(tmp_path: Path) -> None:
    driver = psrp(tmp_path)
    max_age = driver.conn.heartbeat_max_age_s
    verdict = driver._not_yet_healthy
    assert verdict("H", "1.0", {"status": "success"}, None, None, False) is None
    assert verdict("H", "1.0", {"status": "transitioning"}, None, None, False) == "status is transitioning"
    assert verdict("H", "1.0", {"status": "warning"}, None, None, True) == "status success but no heartbeat yet"
    assert "stale" in str(verdict("H", "1.0", {"status": "success"}, None, (max_age + 1, "ready"), True))
    assert verdict("H", "1.0", {"status": "success"}, None, (0, "NotReady"), True) == "heartbeat says NotReady"
    assert verdict("H", "1.0", {"status": "success"}, None, (0, "Ready"), True) is None
    with pytest.raises(HandlerCommandFailed) as error:
        verdict("H", "1.0", {"status": "error"}, "disk full", None, False)
    assert error.value.wala_code == UNHEALTHY_CODE and "reports error: disk full" in error.value.message
    assert driver._unhealthy("H", "1.0", "no status file yet").wala_code == UNHEALTHY_CODE
    assert INVALID_STATUS_CODE == 1012


def test_the_resolver_uses_the_services_box_and_clock(tmp_path: Path) -> None:
    box = SecretBox.from_data_dir(tmp_path / "elsewhere")
    resolver = HostResolver(SimulatedFleet(tmp_path / "simhosts"), False, box, now=lambda: FIXED)
    assert resolver.box is box
    assert not (tmp_path / KEY_FILE).exists(), "no second box in the fleet's data directory"
    for name, cls in (("psrp", PsrpDriver), ("winrm", WinrmDriver), ("ssh", SshDriver)):
        body: dict[str, Any] = {"driver": name, "address": "host1", "username": "u", "password": "p"}
        if name == "ssh":
            body["hostKeyFingerprint"] = "SHA256:" + "A" * 43
        public, secrets = connections.validate(body)
        doc: Any = {"machine": {"hostConnection": {**public, "credentials": box.seal(secrets)}}, "extensions": {}}
        driver = resolver(KEY, doc)
        assert type(driver) is cls
        assert isinstance(driver, (PsrpDriver, WinrmDriver, SshDriver))
        assert driver.conn.password == "p", "the credentials opened with the box it was given"
        assert driver.now() == FIXED
