"""Long-running operations on several nodes sharing one PostgreSQL database: one node runs each operation.

A node starting while another runs an operation leaves it to that node; an operation whose node was killed is
finished by another node within the bound (two looks ``ARCEXT_OPERATION_SWEEP`` apart), and the host's work is
done once; a node whose lock connection broke takes its claims again before another node may; a write that a
node gone left without its record is found by another node's sweep and finished. docs/multinode.md,
"Long-running operations across nodes". Skipped without PostgreSQL.

Servers in this process (``ArcextServer``, data directories of their own, one key file) on a scratch database
each, with simulated hosts in the database; the killed node is a process (tests/test_multinode.py's ``Node``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from arcext.ids import MachineKey
from arcext.store.base import MachineDoc
from arcext.store.postgres import provision
from arcext.testing import ArcextServer
from conftest import API, SUB
from pgdb import skip_reason
from test_multinode import Node

pytestmark = pytest.mark.slow

PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
SWEEP = 0.25  # ARCEXT_OPERATION_SWEEP of the servers in this process (orphan scans every 12 sweeps: 3 s)
CONFIG = {"ARCEXT_OPERATION_SWEEP": SWEEP, "ARCEXT_LEADER_POLL": 0.5}


@pytest.fixture
def database() -> Iterator[str]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(f"multi-node tests need PostgreSQL: {reason}")
    url = provision.create("arcext_opn")
    yield url
    provision.drop(url)


def server(root: Path, name: str, database: str) -> ArcextServer:
    """A node in ``root/name`` (the key file copied from ``root/a``, the first node's)."""
    directory = root / name
    if name != "a":
        directory.mkdir()
        shutil.copy2(root / "a" / "secret.key", directory / "secret.key")
    return ArcextServer(directory, simulate=True, database_url=database, config=CONFIG).start()


def session(token: str) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def extension_body() -> dict[str, Any]:
    return {"location": "eastus", "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0.0"}}


