"""The same driver scenarios against a real Windows host (the only place the .ps1 scripts really run).

Skipped unless ARCEXT_WINRM_HOST, ARCEXT_WINRM_USER and ARCEXT_WINRM_PASSWORD are set. Optional:
ARCEXT_WINRM_PORT, ARCEXT_WINRM_TRANSPORT (https|http, default https), ARCEXT_WINRM_AUTH (default
negotiate; the winrm driver uses NTLM for it), ARCEXT_WINRM_CA (CA bundle path; default: validate
against the system store), ARCEXT_WINRM_DRIVER (psrp, winrm, or "psrp,winrm"; default both): which
drivers run the scenario. The winrm driver also runs the WinRS bootstrap and wrapper for real.
The test package's handler commands are .cmd files that exit 0 and write a success status file;
version 1.2.0's install hangs (ping for a minute) to exercise the host-side timeout.

One command, for someone with a Windows host (Windows PowerShell 5.1 or PowerShell 7 endpoint, an
Administrators account, WinRM listening):

    ARCEXT_WINRM_HOST=win1.corp ARCEXT_WINRM_USER='CORP\\admin' ARCEXT_WINRM_PASSWORD=... \\
        .venv/bin/python -m pytest -q tests/windows

Covered on both drivers: install -> health check (the status file the handler wrote, read back) ->
upgrade -> rollback -> a handler that hangs past its timeout (1011, then rollback to the last known
good version) -> remove. With PSRP reachable it also checks, with plain PowerShell, what only a real
host can tell: the folders' ACLs, that no handler task is left registered and that the hung
handler's process tree was killed.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from arcext.crypto import SecretBox
from arcext.hosts import connections
from arcext.hosts.base import ExtensionSpec
from arcext.hosts.packages import PackageStore
from arcext.hosts.psrp import AgentScriptDriver, DriverTuning, HandlerCommandFailed, PsrpDriver
from arcext.hosts.winrm import WinrmDriver

HOST = os.environ.get("ARCEXT_WINRM_HOST")
DRIVERS = {d.strip() for d in os.environ.get("ARCEXT_WINRM_DRIVER", "psrp,winrm").split(",") if d.strip()}
CLASSES: dict[str, type[AgentScriptDriver]] = {"psrp": PsrpDriver, "winrm": WinrmDriver}
pytestmark = pytest.mark.skipif(
    not (HOST and os.environ.get("ARCEXT_WINRM_USER") and os.environ.get("ARCEXT_WINRM_PASSWORD")),
    reason="no real Windows host: set ARCEXT_WINRM_HOST/USER/PASSWORD to run the .ps1 scripts for real "
    "(without it their runtime behaviour is verified only against the fake host's Python model)",
)

ENABLE = (
    "@echo off\r\n"
    "set P=%AZURE_GUEST_AGENT_EXTENSION_PATH%\r\n"
    "for /f %%f in ('dir /b /o:n \"%P%\\RuntimeSettings\\*.settings\"') do set N=%%~nf\r\n"
    'echo [{"version":"1.0","status":{"name":"t","operation":"Enable","status":"success","code":0,'
    '"formattedMessage":{"lang":"en-US","message":"ok"}}}] > "%P%\\Status\\%N%.status"\r\n'
)


HANG = "@ping -n 60 127.0.0.1 >nul\r\n@exit /b 0\r\n"


def package(version: str) -> bytes:
    manifest = {
        "installCommand": "hang.cmd" if version == "1.2.0" else "ok.cmd",
        "uninstallCommand": "ok.cmd",
        "updateCommand": "ok.cmd",
        "enableCommand": "enable.cmd",
        "disableCommand": "ok.cmd",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            "HandlerManifest.json",
            json.dumps([{"name": "Arcext.Test", "version": version, "handlerManifest": manifest}]),
        )
        zf.writestr("ok.cmd", "@exit /b 0\r\n")
        zf.writestr("enable.cmd", ENABLE)
        zf.writestr("hang.cmd", HANG)
    return buf.getvalue()


def powershell(conn_body: dict[str, object], script: str) -> str:
    """Plain PowerShell on the host (for checks only a real host can answer), through pypsrp."""
    from pypsrp.client import Client

    kwargs: dict[str, object] = {
        "username": conn_body["username"],
        "password": conn_body["password"],
        "ssl": conn_body["transport"] == "https",
        "auth": "ntlm" if conn_body["auth"] == "negotiate" else conn_body["auth"],
        "cert_validation": conn_body.get("caCertificatePath") or True,
    }
    if "port" in conn_body:
        kwargs["port"] = conn_body["port"]
    with Client(str(conn_body["address"]), **kwargs) as client:
        output, streams, had_errors = client.execute_ps(script)
    assert not had_errors, [str(e) for e in streams.error]
    return str(output).strip()


@pytest.mark.parametrize("driver", sorted(CLASSES))
def test_install_health_upgrade_rollback_timeout_remove_on_a_real_host(tmp_path: Path, driver: str) -> None:
    if driver not in DRIVERS:
        pytest.skip(f"ARCEXT_WINRM_DRIVER does not name {driver} (unset it to run both)")
    body: dict[str, object] = {
        "driver": driver,
        "address": HOST,
        "transport": os.environ.get("ARCEXT_WINRM_TRANSPORT", "https"),
        "auth": os.environ.get("ARCEXT_WINRM_AUTH", "negotiate"),
        "username": os.environ["ARCEXT_WINRM_USER"],
        "password": os.environ["ARCEXT_WINRM_PASSWORD"],
        "statusDeadlineSeconds": 60,
        "handlerTimeoutSeconds": {"install": 10},
    }
    if os.environ.get("ARCEXT_WINRM_PORT"):
        body["port"] = int(os.environ["ARCEXT_WINRM_PORT"])
    if os.environ.get("ARCEXT_WINRM_CA"):
        body["caCertificatePath"] = os.environ["ARCEXT_WINRM_CA"]
    public, secrets = connections.validate(body)
    box = SecretBox.from_data_dir(tmp_path)
    conn = connections.load({**public, "credentials": box.seal(secrets)}, box)
    store = PackageStore(tmp_path / "packages")
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        store.put("Arcext", "Test", v, package(v), datetime.now(UTC))
    spec = ExtensionSpec("arcext-test", "Arcext", "Test", {"hello": "world"})
    d = CLASSES[driver]("real", conn, store, tuning=DriverTuning(status_poll_s=1.0))
    try:
        d.install(spec, "1.0.0")
        installed = d.installed("arcext-test")
        assert installed is not None and (installed.version, installed.state) == ("1.0.0", "enabled")
        health = d._script("Get-HandlerStatus", {"Handler": "Arcext.Test", "Version": "1.0.0", "SequenceNumber": 0})
        assert health["status"]["status"] == "success" and health["state"] == "Enabled", health
        d.upgrade(spec, "1.0.0", "1.1.0")
        installed = d.installed("arcext-test")
        assert installed is not None and installed.version == "1.1.0" and installed.state == "enabled"
        d.rollback(spec, "1.1.0", "1.0.0")
        installed = d.installed("arcext-test")
        assert installed is not None and installed.version == "1.0.0" and installed.state == "enabled"
        d.upgrade(spec, "1.0.0", "1.1.0")
        with pytest.raises(HandlerCommandFailed) as caught:  # 1.2.0's install hangs past its 10 s
            d.upgrade(spec, "1.1.0", "1.2.0")
        assert caught.value.wala_code == 1011
        d.rollback(spec, "1.2.0", "1.1.0")
        installed = d.installed("arcext-test")
        assert installed is not None and installed.version == "1.1.0" and installed.state == "enabled"
        if "psrp" in DRIVERS:
            protected = powershell(
                body,
                "@((Join-Path $env:ProgramData 'arcext'),"
                " (Join-Path $env:SystemDrive 'Packages\\Plugins\\Arcext.Test'))"
                " | ForEach-Object { (Get-Acl -LiteralPath $_).AreAccessRulesProtected }",
            )
            assert protected.split() == ["True", "True"], protected
            leftovers = powershell(
                body,
                "@(Get-Process -Name ping -ErrorAction SilentlyContinue).Count;"
                "@(Get-ScheduledTask -TaskPath '\\arcext\\' -ErrorAction SilentlyContinue).Count",
            )
            assert leftovers.split() == ["0", "0"], "the hung handler's tree was killed, no task left behind"
        d.remove("arcext-test")
        assert d.installed("arcext-test") is None
    finally:
        d.close()
