"""A node that hangs without dying does not keep the cluster's leadership (docs/deploy.md, "A node hangs").

Real `arcext serve --database URL` processes (gunicorn: a master and its worker) on a scratch database:

* a loop stuck inside the worker (the job claims: this test's wrapper of `arcext serve` makes the claim loop sleep
  while a flag file exists, as a deadlock or a call that never returns would hold it) makes the worker give up the
  leadership at once (the other node leads), log the loop's stack, leave, and be replaced by its master;
* a loop waiting for the database (a lock this test holds on the job queue) is not a stall: health says so, the
  worker stays, and every node would wait the same;
* a leader's worker stopped with SIGSTOP stops answering its master's heartbeat: the master kills it after
  --worker-timeout, its leadership lock goes with its session, and another process leads (the other node, or the
  fresh worker the master starts, whichever tries first).

Skipped without PostgreSQL (scripts/start-postgres).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from arcext.store.postgres import provision
from pgdb import skip_reason

pytestmark = pytest.mark.slow

LISTENING = re.compile(r"arcext listening on (https?://\S+)")
TOKEN_WRITTEN = re.compile(r"Owner token written to (\S+)")
WORKER_TIMEOUT = 3  # --worker-timeout
DRAIN = 20  # --graceful-timeout of the node whose loop gets stuck
API = "2024-07-10"
SUB = "00000000-0000-0000-0000-0000000000d0"
LEADER_POLL = 0.5  # ARCEXT_LEADER_POLL


@pytest.fixture
def database() -> Iterator[str]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(f"multi-node tests need PostgreSQL: {reason}")
    url = provision.create("arcext_wd")
    yield url
    provision.drop(url)


class Node:
    """`arcext serve --database URL --worker-timeout 3`; its output in files."""

    def __init__(
        self,
        root: Path,
        name: str,
        database: str,
        env: dict[str, str],
        wrapper: Path | None = None,
        graceful_timeout: int = 2,
    ) -> None:
        self.data_dir = root / name
        self.out, self.err = root / f"{name}.out", root / f"{name}.err"
        program = [str(wrapper)] if wrapper else ["-m", "arcext.cli"]
        command = [sys.executable, *program, "serve", "--port", "0", "--data-dir", str(self.data_dir)]
        command += ["--database", database, "--simulate", "--worker-timeout", str(WORKER_TIMEOUT)]
        command += ["--graceful-timeout", str(graceful_timeout)]
        base = {k: v for k, v in os.environ.items() if not k.startswith("ARCEXT_")}
        with open(self.out, "ab") as out, open(self.err, "ab") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, env={**base, "PYTHONUNBUFFERED": "1", **env})
        deadline = time.monotonic() + 30
        while not (found := LISTENING.search(self.out.read_text())):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.err.read_text()[-3000:]
            time.sleep(0.05)
        self.url = found.group(1)
        token = TOKEN_WRITTEN.search(self.out.read_text())
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {Path(token.group(1)).read_text().strip()}"

    def cluster(self) -> dict[str, Any]:
        r = self.session.get(f"{self.url}/arcext/v1/cluster", timeout=30)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def worker_pid(self) -> int:
        """The pid of the worker answering (a node's id is host:pid:suffix)."""
        return int(self.cluster()["node"].split(":")[1])

    def health(self) -> requests.Response:
        return requests.get(f"{self.url}/arcext/v1/health", timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def wait_for(what: str, check: Any, timeout: float) -> float:
    """Seconds until ``check()`` is true (fails after ``timeout``)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - started


#: `arcext serve` whose job claim loop sleeps while the file $STALL_DIR/stall-<its data directory's name> exists (this
#: test's stand-in for a deadlock: the loop's thread is stuck outside the database); the master imports it, so every
#: worker it forks has it
STUCK_SERVE = """
import os, sys, time
import arcext.cluster.node as node

_claim = node.ClusterNode._claim
FLAG = os.path.join(os.environ["STALL_DIR"], "stall-" + os.path.basename(sys.argv[sys.argv.index("--data-dir") + 1]))

def stuck_claim(self, limit):
    while os.path.exists(FLAG):
        time.sleep(0.05)
    return _claim(self, limit)

node.ClusterNode._claim = stuck_claim
from arcext.cli import main
sys.argv[0] = "arcext"
main()
"""


def two_nodes(
    tmp_path: Path, database: str, env: dict[str, str], wrapper: Path | None = None, graceful_timeout: int = 2
) -> list[Node]:
    """Node a (which leads) and node b (each its own data directory, the key file shared)."""
    a = Node(tmp_path, "a", database, env, wrapper, graceful_timeout)
    nodes = [a]
    try:
        (tmp_path / "b").mkdir()
        shutil.copy2(a.data_dir / "secret.key", tmp_path / "b" / "secret.key")
        b = Node(tmp_path, "b", database, env, wrapper)
        nodes.append(b)
        b.session.headers.update(a.session.headers)
        wait_for("a leads", lambda: a.cluster()["leader"], 15)
        assert not b.cluster()["leader"]
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def test_a_stuck_loop_gives_up_the_leadership_at_once_and_its_worker_is_replaced(tmp_path: Path, database: str) -> None:
    flag = tmp_path / "stall-a"  # node a's
    wrapper = tmp_path / "stuck_serve.py"
    wrapper.write_text(STUCK_SERVE)
    watchdog = 3
    env = {"ARCEXT_WATCHDOG_SECONDS": str(watchdog), "ARCEXT_LEADER_POLL": str(LEADER_POLL), "STALL_DIR": str(tmp_path)}
    a, b = two_nodes(tmp_path, database, env, wrapper, graceful_timeout=DRAIN)
    # a request in flight on a (its body comes slowly): a's worker drains it for up to DRAIN seconds when it leaves
    slow = socket.create_connection(("127.0.0.1", int(urlsplit(a.url).port or 0)), timeout=60)
    try:
        token = a.session.headers["Authorization"]
        path = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/m1?api-version={API}"
        slow.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: a\r\nAuthorization: {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        first = a.worker_pid()
        flag.touch()  # a's claim loop is stuck from its next round
        took = wait_for("b leads", lambda: b.cluster()["leader"], watchdog + DRAIN + 15)
        # the bound: the watchdog's, the worker's look (each second), a step down and b's next try; not the drain
        assert took <= watchdog + 1 + LEADER_POLL + 6, f"b led {took:.1f}s after a's loop got stuck"
        leaves = re.compile(r"Worker (\d+) leaves: its ([a-z ]+) loop stopped coming round")
        found = leaves.search(a.err.read_text())
        assert found and int(found.group(1)) == first, a.err.read_text()[-3000:]
        assert "job claims" in found.group(2)
        log = a.err.read_text()
        assert "The job claims loop has not come round for" in log
        assert "in stuck_claim" in log, "the log shows where the stuck loop's thread is"
        flag.unlink()  # unstuck: the leaving worker ends (once its drain is over), and the fresh one works
        wait_for("a's fresh worker answers", lambda: a.health().status_code == 200, DRAIN + 30)
        assert a.worker_pid() != first
        assert a.health().json() == {"status": "ok"}
        assert [a.cluster()["leader"], b.cluster()["leader"]] == [False, True]
        print(f"b led {took:.1f}s after a's claim loop got stuck (watchdog {watchdog}s, drain up to {DRAIN}s)")
    finally:
        slow.close()
        flag.unlink(missing_ok=True)
        for node in (a, b):
            node.stop()


def test_a_loop_waiting_for_the_database_is_no_stall_the_worker_stays(tmp_path: Path, database: str) -> None:
    env = {"ARCEXT_WATCHDOG_SECONDS": "2", "ARCEXT_LEADER_POLL": str(LEADER_POLL)}
    node = Node(tmp_path, "a", database, env)
    try:
        assert node.health().json() == {"status": "ok"}
        wait_for("the node leads", lambda: node.cluster()["leader"], 15)
        first = node.worker_pid()
        holder = psycopg.connect(database)  # a transaction: the lock is held until the rollback below
        try:
            holder.execute("LOCK TABLE engine_jobs IN ACCESS EXCLUSIVE MODE")  # the claim loop waits for it
            wait_for(
                "health says the claims wait for the database",
                lambda: node.health().json() == {"status": "waiting", "waitingForDatabase": ["job claims"]},
                15,
            )
            assert "The job claims loop has been waiting for the database" in node.err.read_text()
            time.sleep(3)  # three more looks of the worker at its loops
            assert node.health().status_code == 200
            assert "leaves" not in node.err.read_text()
        finally:
            holder.rollback()
            holder.close()
        wait_for("health is ok again", lambda: node.health().json() == {"status": "ok"}, 15)
        assert node.worker_pid() == first and node.cluster()["leader"]
        assert "The job claims loop comes round again" in node.err.read_text()
    finally:
        node.stop()


def test_a_leader_stopped_with_sigstop_is_killed_by_its_master_and_another_process_leads(
    tmp_path: Path, database: str
) -> None:
    a, b = two_nodes(tmp_path, database, {"ARCEXT_LEADER_POLL": str(LEADER_POLL)})
    nodes = [a, b]
    worker = 0
    try:
        worker = a.worker_pid()
        os.kill(worker, signal.SIGSTOP)  # alive, its sockets open: the database keeps its session and its lock
        stopped = time.monotonic()

        def led_elsewhere() -> bool:
            """b leads, or a's fresh worker does (a's master may replace its worker before b's next try)."""
            if b.cluster()["leader"]:
                return True
            try:  # a's requests wait in its listen queue while its only worker is stopped
                view = a.session.get(f"{a.url}/arcext/v1/cluster", timeout=1).json()
            except requests.RequestException:
                return False
            return bool(view["leader"]) and int(view["node"].split(":")[1]) != worker

        wait_for("another process leads", led_elsewhere, WORKER_TIMEOUT + 15)
        took = time.monotonic() - stopped
        assert took >= WORKER_TIMEOUT - 1, f"led elsewhere after {took:.1f}s: before a's master could kill a's worker"
        wait_for("a's master starts a fresh worker", lambda: a.health().status_code == 200, 30)
        assert a.worker_pid() != worker
        assert [a.cluster()["leader"], b.cluster()["leader"]].count(True) == 1
        assert f"WORKER TIMEOUT (pid:{worker})" in a.err.read_text()
        print(f"leadership moved {took:.1f}s after the leader's worker stopped (--worker-timeout {WORKER_TIMEOUT})")
    finally:
        if worker:
            try:
                os.kill(worker, signal.SIGCONT)  # (a failed test's stopped worker: let it end with its node)
            except ProcessLookupError:
                pass
        for node in nodes:
            node.stop()
