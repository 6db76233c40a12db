"""The fake hosts as their own process (``python -m arcext.testing.fakehost``): state survives a restart."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from arcext.crypto import SecretBox
from arcext.hosts import connections
from arcext.hosts.base import ExtensionSpec
from arcext.hosts.packages import PackageStore
from arcext.hosts.psrp import DriverTuning, PsrpDriver
from arcext.testing.fakehost import WindowsMachine, make_package

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(state: Path, port: int) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "arcext.testing.fakehost",
            "--hosts",
            "1",
            "--state-dir",
            str(state),
            "--base-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, json.loads(line)["hostConnection"]


def test_state_survives_a_restart_of_the_fake_host_process(tmp_path: Path) -> None:
    port = _free_port()
    box = SecretBox.from_data_dir(tmp_path / "data")
    store = PackageStore(tmp_path / "data" / "packages")
    store.put("Contoso.Fake", "Agent", "1.0.0", make_package("Contoso.Fake.Agent", "1.0.0"), datetime.now(UTC))
    proc, body = _start(tmp_path / "hosts", port)
    try:
        public, secrets = connections.validate(dict(body))
        conn = connections.load({**public, "credentials": box.seal(secrets)}, box)
        d = PsrpDriver("m1", conn, store, tuning=DriverTuning(status_poll_s=0.1))
        d.install(ExtensionSpec("agent", "Contoso.Fake", "Agent", {"k": "v"}), "1.0.0")
        d.close()
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
    proc, body = _start(tmp_path / "hosts", port)
    try:
        d = PsrpDriver("m1", conn, store, {"agent": "Contoso.Fake.Agent"}, DriverTuning(status_poll_s=0.1))
        installed = d.installed("agent")
        d.close()
        assert installed is not None and (installed.version, installed.state) == ("1.0.0", "enabled")
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
    model = WindowsMachine(tmp_path / "hosts" / "host0" / "disk")
    assert model.versions("Contoso.Fake.Agent") == {"1.0.0": "Enabled"}
    assert model.commands("Contoso.Fake.Agent") == [("1.0.0", "install"), ("1.0.0", "enable")]
