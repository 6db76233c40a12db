"""Several `arcext serve --database URL` nodes on one PostgreSQL database behave as one service.

Three server processes (127.0.0.1, ports of their own, data directories sharing one key file) on one
scratch database, with a manual clock and simulated hosts: writes and reads across nodes, 409s across
nodes, operations and tokens, a 100-machine rollout whose jobs every node runs, and SIGKILL of the
leader and of a node holding jobs mid-rollout. Skipped without PostgreSQL (scripts/start-postgres).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from arcext.store.postgres import provision
from conftest import serve_environment
from pgdb import skip_reason
from sshd import make_package

pytestmark = pytest.mark.slow

API = "2026-07-15"
SUB = "00000000-0000-0000-0000-00000000c105"
PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
UPGRADE_OPERATION = "Microsoft.HybridCompute/machines/upgradeExtensions/action"
LISTENING = re.compile(r"arcext listening on (https?://\S+)")
TOKEN_WRITTEN = re.compile(r"Owner token written to (\S+)")
WEEK = 7 * 86400
LEADER_POLL = 1.0  # ARCEXT_LEADER_POLL: a follower's tries at the leadership lock
JOB_LEASE = 3.0  # ARCEXT_JOB_LEASE: a killed node's jobs are taken over after this
#: the bound on a leader's take-over after the leader's process died: a follower's next try (LEADER_POLL) plus
#: the new leader's recover() and this machine's scheduling noise (2 cores shared with other work)
LEADER_BOUND = LEADER_POLL + 2.0


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(f"multi-node tests need PostgreSQL: {reason}")
    url = provision.create("arcext_mn")
    yield url
    provision.drop(url)


class Node:
    """One `arcext serve --database URL --manual-clock --simulate` process."""

    def __init__(self, name: str, data_dir: Path, database: str, env: dict[str, str]) -> None:
        self.name = name
        self.data_dir = data_dir
        self.out = data_dir.parent / f"{name}.out"
        self.err = data_dir.parent / f"{name}.err"
        command = [sys.executable, "-m", "arcext.cli", "serve", "--port", "0", "--data-dir", str(data_dir)]
        command += ["--database", database, "--manual-clock", "--simulate"]
        with open(self.out, "ab") as out, open(self.err, "ab") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, env=serve_environment(**env))
        self.url = ""
        self.token_path: Path | None = None

    def wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out.read_text()
            found = LISTENING.search(text)
            if found:
                self.url = found.group(1)
                token = TOKEN_WRITTEN.search(text)
                self.token_path = Path(token.group(1)) if token else None
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"{self.name} did not start:\n{self.err.read_text()[-3000:]}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class Cluster:
    def __init__(self, root: Path, database: str, latency_ms: int) -> None:
        self.root = root
        self.database = database
        self.env = {
            "PYTHONUNBUFFERED": "1",
            "ARCEXT_LEADER_POLL": str(LEADER_POLL),
            "ARCEXT_JOB_LEASE": str(JOB_LEASE),
            "ARCEXT_SIM_LATENCY_MS": str(latency_ms),
            "ARCEXT_UPGRADE_CONCURRENCY": "4",
            "ARCEXT_ENGINE_TICK": "0.2",
        }
        first = self._node("a")
        first.wait_listening()
        assert first.token_path is not None
        self.token = first.token_path.read_text().strip()
        self.nodes = [first]
        for name in ("b", "c"):  # each its own data directory, the key file shared (a copy of the first's)
            (root / name).mkdir()
            shutil.copy2(root / "a" / "secret.key", root / name / "secret.key")
            self.nodes.append(self._node(name))
        for node in self.nodes[1:]:
            node.wait_listening()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def _node(self, name: str) -> Node:
        return Node(name, self.root / name, self.database, self.env)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def view(self, node: Node) -> dict[str, Any]:
        r = self.session.get(f"{node.url}/arcext/v1/cluster", timeout=10)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def leader(self, timeout: float = 15) -> Node:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.alive():
                if self.view(node)["leader"]:
                    return node
            time.sleep(0.05)
        raise AssertionError("no leader")

    def followers(self) -> list[Node]:
        leader = self.leader()
        return [n for n in self.alive() if n is not leader]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Cluster]:
    made = Cluster(tmp_path_factory.mktemp("cluster"), database, latency_ms=10)
    yield made
    made.close()


# --- helpers -------------------------------------------------------------------------------------
def machine_path(name: str, rg: str = "rg1") -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{name}"


def put_machine(s: requests.Session, node: Node, name: str, location: str = "eastus", rg: str = "rg1") -> None:
    r = s.put(f"{node.url}{machine_path(name, rg)}", params={"api-version": API}, json={"location": location})
    assert r.status_code in (200, 201), r.text


def extension_body(m: str, version: str = "1.0.0") -> dict[str, Any]:
    return {
        "location": "eastus",
        "properties": {
            "publisher": PUB,
            "type": TYPE,
            "typeHandlerVersion": version,
            "settings": {"workspaceId": f"ws-{m}"},
            "protectedSettings": {"workspaceKey": f"key-{m}"},
        },
    }


def put_extension(s: requests.Session, node: Node, m: str, rg: str = "rg1") -> requests.Response:
    return s.put(f"{node.url}{machine_path(m, rg)}/extensions/ama", params={"api-version": API}, json=extension_body(m))


def rebase(url: str, node: Node) -> str:
    parts = urlsplit(url)
    return f"{node.url}{parts.path}?{parts.query}"


def wait_operation(s: requests.Session, url: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = s.get(url, timeout=10)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] != "InProgress":
            return body
        assert time.monotonic() < deadline, f"operation still InProgress after {timeout}s: {body}"
        time.sleep(0.05)


def get_extension(s: requests.Session, node: Node, m: str, rg: str = "rg1") -> dict[str, Any]:
    r = s.get(f"{node.url}{machine_path(m, rg)}/extensions/ama", params={"api-version": API}, timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def fleet(s: requests.Session, nodes: list[Node], count: int, rg: str) -> None:
    """``count`` machines with the extension installed, the requests spread over the nodes."""

    def one(i: int) -> None:
        node = nodes[i % len(nodes)]
        put_machine(s, node, f"m{i:03d}", ["eastus", "westus"][i % 2], rg)
        r = put_extension(s, node, f"m{i:03d}", rg)
        assert r.status_code == 202, r.text
        assert wait_operation(s, r.headers["Azure-AsyncOperation"])["status"] == "Succeeded"

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def publish(s: requests.Session, node: Node, version: str) -> dict[str, Any]:
    r = s.put(f"{node.url}/arcext/v1/catalog/{PUB}/{TYPE}/versions/{version}", json={"critical": False}, timeout=30)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def advance(s: requests.Session, node: Node, seconds: float) -> str:
    r = s.post(f"{node.url}/arcext/v1/clock/advance", json={"seconds": seconds}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["now"])


def run(s: requests.Session, node: Node, timeout: float = 120) -> requests.Response:
    return s.post(f"{node.url}/arcext/v1/engine/run", timeout=timeout)


def events(s: requests.Session, node: Node) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    url: str | None = f"{node.url}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values"
    params: dict[str, str] | None = {"api-version": "2015-04-01", "$filter": "eventTimestamp ge '2000-01-01T00:00:00Z'"}
    while url:
        r = s.get(url, params=params, timeout=30)
        assert r.status_code == 200, r.text
        found += r.json()["value"]
        url, params = r.json().get("nextLink"), None
    return found


def upgrade_events(s: requests.Session, node: Node, rg: str) -> dict[tuple[str, str], list[str]]:
    """Per upgrade attempt (machine name, operation id) that has a Started event: the statuses the log holds."""
    attempts: dict[tuple[str, str], list[str]] = {}
    for event in events(s, node):
        if event["resourceGroupName"].lower() != rg or event["operationName"]["value"] != UPGRADE_OPERATION:
            continue
        machine = event["resourceId"].split("/machines/")[1].split("/")[0]
        attempts.setdefault((machine, event["operationId"]), []).append(event["status"]["value"])
    return {attempt: statuses for attempt, statuses in attempts.items() if "Started" in statuses}


def host_upgrades(s: requests.Session, node: Node, m: str, rg: str, version: str) -> int:
    """How often the simulated host ran the handler's update command to ``version``."""
    r = s.get(f"{node.url}/arcext/v1/simulated-hosts/{m}", params={"resourceGroup": rg}, timeout=10)
    assert r.status_code == 200, r.text
    (host,) = r.json()["hosts"]
    return sum(1 for c in host["commands"] if c["command"] == "update" and c["version"] == version)


