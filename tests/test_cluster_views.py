"""What operators read on any node of a cluster: a follower's views (the rollouts, a machine's pending upgrades,
the metrics) show a change made through the leader on the next request, and reading them costs the leader
nothing (no forwarded engine call).

Two servers in this process on one scratch database (data directories of their own, one key file), on the
shared manual clock and without host connections: a rollout's wave then cannot move, which is how it stalls.
Skipped without PostgreSQL. The three-process cluster is tests/test_multinode.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from arcext.store.postgres import provision
from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, wait_operation
from pgdb import skip_reason

pytestmark = pytest.mark.slow

PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
DAY = 86400


class Pair:
    def __init__(self, root: Path, url: str) -> None:
        self.url = url
        self.leader = ArcextServer(root / "a", manual_clock=True, simulate=False, database_url=url).start()
        (root / "b").mkdir()
        shutil.copy2(root / "a" / "secret.key", root / "b" / "secret.key")
        self.follower = ArcextServer(root / "b", manual_clock=True, simulate=False, database_url=url).start()
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {self.leader.token}"

    def close(self) -> None:
        self.s.close()
        self.follower.stop()
        self.leader.stop()

    def forwarded_calls(self) -> int:
        """How many engine calls were ever forwarded (the calls' id sequence: it moves with every insert)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SELECT last_value, is_called FROM engine_calls_id_seq").fetchone()
        assert row is not None
        return int(row[0]) if row[1] else 0


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(f"cluster tests need PostgreSQL: {reason}")
    url = provision.create("arcext_cv")
    made = Pair(tmp_path_factory.mktemp("pair"), url)
    try:
        yield made
    finally:
        made.close()
        provision.drop(url)


def cluster_view(s: requests.Session, srv: ArcextServer) -> dict[str, Any]:
    r = s.get(f"{srv.url}/arcext/v1/cluster")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def create(s: requests.Session, srv: ArcextServer, m: str) -> None:
    r = s.put(machine_url(srv, m), params={"api-version": API}, json={"location": "eastus"})
    assert r.status_code == 200, r.text
    body = {"location": "eastus", "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0.0"}}
    r = s.put(ext_url(srv, "ama", m), params={"api-version": API}, json=body)
    assert wait_operation(s, r)["status"] == "Succeeded"


def publish(s: requests.Session, srv: ArcextServer, version: str) -> str:
    r = s.put(f"{srv.url}/arcext/v1/catalog/{PUB}/{TYPE}/versions/{version}", json={"critical": True})
    assert r.status_code == 201, r.text
    return str(r.json()["rolloutId"])


def pending(s: requests.Session, srv: ArcextServer, m: str) -> dict[str, Any]:
    r = s.get(f"{srv.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/{m}/pending")
    assert r.status_code == 200, r.text
    item: dict[str, Any] = r.json()["extensions"][0]
    return item


def rollout(s: requests.Session, srv: ArcextServer, rollout_id: str) -> dict[str, Any]:
    r = s.get(f"{srv.url}/arcext/v1/rollouts/{rollout_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def act(s: requests.Session, srv: ArcextServer, rollout_id: str, action: str) -> None:
    r = s.post(f"{srv.url}/arcext/v1/rollouts/{rollout_id}/{action}")
    assert r.status_code == 200, r.text


def scraped_states(s: requests.Session, srv: ArcextServer) -> dict[str, float]:
    r = s.get(f"{srv.url}/metrics")
    assert r.status_code == 200, r.text
    states: dict[str, float] = {}
    for line in r.text.splitlines():
        if line.startswith("arcext_rollouts{"):
            label, value = line.split(" ")
            states[label.split('state="')[1].split('"')[0]] = float(value)
    return states


def test_a_follower_s_views_show_every_change_made_through_the_leader_on_the_next_request(pair: Pair) -> None:
    s, leader, follower = pair.s, pair.leader, pair.follower
    assert cluster_view(s, leader)["leader"] and not cluster_view(s, follower)["leader"]
    for m in ("m1", "m2"):
        create(s, follower, m)
    assert pending(s, follower, "m1")["state"] == "UpToDate"  # the follower has read the rollouts (none)

    rollout_id = publish(s, leader, "1.1.0")
    item = pending(s, follower, "m1")
    assert (item["state"], item["rolloutId"]) == ("Scheduled", rollout_id), item
    assert rollout(s, follower, rollout_id)["state"] == "Active"

    act(s, leader, rollout_id, "pause")
    calls = pair.forwarded_calls()
    item = pending(s, follower, "m1")
    assert item["state"] == "Held" and "paused" in item["reason"], item
    assert rollout(s, follower, rollout_id)["state"] == "Paused"
    assert scraped_states(s, follower)["Paused"] == 1
    assert pair.forwarded_calls() == calls, "a follower's views and metrics forward no engine call"

    act(s, follower, rollout_id, "resume")  # forwarded to the leader; the answer is the follower's own read
    assert pair.forwarded_calls() == calls + 1
    assert rollout(s, leader, rollout_id)["state"] == "Active"
    assert pending(s, follower, "m1")["state"] == "Scheduled"
    assert scraped_states(s, follower)["Active"] == 1

    # the leader's audit finds the running wave stalled (no host connection): the follower reads it
    r = s.post(f"{leader.url}/arcext/v1/engine/run")
    assert r.status_code == 200, r.text
    r = s.post(f"{leader.url}/arcext/v1/clock/advance", json={"seconds": 2 * DAY})
    assert r.status_code == 200, r.text
    r = s.post(f"{leader.url}/arcext/v1/engine/run")
    assert r.status_code == 200, r.text
    on_leader = rollout(s, leader, rollout_id)
    assert on_leader["state"] == "Stalled", on_leader
    on_follower = rollout(s, follower, rollout_id)
    assert (on_follower["state"], on_follower["stateReason"]) == ("Stalled", on_leader["stateReason"])
    waiting = [m for m in ("m1", "m2") if "stalled" in (pending(s, follower, m)["reason"] or "")]
    assert waiting, [pending(s, follower, m) for m in ("m1", "m2")]
    assert scraped_states(s, follower).get("Stalled") == 1

    act(s, leader, rollout_id, "freeze")
    assert rollout(s, follower, rollout_id)["state"] == "Frozen"
    assert {pending(s, follower, m)["state"] for m in ("m1", "m2")} == {"Held"}