def put_machine(s: requests.Session, base: str, m: str) -> None:
    r = s.put(
        f"{base}/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/{m}",
        params={"api-version": API},
        json={"location": "eastus"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text


def ext_path(m: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/{m}/extensions/ama"


def state(s: requests.Session, base: str, m: str) -> str:
    r = s.get(base + ext_path(m), params={"api-version": API}, timeout=30)
    assert r.status_code == 200, r.text
    value: str = r.json()["properties"]["provisioningState"]
    return value


def operation_status(s: requests.Session, base: str, async_url: str) -> dict[str, Any]:
    """The operation's status read on the node at ``base`` (the URL names the node that answered the write)."""
    path = async_url.split("/subscriptions/", 1)[1]
    r = s.get(f"{base}/subscriptions/{path}", timeout=30)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def installs(s: requests.Session, base: str, m: str) -> int:
    """How often the simulated host ran the extension's install command."""
    r = s.get(f"{base}/arcext/v1/simulated-hosts/{m}", params={"resourceGroup": "rg1"}, timeout=30)
    assert r.status_code == 200, r.text
    hosts = r.json()["hosts"]
    return sum(1 for h in hosts for c in h["commands"] if c["command"] == "install" and c["extension"] == "ama")


def wait_terminal(s: requests.Session, base: str, m: str, timeout: float) -> tuple[str, float]:
    start = time.monotonic()
    while True:
        now = state(s, base, m)
        if now not in ("Creating", "Updating", "Deleting"):
            return now, time.monotonic() - start
        if time.monotonic() - start > timeout:
            return now, time.monotonic() - start
        time.sleep(0.05)


def test_a_node_starting_while_another_runs_an_operation_leaves_it_to_that_node(tmp_path: Path, database: str) -> None:
    a = server(tmp_path, "a", database)
    b: ArcextServer | None = None
    s = session(a.token)
    try:
        put_machine(s, a.url, "m1")
        with a.hold_operations():  # a has taken the operation and holds it in flight
            r = s.put(a.url + ext_path("m1"), params={"api-version": API}, json=extension_body(), timeout=30)
            assert r.status_code == 201 or r.status_code == 202, r.text
            async_url = r.headers["Azure-AsyncOperation"]
            b = server(tmp_path, "b", database)  # its start-up resumes what no node holds, then it sweeps
            time.sleep(4 * SWEEP + 0.5)
            assert state(s, b.url, "m1") == "Creating"
            assert operation_status(s, b.url, async_url)["status"] == "InProgress"
            assert installs(s, b.url, "m1") == 0
        assert a.wait_for_operations(20)
        assert operation_status(s, b.url, async_url)["status"] == "Succeeded"
        assert state(s, b.url, "m1") == "Succeeded"
        time.sleep(4 * SWEEP)  # b's sweeps, had they taken it, would have run it again
        assert installs(s, b.url, "m1") == 1
    finally:
        s.close()
        if b is not None:
            b.stop()
        a.stop()


def test_a_node_whose_lock_connection_broke_takes_its_operations_again_before_another_node_may(
    tmp_path: Path, database: str
) -> None:
    a = server(tmp_path, "a", database)
    b = server(tmp_path, "b", database)
    s = session(a.token)
    try:
        put_machine(s, a.url, "m2")
        claims: Any = a.services.resources.claims
        with a.hold_operations():
            r = s.put(a.url + ext_path("m2"), params={"api-version": API}, json=extension_body(), timeout=30)
            assert r.status_code in (201, 202), r.text
            async_url = r.headers["Azure-AsyncOperation"]
            (op_id,) = claims.held()
            pid = claims.backend_pid()
            with psycopg.connect(database, autocommit=True) as conn:  # the session ends: its locks are free
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            time.sleep(4 * SWEEP + 0.5)
            assert claims.backend_pid() not in (None, pid)  # a reconnected and took the claim again
            assert claims.held() == {op_id} and claims.lost == 0
            assert state(s, b.url, "m2") == "Creating"
            assert installs(s, b.url, "m2") == 0
        assert a.wait_for_operations(20)
        assert operation_status(s, b.url, async_url)["status"] == "Succeeded"
        time.sleep(4 * SWEEP)
        assert installs(s, b.url, "m2") == 1
        assert claims.held() == set()
    finally:
        s.close()
        b.stop()
        a.stop()


def test_a_write_a_node_gone_left_without_its_record_is_finished_by_another_node(tmp_path: Path, database: str) -> None:
    b = server(tmp_path, "a", database)
    s = session(b.token)
    try:
        put_machine(s, b.url, "m3")
        key = MachineKey(SUB.lower(), "rg1", "m3")
        orphan = "0f0f0f0f-0000-4000-8000-00000000d1ed"

        def half_made(doc: MachineDoc | None) -> tuple[MachineDoc, None]:
            # what a node leaves when it dies between a write's two steps: the extension names its operation
            assert doc is not None
            ext_id = doc["machine"]["id"] + "/extensions/ama"
            props = {**extension_body()["properties"], "provisioningState": "Creating"}
            resource = {
                "id": ext_id,
                "name": "ama",
                "type": "Microsoft.HybridCompute/machines/extensions",
                "location": "eastus",
                "properties": props,
            }
            doc["extensions"]["ama"] = {"resource": resource, "protected": None, "operation": orphan}
            return doc, None

        b.services.store.mutate_machine(key, half_made)
        start = time.monotonic()
        final, _ = wait_terminal(s, b.url, "m3", timeout=12 * SWEEP + 4 * SWEEP + 10)
        elapsed = time.monotonic() - start
        assert final == "Succeeded", final
        assert elapsed <= 12 * SWEEP + 2 * SWEEP + 5  # a scan of the machines, two looks, the run; noise
        op = b.services.store.get_operation(orphan)
        assert op is not None and op["status"] == "Succeeded" and op["initiatedBy"] == "arcext"
        assert installs(s, b.url, "m3") == 1
    finally:
        s.close()
        b.stop()


NODE_SWEEP = 0.5  # ARCEXT_OPERATION_SWEEP of the node processes
LATENCY_MS = 2500  # the host's answer is this slow: the node is killed while the install waits for it


def test_an_operation_of_a_killed_node_is_finished_by_another_node_within_the_bound(
    tmp_path: Path, database: str
) -> None:
    env = {"PYTHONUNBUFFERED": "1", "ARCEXT_OPERATION_SWEEP": str(NODE_SWEEP), "ARCEXT_LEADER_POLL": "0.5"}
    a = Node("a", tmp_path / "a", database, env)
    nodes = [a]
    try:
        a.wait_listening()
        assert a.token_path is not None
        s = session(a.token_path.read_text().strip())
        (tmp_path / "b").mkdir()
        shutil.copy2(tmp_path / "a" / "secret.key", tmp_path / "b" / "secret.key")
        b = Node("b", tmp_path / "b", database, env)
        nodes.append(b)
        b.wait_listening()
        put_machine(s, a.url, "m4")
        r = s.put(f"{a.url}/arcext/v1/simulated-hosts/m4/faults", json={"latencyMs": LATENCY_MS}, timeout=30)
        assert r.status_code == 200, r.text
        r = s.put(a.url + ext_path("m4"), params={"api-version": API}, json=extension_body(), timeout=30)
        assert r.status_code in (201, 202), r.text
        async_url = r.headers["Azure-AsyncOperation"]
        time.sleep(0.5)  # a runs it: the install waits for the slow host
        assert state(s, b.url, "m4") == "Creating"
        a.kill()
        killed = time.monotonic()
        final, _ = wait_terminal(s, b.url, "m4", timeout=30)
        took = time.monotonic() - killed
        assert final == "Succeeded", final
        # two looks a sweep apart, then the install (the slow host) and this machine's noise (2 cores, shared)
        assert took <= 2 * NODE_SWEEP + LATENCY_MS / 1000 + 3, took
        body = operation_status(s, b.url, async_url)
        assert body["status"] == "Succeeded", body
        assert installs(s, b.url, "m4") == 1
        print(f"take-over of a killed node's operation: {took:.2f} s after SIGKILL (host latency {LATENCY_MS} ms)")
    finally:
        for node in nodes:
            node.stop()
