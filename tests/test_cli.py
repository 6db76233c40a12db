"""The `arcext` command: token management and `serve` (a real subprocess)."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from click.testing import CliRunner

from arcext.cli import main

API = "2026-07-15"
SUB = "00000000-0000-0000-0000-000000000000"


def test_token_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(
        main,
        [
            "token",
            "create",
            "--data-dir",
            str(tmp_path),
            "--role",
            "reader",
            "--scope",
            f"/subscriptions/{SUB}/resourceGroups/rg1",
            "--name",
            "ci",
        ],
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("arcext_") and len(token) > 40
    listed = runner.invoke(main, ["token", "list", "--data-dir", str(tmp_path)])
    assert "ci\tReader\t/subscriptions/" in listed.stdout and token not in listed.stdout
    token_id = listed.stdout.split("\t")[0]
    assert runner.invoke(main, ["token", "revoke", "--data-dir", str(tmp_path), token_id]).exit_code == 0
    assert runner.invoke(main, ["token", "list", "--data-dir", str(tmp_path)]).stdout == ""
    missing = runner.invoke(main, ["token", "revoke", "--data-dir", str(tmp_path), token_id])
    assert missing.exit_code != 0 and "No token" in missing.output
    bad = runner.invoke(main, ["token", "create", "--data-dir", str(tmp_path), "--role", "Owner", "--scope", "/x"])
    assert bad.exit_code == 2 and "invalid scope" in bad.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_self_signed_prints_where_the_owner_token_is(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCEXT_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "arcext.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "d"),
            "--tls-self-signed",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while not any("listening on" in line for line in lines):
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        out = "".join(lines)
        match = re.search(r"Owner token written to (\S+)", out)
        assert match, out
        token_file = Path(match.group(1))
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert token not in out  # the token itself is never printed
        cert = tmp_path / "d" / "tls" / "cert.pem"
        with requests.Session() as s:
            s.trust_env = False
            r = s.get(
                f"https://127.0.0.1:{port}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/machines",
                params={"api-version": API},
                headers={"Authorization": f"Bearer {token}"},
                verify=str(cert),
            )
        assert r.status_code == 200 and r.json() == {"value": []}
        # a token created by the CLI while the server runs works at once
        created = subprocess.run(
            [
                sys.executable,
                "-m",
                "arcext.cli",
                "token",
                "create",
                "--data-dir",
                str(tmp_path / "d"),
                "--role",
                "Reader",
                "--scope",
                "/",
            ],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        reader = created.stdout.strip().splitlines()[-1]
        with requests.Session() as s:
            s.trust_env = False
            r = s.get(
                f"https://127.0.0.1:{port}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/machines",
                params={"api-version": API},
                headers={"Authorization": f"Bearer {reader}"},
                verify=str(cert),
            )
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0


def test_a_replacement_worker_leaves_quietly_while_the_database_is_away(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A worker that fails to boot makes gunicorn's master stop the node: a replacement worker (one that left, was
    killed or died) started while the database does not answer leaves at once with an ordinary failure instead (a
    half-started worker must not run jobs or lead), and the next one waits until 5 s after it, before it opens
    anything, so the tries do not come in a tight loop."""
    import psycopg

    from arcext import cli

    class Left(Exception):
        pass

    def refused(config: dict[str, object]) -> object:
        raise psycopg.OperationalError("connection failed: Connection refused")

    def leave(status: int) -> None:
        raise Left(status)

    slept: list[float] = []
    config = {"ARCEXT_DATABASE_URL": "postgresql://x", "ARCEXT_DATA_DIR": str(tmp_path)}
    monkeypatch.setattr("arcext.app.create_app", refused)
    monkeypatch.setattr(cli.os, "_exit", leave)
    monkeypatch.setattr(cli.logging, "shutdown", lambda: None)  # (the test's own log handlers stay)
    monkeypatch.setattr(cli, "time", SimpleNamespace(time=time.time, sleep=slept.append))  # (cli's, not everyone's)
    with caplog.at_level(logging.WARNING, logger="arcext.cli"), pytest.raises(Left) as left:
        cli.ServedSettings._create_app_or_leave(config)
    assert left.value.args == (1,) and slept == []  # the first one: at once, no pause
    assert [r.getMessage() for r in caplog.records] == [
        "This new worker cannot open the database (OperationalError); it leaves and the master starts another"
    ]
    with pytest.raises(Left):  # the next one, a moment later: waits first
        cli.ServedSettings._create_app_or_leave(config)
    assert len(slept) == 1 and 4 < slept[0] <= cli.REOPEN_SECONDS

    def broken(config: dict[str, object]) -> object:
        raise ValueError("not the database")

    monkeypatch.setattr("arcext.app.create_app", broken)
    with pytest.raises(ValueError):  # anything else fails the worker's boot as before
        cli.ServedSettings._create_app_or_leave(config)
    built = object()
    monkeypatch.setattr("arcext.app.create_app", lambda config: built)
    assert cli.ServedSettings._create_app_or_leave(config) is built
    assert list(tmp_path.glob(f"{cli.LEFT_MARK}*")) == []  # the database answered: the next one need not wait


