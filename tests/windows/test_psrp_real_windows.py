"""The same driver scenarios against a real Windows host (the only place the .ps1 scripts really run).

Skipped unless ARCEXT_WINRM_HOST, ARCEXT_WINRM_USER and ARCEXT_WINRM_PASSWORD are set. Optional:
ARCEXT_WINRM_PORT, ARCEXT_WINRM_TRANSPORT (https|http, default https), ARCEXT_WINRM_AUTH (default
negotiate; the winrm driver uses NTLM for it), ARCEXT_WINRM_CA (CA bundle path; default: validate
against the system store), ARCEXT_WINRM_DRIVER (psrp, winrm, or "psrp,winrm"; default both): which
drivers run the scenario. The winrm driver also runs the WinRS bootstrap and wrapper for real.
The test package's handler commands are .cmd files that exit 0 and write a success status file.
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
from arcext.hosts.psrp import AgentScriptDriver, PsrpDriver
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


def package(version: str) -> bytes:
    manifest = {
        "installCommand": "ok.cmd",
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
    return buf.getvalue()


@pytest.mark.parametrize("driver", sorted(CLASSES))
def test_install_upgrade_remove_on_a_real_host(tmp_path: Path, driver: str) -> None:
    if driver not in DRIVERS:
        pytest.skip(f"ARCEXT_WINRM_DRIVER does not name {driver} (unset it to run both)")
    body = {
        "driver": driver,
        "address": HOST,
        "transport": os.environ.get("ARCEXT_WINRM_TRANSPORT", "https"),
        "auth": os.environ.get("ARCEXT_WINRM_AUTH", "negotiate"),
        "username": os.environ["ARCEXT_WINRM_USER"],
        "password": os.environ["ARCEXT_WINRM_PASSWORD"],
        "statusDeadlineSeconds": 60,
    }
    if os.environ.get("ARCEXT_WINRM_PORT"):
        body["port"] = int(os.environ["ARCEXT_WINRM_PORT"])
    if os.environ.get("ARCEXT_WINRM_CA"):
        body["caCertificatePath"] = os.environ["ARCEXT_WINRM_CA"]
    public, secrets = connections.validate(body)
    box = SecretBox.from_data_dir(tmp_path)
    conn = connections.load({**public, "credentials": box.seal(secrets)}, box)
    store = PackageStore(tmp_path / "packages")
    for v in ("1.0.0", "1.1.0"):
        store.put("Arcext", "Test", v, package(v), datetime.now(UTC))
    spec = ExtensionSpec("arcext-test", "Arcext", "Test", {"hello": "world"})
    d = CLASSES[driver]("real", conn, store)
    try:
        d.install(spec, "1.0.0")
        assert d.installed("arcext-test") is not None
        d.upgrade(spec, "1.0.0", "1.1.0")
        installed = d.installed("arcext-test")
        assert installed is not None and installed.version == "1.1.0" and installed.state == "enabled"
        d.rollback(spec, "1.1.0", "1.0.0")
        d.remove("arcext-test")
        assert d.installed("arcext-test") is None
    finally:
        d.close()
