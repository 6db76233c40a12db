"""Durability: every acknowledged write survives kill -9 of the server (`arcext serve` in a subprocess).

After the restart every acknowledged machine and extension is there, no extension stays in a
transitional provisioningState once operations settle, and every operation answered with 202
reports Succeeded. Both tests run on the embedded store and on PostgreSQL (``--database``): what they
check is the Store's promise (durable before acknowledged; start-up recovery finishes what was in
flight), not a file format. The embedded store's own crash cases (torn journal lines, failed
checkpoints, lost event-log tails) are in test_store.py, TinyDB only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from conftest import serve_environment
from pgdb import fresh_database

pytestmark = pytest.mark.slow

API = "2024-07-10"
SUB = "00000000-0000-0000-0000-0000000000d1"
RG = "rg-durable"
TRANSITIONAL = {"Creating", "Updating", "Deleting"}
LISTENING = re.compile(r"arcext listening on (https?://\S+)")
TOKEN_WRITTEN = re.compile(r"Owner token written to (\S+)")


class ServeProcess:
    """`arcext serve --port 0 --data-dir D [--database URL]` in a subprocess; output goes to files (never a
    full pipe)."""

    def __init__(self, data_dir: Path, log_dir: Path, generation: int, database_url: str | None = None) -> None:
        self.stdout_path = log_dir / f"serve-{generation}.out"
        self.stderr_path = log_dir / f"serve-{generation}.err"
        database = ["--database", database_url] if database_url else []
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "arcext.cli", "serve", "--port", "0", "--data-dir", str(data_dir), *database],
                stdout=out,
                stderr=err,
                env=serve_environment(PYTHONUNBUFFERED="1"),
            )
        self.url, self.token_path = self._wait_listening(timeout=30)

    def _wait_listening(self, timeout: float) -> tuple[str, Path | None]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text()
            found = LISTENING.search(text)
            if found:
                token = TOKEN_WRITTEN.search(text)
                return found.group(1), Path(token.group(1)) if token else None
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(
            f"arcext serve did not start: {self.stdout_path.read_text()}\n{self.stderr_path.read_text()[-3000:]}"
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@dataclass
class Acked:
    """Writes the server acknowledged (2xx), with the operation URL of every 202."""

    machines: set[str] = field(default_factory=set)
    extensions: set[tuple[str, str]] = field(default_factory=set)
    operations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def machine_path(machine: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.HybridCompute/machines/{machine}"


def extension_path(machine: str, ext: str) -> str:
    return f"{machine_path(machine)}/extensions/{ext}"


def put_pair(session: requests.Session, base: str, machine: str, ext: str, acked: Acked) -> None:
    """PUT a machine, then an extension on it; record each write the server acknowledged."""
    r = session.put(
        f"{base}{machine_path(machine)}",
        params={"api-version": API},
        json={"location": "westeurope", "tags": {"n": machine}, "properties": {"osName": "windows"}},
        timeout=10,
    )
    assert r.status_code in (200, 201), r.text
    with acked.lock:
        acked.machines.add(machine)
    r = session.put(
        f"{base}{extension_path(machine, ext)}",
        params={"api-version": API},
        json={
            "location": "westeurope",
            "properties": {
                "publisher": "Microsoft.Compute",
                "type": "CustomScriptExtension",
                "typeHandlerVersion": "1.10",
                "settings": {"commandToExecute": f"echo {machine}"},
                "protectedSettings": {"secret": machine},
            },
        },
        timeout=10,
    )
    assert r.status_code == 202, r.text
    with acked.lock:
        acked.extensions.add((machine, ext))
        acked.operations.append(r.headers["Azure-AsyncOperation"])


def rebase(url: str, base: str) -> str:
    """An operation URL from the previous run (old port) on the restarted server."""
    parts = urlsplit(url)
    return f"{base}{parts.path}?{parts.query}"


@pytest.fixture(params=["tinydb", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None: the embedded store in the data directory; else a PostgreSQL database of the test's own."""
    return fresh_database() if request.param == "postgres" else None


@pytest.fixture
def owner_session() -> Iterator[requests.Session]:
    session = requests.Session()
    yield session
    session.close()


