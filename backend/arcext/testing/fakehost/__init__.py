"""A fake Windows host for tests: a WS-Management/PSRP endpoint (psrpcore server side) in front of a
Python model of a Windows machine that runs arcext's own agent scripts (see docs/hosts.md).

    with FakeHost(tmp_path / "host1", auth="basic", tls=True) as host:
        host.connection()  # -> hostConnection settings for the arcext API / the psrp driver
        host.machine.versions("Contoso.Agent")

Unmodified pypsrp (PSRP) and pywinrm (the WinRS cmd shell, :mod:`.winrs`) talk to it over real
HTTP(S): Basic over TLS, or NTLM with WinRM message encryption over http; ``FakeHost(...,
driver="winrm")`` makes ``connection()`` ask for the winrm driver. ``FakeFleet`` runs several;
``python -m arcext.testing.fakehost`` runs a fleet as its own process whose state survives restarts.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from .encryption import register_user
from .machine import WindowsMachine
from .wsman import WSManServer

__all__ = ["FakeFleet", "FakeHost", "WindowsMachine", "make_package"]


class FakeHost:
    def __init__(
        self,
        root: Path,
        name: str = "FAKEHOST",
        username: str = "arcext",
        password: str = "Secret-Passw0rd!",
        auth: str = "basic",
        tls: bool = True,
        port: int = 0,
        max_envelope_kb: int = 500,
        driver: str = "psrp",
        edition: str = "Desktop",
    ) -> None:
        self.root = Path(root)
        self.driver = driver  # what connection() asks arcext to use: psrp, or winrm (WinRS via pywinrm)
        self.name = name
        self.username = username
        self.password = password
        self.auth = auth
        self.tls = tls
        #: the endpoint's PowerShell: Desktop (Windows PowerShell 5.1, the default on Windows Server)
        #: or Core (PowerShell 7); handler tasks always run under 5.1 (powershell.exe)
        self.machine = WindowsMachine(self.root / "disk", name, edition)
        self.cert_path: Path | None = None
        context: ssl.SSLContext | None = None
        if tls:
            from ...tls import ensure_self_signed

            cert, key = ensure_self_signed(self.root / "tls")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.cert_path = cert
        if auth == "ntlm":
            register_user(username, password)
        self.server = WSManServer(
            self.machine,
            username,
            password,
            auth=auth,
            tls=context,
            address=("127.0.0.1", port),
            max_envelope_kb=max_envelope_kb,
        )
        self._thread: threading.Thread | None = None
        #: handler commands after which the next Receive resets the TCP connection
        self.reset_after: set[str] = set()
        self.machine.on_command_done = self._command_done

    def _command_done(self, command: str, version: str) -> None:
        if command in self.reset_after:
            self.reset_after.discard(command)
            self.server.inject("Receive", "reset")

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> FakeHost:
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fakehost-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown_all()
        self.machine.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeHost:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- what a client needs ----------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.port

    def connection(self, **overrides: Any) -> dict[str, Any]:
        """hostConnection settings (the arcext API body) for this host."""
        body: dict[str, Any] = {
            "driver": self.driver,
            "address": "127.0.0.1",
            "port": self.port,
            "transport": "https" if self.tls else "http",
            "auth": "basic" if self.auth == "basic" else "ntlm",
            "username": self.username,
            "password": self.password,
        }
        if self.tls and self.cert_path is not None:
            body["caCertificatePath"] = str(self.cert_path)
        body.update(overrides)
        return body

    def pypsrp_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for pypsrp.wsman.WSMan that reach this host."""
        kwargs: dict[str, Any] = {
            "server": "127.0.0.1",
            "port": self.port,
            "ssl": self.tls,
            "auth": self.auth,
            "username": self.username,
            "password": self.password,
        }
        if self.tls:
            kwargs["cert_validation"] = str(self.cert_path)
        return kwargs

    # --- faults -----------------------------------------------------------------------------------
    def inject(self, action: str, kind: str, count: int = 1) -> None:
        """Fail the next ``count`` requests of a WSMan action (Create, Command, Send, Receive, Signal,
        Delete, Get, or ``*``): ``401``, ``500`` (WSManFault), ``reset`` (TCP RST), ``hang`` (never
        answers), ``broken`` (the runspace pool goes Broken)."""
        self.server.inject(action, kind, count)

    def clear_faults(self) -> None:
        self.server.clear_faults()
        self.reset_after.clear()


class FakeFleet:
    """Several fake hosts with a common root directory (one sub-directory per host)."""

    def __init__(self, root: Path, count: int, **kwargs: Any) -> None:
        self.hosts = [FakeHost(Path(root) / f"host{i}", name=f"FAKEHOST{i}", **kwargs) for i in range(count)]

    def start(self) -> FakeFleet:
        for h in self.hosts:
            h.start()
        return self

    def stop(self) -> None:
        for h in self.hosts:
            h.stop()

    def __enter__(self) -> FakeFleet:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def make_package(
    handler_name: str,
    version: str,
    behaviour: dict[str, Any] | None = None,
    report_heartbeat: bool = False,
    update_mode: str | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> bytes:
    """A test extension package: a zip with HandlerManifest.json (+ the fake host's behaviour file)."""
    import io
    import json
    import zipfile

    manifest: dict[str, Any] = {
        "installCommand": "install.cmd",
        "uninstallCommand": "uninstall.cmd",
        "updateCommand": "update.cmd",
        "enableCommand": "enable.cmd",
        "disableCommand": "disable.cmd",
        "rebootAfterInstall": False,
        "reportHeartbeat": report_heartbeat,
    }
    if update_mode:
        manifest["updateMode"] = update_mode
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "HandlerManifest.json",
            json.dumps([{"name": handler_name, "version": version, "handlerManifest": manifest}]),
        )
        for cmd in ("install", "uninstall", "update", "enable", "disable"):
            zf.writestr(f"{cmd}.cmd", f"@echo {cmd} {version}\r\n")
        if behaviour is not None:
            zf.writestr("fakehost-behaviour.json", json.dumps(behaviour))
        for name, data in (extra_files or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()