def test_serve_and_token_read_their_settings_from_the_environment_too(tmp_path: Path) -> None:
    """ARCEXT_DATA_DIR, ARCEXT_PUBLIC_URL, ARCEXT_MANUAL_CLOCK and ARCEXT_SIMULATE do what their flags do."""
    data_dir = tmp_path / "from-env"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCEXT_")} | {
        "ARCEXT_DATA_DIR": str(data_dir),
        "ARCEXT_PUBLIC_URL": "https://arc.example.test",
        "ARCEXT_MANUAL_CLOCK": "1",
        "ARCEXT_SIMULATE": "true",
        "PYTHONUNBUFFERED": "1",
    }
    created = CliRunner().invoke(main, ["token", "create", "--role", "Owner", "--scope", "/"], env=env)
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    out_path = tmp_path / "serve.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "arcext.cli", "serve", "--port", str(_free_port())], stdout=out, env=env
        )
    try:
        deadline = time.monotonic() + 30
        while not (listening := re.search(r"arcext listening on (\S+) \(data in (\S+)\)", out_path.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, out_path.read_text()
            time.sleep(0.05)
        assert Path(listening.group(2)) == data_dir.resolve()
        assert "Public URL (for absolute URLs in responses): https://arc.example.test" in out_path.read_text()
        with requests.Session() as s:
            s.trust_env = False
            s.headers["Authorization"] = f"Bearer {token}"  # made in the same data directory
            advanced = s.post(f"{listening.group(1)}/arcext/v1/clock/advance", json={"seconds": 60})
            assert advanced.status_code == 200, advanced.text  # the manual clock
            body = {"location": "eastus", "properties": {"osType": "windows"}}
            machine = f"{listening.group(1)}/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.HybridCompute"
            r = s.put(f"{machine}/machines/m1", params={"api-version": API}, json=body)
            assert r.status_code in (200, 201), r.text
            ext = {"location": "eastus", "properties": {"publisher": "Microsoft.Azure.Monitor"}}
            ext["properties"] |= {"type": "AzureMonitorWindowsAgent", "typeHandlerVersion": "1.0.0"}
            r = s.put(f"{machine}/machines/m1/extensions/ama", params={"api-version": API}, json=ext)
            assert r.status_code in (201, 202), r.text
            assert r.headers["Azure-AsyncOperation"].startswith("https://arc.example.test/")
            deadline = time.monotonic() + 20
            while s.get(f"{machine}/machines/m1/extensions/ama", params={"api-version": API}).json()["properties"][
                "provisioningState"
            ] not in ("Succeeded", "Failed"):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            state = s.get(f"{machine}/machines/m1/extensions/ama", params={"api-version": API}).json()
            assert state["properties"]["provisioningState"] == "Succeeded", state  # a simulated host installed it
    finally:
        proc.terminate()
        proc.wait(timeout=30)