def check_after_restart(server: ServeProcess, session: requests.Session, acked: Acked) -> None:
    base = server.url
    api = {"api-version": API}
    for machine in sorted(acked.machines):
        r = session.get(f"{base}{machine_path(machine)}", params=api, timeout=10)
        assert r.status_code == 200, f"acknowledged machine {machine} lost: {r.status_code} {r.text}"
    for machine, ext in sorted(acked.extensions):
        r = session.get(f"{base}{extension_path(machine, ext)}", params=api, timeout=10)
        assert r.status_code == 200, f"acknowledged extension {machine}/{ext} lost: {r.status_code} {r.text}"
        assert "protectedSettings" not in r.text

    # Every extension (acknowledged or not) on every acknowledged machine settles.
    deadline = time.monotonic() + 15
    while True:
        states: dict[str, str] = {}
        for machine in sorted(acked.machines):
            r = session.get(f"{base}{machine_path(machine)}/extensions", params=api, timeout=10)
            assert r.status_code == 200, r.text
            for item in r.json()["value"]:
                states[item["id"]] = item["properties"]["provisioningState"]
        stuck = {k: v for k, v in states.items() if v in TRANSITIONAL}
        if not stuck:
            break
        assert time.monotonic() < deadline, f"extensions left transitional after restart: {stuck}"
        time.sleep(0.2)
    assert all(v == "Succeeded" for v in states.values()), states

    for url in acked.operations:
        deadline = time.monotonic() + 10
        while True:
            r = session.get(rebase(url, base), timeout=10)
            assert r.status_code == 200, f"operation {url}: {r.status_code} {r.text}"
            status = r.json()["status"]
            if status != "InProgress":
                break
            assert time.monotonic() < deadline, f"operation {url} still InProgress"
            time.sleep(0.1)
        assert status == "Succeeded", r.text


def test_acknowledged_puts_survive_sigkill(
    tmp_path: Path, owner_session: requests.Session, database_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    server = ServeProcess(data_dir, tmp_path, 0, database_url)
    try:
        assert server.token_path is not None
        owner_session.headers["Authorization"] = f"Bearer {server.token_path.read_text().strip()}"
        acked = Acked()
        for i in range(100):
            put_pair(owner_session, server.url, f"m-{i:03d}", f"ext-{i:03d}", acked)
    finally:
        server.kill()  # right after the last acknowledged PUT
    assert len(acked.machines) == 100 and len(acked.extensions) == 100

    restarted = ServeProcess(data_dir, tmp_path, 1, database_url)
    try:
        check_after_restart(restarted, owner_session, acked)
    finally:
        restarted.kill()


def test_concurrent_puts_survive_sigkill_mid_flight(
    tmp_path: Path, owner_session: requests.Session, database_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    server = ServeProcess(data_dir, tmp_path, 0, database_url)
    acked = Acked()
    failures: list[BaseException] = []
    stop = threading.Event()
    assert server.token_path is not None
    token = server.token_path.read_text().strip()

    def writer(worker: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        try:
            i = 0
            while not stop.is_set():
                put_pair(session, server.url, f"w{worker}-m{i:04d}", "cse", acked)
                i += 1
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
            pass  # the server was killed under this request (or while sending its answer): never acknowledged
        except BaseException as exc:  # an unexpected answer while the server was alive
            if server.proc.poll() is None and not stop.is_set():
                failures.append(exc)
        finally:
            session.close()

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(6)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked.extensions) < 150 and time.monotonic() < deadline and not failures:
            time.sleep(0.05)
        server.kill()  # while the writers are sending
    finally:
        stop.set()
        server.kill()
        for t in threads:
            t.join(timeout=15)
    assert not failures, failures
    assert len(acked.extensions) >= 20, f"only {len(acked.extensions)} acknowledged extension PUTs"

    restarted = ServeProcess(data_dir, tmp_path, 1, database_url)
    try:
        owner_session.headers["Authorization"] = f"Bearer {token}"
        check_after_restart(restarted, owner_session, acked)
    finally:
        restarted.kill()
