"""Crash recovery of the upgrade engine: `arcext serve --simulate` is SIGKILLed in the middle of a rollout.

40 machines in two regions, one AzureMonitorWindowsAgent extension each at 1.0.0, every simulated
host answering in ``HOST_LATENCY_MS``; a few hosts fail their upgrade (rolled back to 1.0.0) and
one also fails the rollback (Failed). Publishing 1.1.0 plans a rollout whose waves are all due
within a second (ARCEXT_STANDARD_WINDOW=1), which the background scheduler runs. Once upgrade jobs
are in flight the server gets SIGKILL; the test checks on disk that jobs really were Running, then
restarts the server on the same data directory and waits for the engine to settle.

Then: every extension is Succeeded on 1.1.0 or on its last known good 1.0.0 (Failed only where a
rollback fault was injected), none is transitional, the simulated host's own model agrees with the
API, and every Started event in the activity log has exactly one end event with its operationId.

The host latency is set per host (the ``latencyMs`` fault) after the fleet is created, so creating
the 40 extensions (one install each, completed one at a time) does not pay it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from arcext.store import TinyDBStore
from conftest import serve_environment

pytestmark = pytest.mark.slow

API = "2024-07-10"
SUB = "00000000-0000-0000-0000-0000000000c5"
RG = "rg-crash"
REGIONS = ("eastus", "westeurope")
MACHINES = [f"m-{i:02d}" for i in range(40)]
EXT = "AzureMonitorWindowsAgent"
PUBLISHER = "Microsoft.Azure.Monitor"
OLD, NEW = "1.0.0", "1.1.0"
HOST_LATENCY_MS = 500
FAIL_UPGRADE = {"m-03", "m-11", "m-24", "m-36"}  # upgrade fails, rollback to 1.0.0 works
FAIL_ROLLBACK = {"m-17"}  # upgrade fails and so does the rollback: Failed
TRANSITIONAL = {"Creating", "Updating", "Deleting"}
END_STATUSES = {"Succeeded", "Failed"}
LISTENING = re.compile(r"arcext listening on (https?://\S+)")
TOKEN_WRITTEN = re.compile(r"Owner token written to (\S+)")
ENGINE_ENV = {
    "ARCEXT_STANDARD_WINDOW": "1",  # every wave is due within a second of the wall clock
    "ARCEXT_BATCH_PERCENT": "50",  # 2 waves of 10 machines per region
    "ARCEXT_UPGRADE_CONCURRENCY": "8",
    "ARCEXT_BREAKER_PERCENT": "20",  # the injected failures must not freeze the rollout
    "ARCEXT_ENGINE_TICK": "0.2",
    "ARCEXT_RETRY_DELAY": "3600",  # no second attempt within the test
    "ARCEXT_SIM_LATENCY_MS": "0",  # latency comes from per-host faults, set after the fleet exists
}


class ServeProcess:
    """`arcext serve --simulate` in a subprocess; output goes to files (never a full pipe)."""

    def __init__(self, data_dir: Path, log_dir: Path, generation: int, env: dict[str, str]) -> None:
        self.stdout_path = log_dir / f"serve-{generation}.out"
        self.stderr_path = log_dir / f"serve-{generation}.err"
        env = serve_environment(**{**ENGINE_ENV, **env, "PYTHONUNBUFFERED": "1"})
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "arcext.cli", "serve", "--simulate", "--port", "0", "--data-dir", str(data_dir)],
                stdout=out,
                stderr=err,
                env=env,
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
        raise AssertionError(f"arcext serve did not start: {self.stdout_path.read_text()}\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.stderr_path.read_text()[-chars:]

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def machine_path(machine: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.HybridCompute/machines/{machine}"


def extension_path(machine: str) -> str:
    return f"{machine_path(machine)}/extensions/{EXT}"


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    yield s
    s.close()


def create_fleet(session: requests.Session, base: str) -> None:
    """PUT every machine and its extension at 1.0.0; wait for every 202 to finish."""
    api = {"api-version": API}
    operations: list[str] = []
    for i, machine in enumerate(MACHINES):
        region = REGIONS[i % len(REGIONS)]
        r = session.put(
            f"{base}{machine_path(machine)}",
            params=api,
            json={"location": region, "properties": {"osType": "windows"}},
            timeout=10,
        )
        assert r.status_code in (200, 201), r.text
        r = session.put(
            f"{base}{extension_path(machine)}",
            params=api,
            json={
                "location": region,
                "properties": {
                    "publisher": PUBLISHER,
                    "type": EXT,
                    "typeHandlerVersion": OLD,
                    "settings": {"workspace": machine},
                    "protectedSettings": {"key": f"secret-{machine}"},
                },
            },
            timeout=10,
        )
        assert r.status_code == 202, r.text
        operations.append(r.headers["Azure-AsyncOperation"])
    for url in operations:
        deadline = time.monotonic() + 20
        while True:
            r = session.get(url, timeout=10)
            assert r.status_code == 200, r.text
            status = r.json()["status"]
            if status != "InProgress":
                break
            assert time.monotonic() < deadline, f"extension create {url} still InProgress"
            time.sleep(0.05)
        assert status == "Succeeded", r.text


def set_faults(session: requests.Session, base: str, fail_upgrade: set[str], fail_rollback: set[str]) -> None:
    for machine in MACHINES:
        faults: dict[str, Any] = {"latencyMs": HOST_LATENCY_MS}
        if machine in fail_upgrade or machine in fail_rollback:
            faults["failUpgrade"] = 1
        if machine in fail_rollback:
            faults["failRollback"] = True
        r = session.put(f"{base}/arcext/v1/simulated-hosts/{machine}/faults", json=faults, timeout=10)
        assert r.status_code == 200, r.text


def extension_states(session: requests.Session, base: str, pool: ThreadPoolExecutor) -> dict[str, dict[str, Any]]:
    """machine -> the extension's properties, through GET (one request per machine, in parallel)."""

    def get(machine: str) -> tuple[str, dict[str, Any]]:
        r = session.get(f"{base}{extension_path(machine)}", params={"api-version": API}, timeout=10)
        assert r.status_code == 200, r.text
        props: dict[str, Any] = r.json()["properties"]
        return machine, props

    return dict(pool.map(get, MACHINES))


