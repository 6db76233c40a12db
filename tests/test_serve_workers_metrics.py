"""`arcext serve --workers 2 --database URL`: a scrape of /metrics answered by either worker counts the requests
both served, and keeps the counts of a worker that was killed and replaced (a counter never goes back, so
Prometheus' rate() stays true). Real processes on a scratch PostgreSQL database; skipped without one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from arcext.store.postgres import provision
from pgdb import skip_reason

pytestmark = pytest.mark.slow

LISTENING = re.compile(r"arcext listening on (https?://\S+)")
COUNTED = re.compile(
    r'^arcext_http_requests_total\{method="GET",route="/arcext/v1/cluster",status="200"\} (\S+)$', re.MULTILINE
)


@pytest.fixture
def database() -> Iterator[str]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(f"several workers need PostgreSQL: {reason}")
    url = provision.create("arcext_wm")
    yield url
    provision.drop(url)


def test_a_scrape_answered_by_any_worker_counts_every_worker_s_requests(tmp_path: Path, database: str) -> None:
    data_dir = tmp_path / "d"
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARCEXT_", "PROMETHEUS_"))}
    command = [sys.executable, "-m", "arcext.cli", "serve", "--port", "0", "--data-dir", str(data_dir)]
    command += ["--database", database, "--workers", "2", "--simulate"]
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(command, stdout=o, stderr=e, env={**env, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while not (found := LISTENING.search(out.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-3000:]
            time.sleep(0.05)
        base = found.group(1)
        headers = {"Authorization": f"Bearer {(data_dir / 'owner-token').read_text().strip()}"}

        views = 0

        def view() -> int:
            """The pid of the worker that answered (each request on a connection of its own)."""
            nonlocal views
            r = requests.get(f"{base}/arcext/v1/cluster", headers=headers, timeout=30)
            assert r.status_code == 200, r.text
            views += 1
            return int(r.json()["node"].split(":")[1])

        def scraped() -> float:
            r = requests.get(f"{base}/metrics", headers=headers, timeout=30)
            assert r.status_code == 200, r.text
            counted = COUNTED.search(r.text)
            return float(counted.group(1)) if counted else 0.0

        served: list[int] = []
        while len(served) < 40 or len(set(served)) < 2:  # both workers served some
            served.append(view())
            assert len(served) < 400, "one worker answered every request"
        for _ in range(6):  # whichever worker answers the scrape
            assert scraped() == views
        killed = max(set(served), key=served.count)
        os.kill(killed, signal.SIGKILL)  # the master starts another in its place
        deadline = time.monotonic() + 30
        while killed in (pids := {view() for _ in range(10)}) or len(pids) < 2:
            assert time.monotonic() < deadline, "the killed worker was not replaced"
        for _ in range(6):  # the killed worker's requests still counted: the counter never went back
            assert scraped() == views
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_prometheus_directory_in_the_environment_leaves_a_server_s_metrics_its_own(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR set by someone else (prometheus-client reads it when imported): one arcext process
    keeps its figures in memory, as without it, and writes nothing there (a missing directory broke its start)."""
    code = (
        "from arcext.metrics import Metrics\n"
        "m = Metrics()\n"
        "m.http_request('GET', '/x', 200, 0.01)\n"
        "print(m.render().decode())\n"
    )
    elsewhere = tmp_path / "not-ours"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(elsewhere)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert 'arcext_http_requests_total{method="GET",route="/x",status="200"} 1.0' in run.stdout
    assert not elsewhere.exists()