def rollout_of(s: requests.Session, node: Node, rollout_id: str) -> dict[str, Any]:
    r = s.get(f"{node.url}/arcext/v1/rollouts/{rollout_id}", timeout=30)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# --- one service -----------------------------------------------------------------------------------
def test_a_write_on_one_node_is_read_on_the_others(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    s = cluster.session
    put_machine(s, a, "shared-1", rg="rg-rw")
    r = s.patch(f"{b.url}{machine_path('shared-1', 'rg-rw')}", params={"api-version": API}, json={"tags": {"k": "b"}})
    assert r.status_code == 200, r.text
    r = s.get(f"{c.url}{machine_path('shared-1', 'rg-rw')}", params={"api-version": API})
    assert r.status_code == 200 and r.json()["tags"] == {"k": "b"}


def test_a_package_put_through_one_node_is_read_through_another(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    s = cluster.session
    url = "/arcext/v1/catalog/Contoso/Agent/versions/4.0.0/package"
    data = make_package("Contoso.Agent", "4.0.0")
    r = s.put(f"{a.url}{url}", data=data, headers={"Content-Type": "application/zip"})
    assert r.status_code == 201, r.text
    for node in (b, c):
        got = s.get(f"{node.url}{url}")
        assert got.status_code == 200 and got.json() == r.json()
    assert s.delete(f"{c.url}{url}").status_code == 200
    assert s.get(f"{a.url}{url}").status_code == 404


def test_another_operation_in_progress_holds_across_nodes_and_operations_poll_anywhere(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    s = cluster.session
    put_machine(s, a, "busy-1", rg="rg-409")
    r = s.put(f"{b.url}/arcext/v1/simulated-hosts/busy-1/faults", json={"latencyMs": 1500})
    assert r.status_code == 200, r.text
    started = put_extension(s, a, "busy-1", "rg-409")
    assert started.status_code == 202, started.text
    second = put_extension(s, c, "busy-1", "rg-409")
    assert second.status_code == 409 and second.json()["error"]["code"] == "AnotherOperationInProgress", second.text
    done = wait_operation(s, rebase(started.headers["Azure-AsyncOperation"], b))
    assert done["status"] == "Succeeded"
    assert get_extension(s, c, "busy-1", "rg-409")["properties"]["provisioningState"] == "Succeeded"
    s.put(f"{a.url}/arcext/v1/simulated-hosts/busy-1/faults", json={})


def test_a_token_revoked_on_one_node_is_refused_by_every_node(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    made = subprocess.run(
        [sys.executable, "-m", "arcext.cli", "token", "create", "--role", "Reader", "--scope", "/"]
        + ["--database", cluster.database, "--data-dir", str(a.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    token = made.stdout.strip().splitlines()[-1]
    token_id = re.search(r"Created token (\S+)", made.stderr)
    assert token_id is not None
    reader = {"Authorization": f"Bearer {token}"}
    path = f"/subscriptions/{SUB}/providers/Microsoft.HybridCompute/machines"
    for node in (a, b, c):
        assert requests.get(f"{node.url}{path}", params={"api-version": API}, headers=reader).status_code == 200
    subprocess.run(
        [sys.executable, "-m", "arcext.cli", "token", "revoke", token_id.group(1)]
        + ["--database", cluster.database, "--data-dir", str(b.data_dir)],
        capture_output=True,
        check=True,
    )
    for node in (a, b, c):
        assert requests.get(f"{node.url}{path}", params={"api-version": API}, headers=reader).status_code == 401


def test_one_clock_for_every_node(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    s = cluster.session
    moved = advance(s, b, 60)
    for node in (a, c):
        assert s.get(f"{node.url}/arcext/v1/clock").json() == {"now": moved, "manual": True}


def test_a_rollout_of_100_machines_shares_the_jobs_among_the_nodes(cluster: Cluster) -> None:
    s = cluster.session
    nodes = cluster.nodes
    fleet(s, nodes, 100, "rg-roll")
    before = {n.name: cluster.view(n)["jobsRun"] for n in nodes}
    rollout = publish(s, nodes[1], "1.1.0")
    advance(s, nodes[2], 8 * WEEK)
    follower = cluster.followers()[0]
    r = run(s, follower)  # on a follower: forwarded to the leader, which runs what is due fleet-wide
    assert r.status_code == 200, r.text
    assert r.json()["succeeded"] >= 100 and r.json()["rolledBack"] == 0
    ran = {n.name: cluster.view(n)["jobsRun"] - before[n.name] for n in nodes}
    assert all(count > 0 for count in ran.values()), f"every node runs jobs: {ran}"
    assert sum(ran.values()) >= 100
    assert rollout_of(s, nodes[0], rollout["rolloutId"])["state"] == "Completed"
    for i in range(100):
        props = get_extension(s, nodes[i % 3], f"m{i:03d}", "rg-roll")["properties"]
        assert props["typeHandlerVersion"] == "1.1.0" and props["provisioningState"] == "Succeeded"
    upgrades = [host_upgrades(s, nodes[i % 3], f"m{i:03d}", "rg-roll", "1.1.0") for i in range(100)]
    assert upgrades == [1] * 100, "no extension is upgraded twice"
    attempts = upgrade_events(s, nodes[0], "rg-roll")
    assert len(attempts) == 100
    for statuses in attempts.values():
        assert statuses.count("Started") == 1 and statuses.count("Succeeded") == 1, statuses


def test_a_follower_s_views_show_a_change_made_through_the_leader_on_the_next_request(cluster: Cluster) -> None:
    """The pending view and the rollouts view of every follower, and its metrics, read the rollouts from the
    store: a version published and a rollout paused through the leader show at once, with no engine call
    forwarded to the leader for any of those reads. (The Linux agent: the other tests' rollouts stay apart.)"""
    s = cluster.session
    leader = cluster.leader()
    followers = cluster.followers()
    linux = "AzureMonitorLinuxAgent"
    put_machine(s, followers[0], "views-1", rg="rg-views")
    body = extension_body("views-1")
    body["properties"]["type"] = linux
    r = s.put(
        f"{followers[0].url}{machine_path('views-1', 'rg-views')}/extensions/ama",
        params={"api-version": API},
        json=body,
    )
    assert r.status_code == 202, r.text
    assert wait_operation(s, r.headers["Azure-AsyncOperation"])["status"] == "Succeeded"
    pending_url = f"/arcext/v1/subscriptions/{SUB}/resourceGroups/rg-views/machines/views-1/pending"

    def pending_on(node: Node) -> dict[str, Any]:
        r = s.get(f"{node.url}{pending_url}", timeout=10)
        assert r.status_code == 200, r.text
        item: dict[str, Any] = r.json()["extensions"][0]
        return item

    for node in followers:
        assert pending_on(node)["state"] != "Scheduled"
    r = s.put(f"{leader.url}/arcext/v1/catalog/{PUB}/{linux}/versions/1.3.0", json={"critical": False}, timeout=30)
    assert r.status_code == 201, r.text
    rollout_id = r.json()["rolloutId"]
    for node in followers:
        item = pending_on(node)
        assert (item["state"], item["rolloutId"]) == ("Scheduled", rollout_id), (node.name, item)
    r = s.post(f"{leader.url}/arcext/v1/rollouts/{rollout_id}/pause", timeout=30)
    assert r.status_code == 200, r.text
    with psycopg.connect(cluster.database, autocommit=True) as conn:

        def forwarded() -> int:
            row = conn.execute("SELECT last_value FROM engine_calls_id_seq").fetchone()
            assert row is not None
            return int(row[0])

        before = forwarded()
        for node in followers:
            assert pending_on(node)["state"] == "Held", node.name
            assert rollout_of(s, node, rollout_id)["state"] == "Paused", node.name
            scrape = s.get(f"{node.url}/metrics", timeout=10)
            assert scrape.status_code == 200 and 'arcext_rollouts{state="Paused"} 1.0' in scrape.text, node.name
        assert forwarded() == before, "a follower's views and metrics forward nothing to the leader"


# --- nodes dying -----------------------------------------------------------------------------------
def test_sigkill_of_the_leader_and_of_a_node_running_jobs_mid_rollout(
    tmp_path: Path, database: str, cluster: Cluster
) -> None:
    """A fresh three-node cluster on a database of its own (the module's cluster stops first: two cores)."""
    cluster.close()
    own = provision.create("arcext_mn")
    fresh = Cluster(tmp_path, own, latency_ms=150)
    try:
        s = fresh.session
        fleet(s, fresh.nodes, 60, "rg-kill")
        rollout = publish(s, fresh.nodes[0], "1.1.0")
        advance(s, fresh.nodes[0], 8 * WEEK)
        leader = fresh.leader()
        follower, other = fresh.followers()
        first_run: dict[str, Any] = {}
        runner = threading.Thread(target=lambda: first_run.setdefault("r", run(s, other)), daemon=True)
        runner.start()
        # a node holding jobs: SIGKILL while it runs some (its leases expire; another node reconciles them)
        deadline = time.monotonic() + 20
        while fresh.view(follower)["jobsRunning"] == 0:
            assert time.monotonic() < deadline, "the follower never ran a job"
            time.sleep(0.02)
        follower.kill()
        time.sleep(0.3)
        killed_at = time.monotonic()
        leader.kill()  # mid-rollout
        new_leader = fresh.leader(timeout=10)
        took_over = time.monotonic() - killed_at
        assert new_leader is other
        assert took_over <= LEADER_BOUND, f"a new leader after {took_over:.2f}s (bound {LEADER_BOUND}s)"
        runner.join(timeout=60)
        # the run on the killed leader ended with it (503 from the follower that forwarded it): run again
        assert first_run["r"].status_code in (200, 503)
        deadline = time.monotonic() + 60
        while True:
            r = run(s, other)
            assert r.status_code == 200, r.text
            if rollout_of(s, other, rollout["rolloutId"])["state"] == "Completed":
                break
            assert time.monotonic() < deadline, rollout_of(s, other, rollout["rolloutId"])
            advance(s, other, 3600)  # a job put back for a retry
        for i in range(60):
            props = get_extension(s, other, f"m{i:03d}", "rg-kill")["properties"]
            assert props["provisioningState"] != "Updating"
            assert props["typeHandlerVersion"] == "1.1.0", (i, props)
        attempts = upgrade_events(s, other, "rg-kill")
        for statuses in attempts.values():  # every Started has its end
            assert statuses.count("Started") == 1 and len(statuses) == 2, statuses
        for i in range(60):  # at most one upgrade per attempt: a reconciled job never upgrades a second time
            tries = sum(1 for machine, _op in attempts if machine == f"m{i:03d}")
            assert 1 <= host_upgrades(s, other, f"m{i:03d}", "rg-kill", "1.1.0") <= tries
        logs = "".join(n.err.read_text() for n in (other, follower, leader))
        assert "whose node stopped renewing its lease" in logs, "the killed node's jobs were taken over"
        # what the nodes printed and logged through take-overs and reconnects never holds the database password
        password = psycopg.conninfo.conninfo_to_dict(own).get("password")
        assert password, "the test database's URL carries a password"
        printed = logs + "".join(n.out.read_text() for n in (other, follower, leader))
        assert str(password) not in printed
        print(f"leader take-over: {took_over:.2f}s; election {fresh.view(other)['electionSeconds']}s")
    finally:
        fresh.close()
        provision.drop(own)


def test_no_leader_within_the_bound_is_503_with_retry_after_and_a_leader_comes_within_the_poll(
    tmp_path: Path,
) -> None:
    """A node that cannot take the leadership (this test holds the lock) answers engine calls 503 with
    Retry-After once ARCEXT_LEADER_WAIT passed; released, the node leads within ARCEXT_LEADER_POLL."""
    import psycopg

    from arcext.cluster.leader import ENGINE_LOCK

    if skip_reason() is not None:
        pytest.skip(f"multi-node tests need PostgreSQL: {skip_reason()}")
    own = provision.create("arcext_mn")
    holder = psycopg.connect(own, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (ENGINE_LOCK,))
    (tmp_path / "n").mkdir()
    env = {"PYTHONUNBUFFERED": "1", "ARCEXT_LEADER_WAIT": "1", "ARCEXT_LEADER_POLL": str(LEADER_POLL)}
    node = Node("n", tmp_path / "n", own, env)
    try:
        node.wait_listening()
        assert node.token_path is not None
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {node.token_path.read_text().strip()}"
        started = time.monotonic()
        r = run(s, node)
        assert r.status_code == 503 and r.json()["error"]["code"] == "ServiceUnavailable", r.text
        assert r.headers["Retry-After"] == "1"
        assert 1.0 <= time.monotonic() - started < 4.0
        assert s.get(f"{node.url}/arcext/v1/rollouts").status_code == 200  # a read falls back to the store
        holder.close()  # the lock is free: the node takes it at its next try
        released = time.monotonic()
        while not s.get(f"{node.url}/arcext/v1/cluster").json()["leader"]:
            assert time.monotonic() - released < LEADER_BOUND
            time.sleep(0.05)
        assert run(s, node).status_code == 200
    finally:
        holder.close()
        node.stop()
        provision.drop(own)


class PrivatePostgres:
    """A PostgreSQL server of this test's own (initdb in a temporary directory, its own port), so that
    restarting it disturbs nobody else's tests. Runs as the postgres user (PostgreSQL refuses root)."""

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self) -> None:
        import pwd
        import socket
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="arcext-mn-pg-"))
        postgres = pwd.getpwnam("postgres")
        os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
        self.data = self.root / "data"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._as_postgres(str(self.BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-l", str(self.root / "log"), "start"
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def skip_reason(cls) -> str | None:
        if os.geteuid() != 0 or not (cls.BIN / "initdb").exists() or shutil.which("runuser") is None:
            return "a private PostgreSQL server needs root, runuser and PostgreSQL 15's binaries"
        return None

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def restart(self) -> None:
        self._as_postgres(
            str(self.BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-l", str(self.root / "log"), "restart"
        )

    def close(self) -> None:
        try:
            self._as_postgres(str(self.BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def test_postgresql_restarted_mid_rollout_nodes_reconnect_and_the_rollout_completes(tmp_path: Path) -> None:
    reason = PrivatePostgres.skip_reason()
    if reason is not None:
        pytest.skip(reason)
    server = PrivatePostgres()
    fresh: Cluster | None = None
    try:
        fresh = Cluster(tmp_path, server.url, latency_ms=100)
        s = fresh.session
        fleet(s, fresh.nodes, 40, "rg-pg")
        rollout = publish(s, fresh.nodes[0], "1.1.0")
        advance(s, fresh.nodes[0], 8 * WEEK)
        follower = fresh.followers()[0]
        threading.Thread(target=lambda: _quietly(lambda: run(s, follower)), daemon=True).start()
        deadline = time.monotonic() + 20
        while sum(fresh.view(n)["jobsRunning"] for n in fresh.nodes) == 0:
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.02)
        server.restart()  # mid-rollout: every connection of every node breaks
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "the rollout did not complete after PostgreSQL's restart"
            node = fresh.nodes[int(time.monotonic()) % 3]
            try:
                r = run(s, node, timeout=60)
                if r.status_code == 200 and rollout_of(s, node, rollout["rolloutId"])["state"] == "Completed":
                    break
                if r.status_code == 200:
                    advance(s, node, 3600)  # a job put back for a retry
            except (requests.RequestException, AssertionError):
                pass  # the node has not reconnected yet
            time.sleep(0.2)
        assert all(n.alive for n in fresh.nodes)
        fresh.leader(timeout=5)
        for i in range(40):
            props = get_extension(s, fresh.nodes[i % 3], f"m{i:03d}", "rg-pg")["properties"]
            assert props["provisioningState"] != "Updating"
            assert props["typeHandlerVersion"] == "1.1.0", (i, props)
        attempts = upgrade_events(s, fresh.nodes[0], "rg-pg")
        for statuses in attempts.values():
            assert statuses.count("Started") == 1 and len(statuses) == 2, statuses
    finally:
        if fresh is not None:
            fresh.close()
        server.close()


def _quietly(call: Any) -> None:
    try:
        call()
    except requests.RequestException:
        pass