def rollouts(session: requests.Session, base: str) -> list[dict[str, Any]]:
    r = session.get(f"{base}/arcext/v1/rollouts", timeout=10)
    assert r.status_code == 200, r.text
    value: list[dict[str, Any]] = r.json()["value"]
    return value


def running_jobs_on_disk(data_dir: Path) -> list[tuple[str, str]]:
    """(machine, step) of every upgrade job the killed server left Running in its store."""
    store = TinyDBStore(data_dir)
    try:
        found = []
        for doc in store.iter_machines():
            for record in doc["extensions"].values():
                job = record.get("upgrade") or {}
                if job.get("state") == "Running":
                    found.append((doc["machine"]["name"], str(job.get("step"))))
        return found
    finally:
        store.close()


def activity_events(session: requests.Session, base: str, since: str) -> list[dict[str, Any]]:
    url: str | None = f"{base}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values"
    params: dict[str, str] | None = {"api-version": "2015-04-01", "$filter": f"eventTimestamp ge '{since}'"}
    events: list[dict[str, Any]] = []
    while url:
        r = session.get(url, params=params, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        events += body["value"]
        url, params = body.get("nextLink"), None
    return events


def host_model(session: requests.Session, base: str, machine: str) -> dict[str, Any]:
    r = session.get(f"{base}/arcext/v1/simulated-hosts/{machine}", timeout=10)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["hosts"]
    assert len(found) == 1, found
    return found[0]


@dataclass
class Outcome:
    """What one kill-and-restart run observed."""

    updating_at_kill: list[str]  # extensions seen Updating through GET just before the kill
    upgraded_at_kill: int  # extensions already on 1.1.0 then
    in_flight: list[tuple[str, str]]  # (machine, step) of the jobs the kill left Running on disk
    states: dict[str, dict[str, Any]] = field(default_factory=dict)  # after the restart settled
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def kill_mid_rollout_and_restart(
    tmp_path: Path,
    session: requests.Session,
    env: dict[str, str],
    fail_upgrade: set[str],
    fail_rollback: set[str],
    kill_after_upgraded: int,
) -> Outcome:
    """Create the fleet, publish 1.1.0, SIGKILL once ``kill_after_upgraded`` extensions run 1.1.0 and
    others are Updating, restart on the same data directory and wait (bounded) until it settles."""
    data_dir = tmp_path / "data"
    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    pool = ThreadPoolExecutor(max_workers=8)
    try:
        server = ServeProcess(data_dir, tmp_path, 0, env)
        try:
            assert server.token_path is not None
            session.headers["Authorization"] = f"Bearer {server.token_path.read_text().strip()}"
            base = server.url
            create_fleet(session, base)
            set_faults(session, base, fail_upgrade, fail_rollback)
            r = session.put(f"{base}/arcext/v1/catalog/{PUBLISHER}/{EXT}/versions/{NEW}", json={"critical": False})
            assert r.status_code == 201, r.text
            assert r.json().get("rolloutId"), r.text

            # With half a second of host latency, a job seen Updating is still running a few
            # milliseconds later, when the kill lands.
            deadline = time.monotonic() + 25
            while True:
                assert time.monotonic() < deadline, f"never saw upgrades in flight: {rollouts(session, base)}"
                states = extension_states(session, base, pool)
                updating = sorted(m for m, p in states.items() if p["provisioningState"] == "Updating")
                upgraded = sum(1 for p in states.values() if p["typeHandlerVersion"] == NEW)
                if updating and upgraded >= kill_after_upgraded:
                    break
            server.kill()
        finally:
            server.kill()
        outcome = Outcome(updating, upgraded, running_jobs_on_disk(data_dir))

        restarted = ServeProcess(data_dir, tmp_path, 1, env)
        try:
            base = restarted.url
            deadline = time.monotonic() + 30
            while True:
                states = extension_states(session, base, pool)
                stuck = {m: p["provisioningState"] for m, p in states.items() if p["provisioningState"] in TRANSITIONAL}
                active = [r for r in rollouts(session, base) if r["state"] == "Active"]
                if not stuck and not active:
                    break
                assert time.monotonic() < deadline, (
                    f"not settled after restart: transitional {stuck}, active rollouts {active}\n{restarted.log_tail()}"
                )
                time.sleep(0.2)
            outcome.states = states
            outcome.rollouts = rollouts(session, base)
            outcome.hosts = {m: host_model(session, base, m) for m in MACHINES}
            outcome.events = activity_events(session, base, since)
        finally:
            restarted.kill()
    finally:
        pool.shutdown()
    return outcome


def test_sigkill_mid_rollout_then_restart_settles(tmp_path: Path, session: requests.Session) -> None:
    """The issue's crash test: new version or last known good everywhere, nothing transitional,
    host and API agree, every Started event has its end event."""
    faulty = FAIL_UPGRADE | FAIL_ROLLBACK
    run = kill_mid_rollout_and_restart(
        tmp_path,
        session,
        {"ARCEXT_BREAKER_PERCENT": "100"},  # the injected failures must not freeze the rollout
        FAIL_UPGRADE,
        FAIL_ROLLBACK,
        kill_after_upgraded=10,  # past the first wave
    )
    assert run.updating_at_kill, "no extension was Updating just before the kill"
    assert run.in_flight, f"the kill caught no job Running on disk (seen Updating: {run.updating_at_kill})"

    # --- every extension on the new version or its last known good one --------------------------
    assert [r["state"] for r in run.rollouts] == ["Completed"], run.rollouts
    by_version: dict[str, set[str]] = {NEW: set(), OLD: set()}
    for machine, props in sorted(run.states.items()):
        state, version = props["provisioningState"], props["typeHandlerVersion"]
        if machine in FAIL_ROLLBACK and state == "Failed":
            continue  # the only place Failed is allowed; checked against the host below
        assert state == "Succeeded", (machine, props)
        assert version in (NEW, OLD), (machine, props)
        if machine in faulty:
            assert version == OLD, f"{machine} had a failing upgrade yet shows {version}"
        by_version[version].add(machine)
    # only hosts with a failing upgrade, or jobs the kill interrupted, may stay behind
    interrupted = {m for m, _step in run.in_flight}
    assert by_version[OLD] - faulty <= interrupted, (by_version[OLD], run.in_flight)
    assert by_version[NEW] >= set(MACHINES) - faulty - interrupted
    assert len(by_version[NEW]) > run.upgraded_at_kill, "the rollout did not continue after the restart"

    # --- the host's own model agrees with the API ----------------------------------------------
    for machine, props in run.states.items():
        installed = run.hosts[machine]["extensions"][EXT.lower()]
        if props["provisioningState"] == "Failed":
            assert installed["state"] == "failed", (machine, installed)
            continue
        assert (installed["version"], installed["state"]) == (props["typeHandlerVersion"], "enabled"), (
            machine,
            props["typeHandlerVersion"],
            installed,
        )
        assert installed["settings"] == {"workspace": machine}, installed
        assert installed["protectedSha256"], installed

    # --- every Started event has exactly one end event ------------------------------------------
    upgrades = [e for e in run.events if e["operationName"]["value"].endswith("/upgradeExtensions/action")]
    started = {e["operationId"] for e in upgrades if e["status"]["value"] == "Started"}
    ends: dict[str, list[str]] = {}
    for e in upgrades:
        if e["status"]["value"] in END_STATUSES:
            ends.setdefault(e["operationId"], []).append(e["status"]["value"])
    assert len(started) >= len(MACHINES) - len(run.in_flight), len(started)
    missing = sorted(started - set(ends))
    assert not missing, f"Started events without an end event: {missing}"
    doubled = {op: s for op, s in ends.items() if len(s) != 1}
    assert not doubled, f"operations with more than one end event: {doubled}"
    assert set(ends) <= started, "end events without a Started event"


def test_restart_is_not_an_upgrade_failure(tmp_path: Path, session: requests.Session) -> None:
    """No host fails: the only trouble is the restart. With the default circuit breaker (20%, at
    least 2 failures) the rollout must still complete and every extension reach 1.1.0 promptly."""
    run = kill_mid_rollout_and_restart(tmp_path, session, {}, set(), set(), kill_after_upgraded=0)
    assert run.in_flight, f"the kill caught no job Running on disk (seen Updating: {run.updating_at_kill})"
    assert [r["state"] for r in run.rollouts] == ["Completed"], run.rollouts
    behind = {m: p["typeHandlerVersion"] for m, p in run.states.items() if p["typeHandlerVersion"] != NEW}
    assert not behind, f"left behind by the restart: {behind} (jobs in flight at the kill: {run.in_flight})"
