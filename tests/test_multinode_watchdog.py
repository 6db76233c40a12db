"""A node that hangs without dying does not keep the cluster's leadership (docs/deploy.md, "A node hangs").

Real `arcext serve --database URL` processes (gunicorn: a master and its worker) on a scratch database:

* a loop stuck inside the worker (here: the job claims, waiting on a lock this test holds on the job queue, the
  way a deadlock or a call that never returns leaves a loop) makes health answer 503 naming it, the worker leave
  with the loop's stack in the log, and the master start a fresh worker, which leads once the loop can run;
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
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from arcext.store.postgres import provision
from pgdb import skip_reason

pytestmark = pytest.mark.slow

LISTENING = re.compile(r"arcext listening on (https?://\S+)")
TOKEN_WRITTEN = re.compile(r"Owner token written to (\S+)")
WORKER_TIMEOUT = 3  # --worker-timeout
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

    def __init__(self, root: Path, name: str, database: str, env: dict[str, str]) -> None:
        self.data_dir = root / name
        self.out, self.err = root / f"{name}.out", root / f"{name}.err"
        command = [sys.executable, "-m", "arcext.cli", "serve", "--port", "0", "--data-dir", str(self.data_dir)]
        command += ["--database", database, "--simulate", "--worker-timeout", str(WORKER_TIMEOUT)]
        command += ["--graceful-timeout", "2"]
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


def test_a_stuck_loop_is_reported_the_worker_leaves_and_a_fresh_one_leads(tmp_path: Path, database: str) -> None:
    env = {"ARCEXT_WATCHDOG_SECONDS": "2", "ARCEXT_LEADER_POLL": str(LEADER_POLL)}
    node = Node(tmp_path, "a", database, env)
    try:
        assert node.health().json() == {"status": "ok"}
        wait_for("the node leads", lambda: node.cluster()["leader"], 15)
        first = node.worker_pid()
        holder = psycopg.connect(database)  # a transaction: the lock is held until the rollback below
        try:
            holder.execute("LOCK TABLE engine_jobs IN ACCESS EXCLUSIVE MODE")
            # the worker looks once a second and leaves; a health request may come first and see the stall
            stalled = re.compile(r"Worker (\d+) leaves: its job claims loop stopped coming round")
            wait_for("the worker leaves", lambda: stalled.search(node.err.read_text()), 15)
            log = node.err.read_text()
            assert int(stalled.search(log).group(1)) == first  # type: ignore[union-attr]
            assert "The job claims loop has not come round for" in log
            assert "in _claim" in log, "the log shows where the stuck loop's thread is"
        finally:
            holder.rollback()  # the lock goes: the leaving worker hands its jobs back and exits
            holder.close()
        wait_for("a fresh worker answers", lambda: node.health().status_code == 200, 30)
        wait_for("the fresh worker leads", lambda: node.cluster()["leader"], 15)
        assert node.worker_pid() != first
        assert node.health().json() == {"status": "ok"}
    finally:
        node.stop()


def test_a_leader_stopped_with_sigstop_is_killed_by_its_master_and_another_process_leads(
    tmp_path: Path, database: str
) -> None:
    env = {"ARCEXT_LEADER_POLL": str(LEADER_POLL)}
    a = Node(tmp_path, "a", database, env)
    nodes = [a]
    worker = 0
    try:
        shutil.copy2(a.data_dir / "secret.key", tmp_path / "secret.key")
        (tmp_path / "b").mkdir()
        shutil.copy2(tmp_path / "secret.key", tmp_path / "b" / "secret.key")
        b = Node(tmp_path, "b", database, env)
        nodes.append(b)
        b.session.headers.update(a.session.headers)
        wait_for("a leads", lambda: a.cluster()["leader"], 15)
        assert not b.cluster()["leader"]
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
