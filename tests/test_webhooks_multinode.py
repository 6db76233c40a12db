"""Webhooks on two `arcext serve --database URL` nodes sharing one PostgreSQL database behave as one service.

A webhook registered through node A hears of every event of the fleet (the upgrade jobs each node runs, the
rollout events of the leader), signed (a real local receiver verifies every delivery with `standardwebhooks`),
at least once and in order per extension; node B lists it and its deliveries; with deliveries pending (the
receiver down) the node delivering is killed with SIGKILL, and the other one delivers them once the receiver
is back. The nodes are test_multinode's (manual clock, simulated hosts). Skipped without PostgreSQL.
"""

from __future__ import annotations

import base64
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from arcext.store.postgres import provision
from pgdb import skip_reason
from test_multinode import UPGRADE_OPERATION, WEEK, Cluster, Node, advance, events, fleet, publish, rollout_of, run
from webhook_receiver import Receiver

pytestmark = pytest.mark.slow

RG = "rg-wh"
MACHINES = 16
#: a node not delivering a webhook tries to take it over every second (webhooks.Settings.claim_poll): the bound
#: on the take-over after the node delivering died, with this machine's scheduling noise (2 cores, shared)
TAKE_OVER_BOUND = 1.0 + 4.0
CLAIMED = re.compile(r"This node delivers webhook (\S+) now")


class TwoNodes(Cluster):
    """test_multinode's cluster with two nodes (a, b), fast webhook retries, and simulated hosts slow enough
    that both nodes run jobs."""

    def __init__(self, root: Path, database: str) -> None:
        self.root = root
        self.database = database
        self.env = {
            "PYTHONUNBUFFERED": "1",
            "ARCEXT_LEADER_POLL": "1",
            "ARCEXT_JOB_LEASE": "3",
            "ARCEXT_SIM_LATENCY_MS": "60",
            "ARCEXT_UPGRADE_CONCURRENCY": "4",
            "ARCEXT_ENGINE_TICK": "0.2",
            "ARCEXT_WEBHOOK_RETRY_BASE": "0.05",
            "ARCEXT_WEBHOOK_RETRY_MAX": "0.2",
        }
        first = self._node("a")
        first.wait_listening()
        assert first.token_path is not None
        self.token = first.token_path.read_text().strip()
        (root / "b").mkdir()
        shutil.copy2(root / "a" / "secret.key", root / "b" / "secret.key")  # the key file every node shares
        second = self._node("b")
        second.wait_listening()
        self.nodes = [first, second]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(f"multi-node tests need PostgreSQL: {reason}")
    url = provision.create("arcext_wh")
    made = TwoNodes(tmp_path_factory.mktemp("webhooks"), url)
    try:
        yield made
    finally:
        made.close()
        provision.drop(url)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def upgrade_log(s: requests.Session, node: Node, to_version: str) -> dict[str, dict[str, Any]]:
    """The activity log's upgrade events to ``to_version`` in the test's resource group, by event id."""
    return {
        e["eventDataId"]: e
        for e in events(s, node)
        if e["resourceGroupName"].lower() == RG
        and e["operationName"]["value"] == UPGRADE_OPERATION
        and (e.get("properties") or {}).get("toVersion") == to_version
    }


def first_arrivals(received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events as they first arrived (a redelivery after a take-over comes again later)."""
    seen: set[str] = set()
    firsts = []
    for event in received:
        if event["id"] not in seen:
            seen.add(event["id"])
            firsts.append(event)
    return firsts


def check_per_extension_order(received: list[dict[str, Any]], logged: dict[str, dict[str, Any]]) -> None:
    """Every logged upgrade event arrived, and per extension each attempt's start came before its end."""
    arrived = first_arrivals(received)
    assert set(logged) <= {e["id"] for e in arrived}, "an upgrade event was never delivered"
    per_subject: dict[str, list[str]] = {}
    for event in arrived:
        if event["id"] in logged:
            per_subject.setdefault(event["subject"], []).append(event["type"].removeprefix("com.arcext.upgrade."))
    assert len(per_subject) == MACHINES
    for subject, types in per_subject.items():
        assert types == ["started", "succeeded"], (subject, types)


def delivering_node(cluster: TwoNodes, name: str) -> Node:
    """The node that last said it delivers webhook ``name`` (its log)."""
    claims = [(n, [m for m in CLAIMED.findall(n.err.read_text()) if m == name]) for n in cluster.alive()]
    holders = [n for n, found in claims if found]
    assert len(holders) == 1, f"one node delivers {name}: {[n.name for n in holders]}"
    return holders[0]


def test_a_webhook_made_on_one_node_hears_the_whole_fleet_and_survives_its_deliverer(nodes: TwoNodes) -> None:
    a, b = nodes.nodes
    s = nodes.session
    rx = Receiver("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    try:
        made = s.put(f"{a.url}/arcext/v1/webhooks/fleet", json={"url": rx.url, "events": ["*"], "secret": rx.secret})
        assert made.status_code == 201, made.text
        listed = s.get(f"{b.url}/arcext/v1/webhooks", timeout=10).json()["value"]
        assert [h["name"] for h in listed] == ["fleet"] and listed[0]["enabled"] is True
        assert rx.secret not in str(listed)

        # --- a rollout whose jobs run on both nodes -------------------------------------------------
        fleet(s, nodes.nodes, MACHINES, RG)
        before = {n.name: nodes.view(n)["jobsRun"] for n in nodes.nodes}
        rollout = publish(s, b, "1.1.0")
        advance(s, a, 8 * WEEK)
        r = run(s, nodes.followers()[0])
        assert r.status_code == 200 and r.json()["succeeded"] >= MACHINES, r.text
        ran = {n.name: nodes.view(n)["jobsRun"] - before[n.name] for n in nodes.nodes}
        assert all(count > 0 for count in ran.values()), f"both nodes run jobs: {ran}"
        logged = upgrade_log(s, a, "1.1.0")
        assert len(logged) == 2 * MACHINES
        wait_for(lambda: set(logged) <= {e["id"] for e in rx.events()}, 20, "every upgrade event delivered")
        wait_for(lambda: sum(e["type"] == "com.arcext.rollout.completed" for e in rx.events()) >= 1, 20, "rollout done")
        received = rx.events()
        assert rx.bad_signatures == 0
        check_per_extension_order(received, logged)
        ids = [e["id"] for e in received]
        assert len(ids) == len(set(ids)), "nothing arrives twice while no node dies"
        rollout_types = [e["type"] for e in received if e["subject"] == f"/arcext/v1/rollouts/{rollout['rolloutId']}"]
        assert rollout_types == ["com.arcext.rollout.planned", "com.arcext.rollout.completed"]
        # node B lists the webhook and its deliveries, whichever node put them in or delivered them
        listed = s.get(f"{b.url}/arcext/v1/webhooks/fleet/deliveries", timeout=10).json()["value"]
        assert {d["id"] for d in listed} == set(ids) and {d["state"] for d in listed} == {"Delivered"}
        assert s.get(f"{b.url}/arcext/v1/webhooks/fleet", timeout=10).json()["pending"] == 0
        waits = sorted(seconds_between(d["createdAt"], d["deliveredAt"]) for d in listed)  # outbox -> receiver

        # --- kill -9 of the node delivering, with deliveries pending ------------------------------------------
        rx.status = 503
        rollout = publish(s, a, "1.2.0")
        advance(s, b, 8 * WEEK)
        deadline = time.monotonic() + 60
        while rollout_of(s, a, rollout["rolloutId"])["state"] != "Completed":
            assert run(s, a).status_code == 200
            assert time.monotonic() < deadline, rollout_of(s, a, rollout["rolloutId"])
        logged = upgrade_log(s, a, "1.2.0")
        assert len(logged) == 2 * MACHINES
        expected = len(logged) + 2  # and the rollout's planned and completed

        def pending() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = s.get(f"{a.url}/arcext/v1/webhooks/fleet/deliveries", timeout=10).json()[
                "value"
            ]
            return [d for d in found if d["state"] == "Pending"]

        wait_for(lambda: len(pending()) == expected and rx.refused >= 3, 20, "deliveries pending, retried")
        deliverer = delivering_node(nodes, "fleet")
        survivor = b if deliverer is a else a
        deliverer.kill()
        killed = time.monotonic()
        rx.status = 200
        wait_for(lambda: set(logged) <= {e["id"] for e in rx.events()}, 30, "the other node delivers them")
        took_over = time.monotonic() - killed
        wait_for(lambda: not pending_on(s, survivor), 20, "nothing pending on the surviving node")
        assert took_over <= TAKE_OVER_BOUND, f"delivered {took_over:.2f}s after the kill (bound {TAKE_OVER_BOUND}s)"
        assert delivering_node(nodes, "fleet") is survivor
        received = rx.events()
        assert rx.bad_signatures == 0
        check_per_extension_order([e for e in received if e["id"] in logged], logged)
        types = {e["type"] for e in received if e["subject"] == f"/arcext/v1/rollouts/{rollout['rolloutId']}"}
        assert types == {"com.arcext.rollout.planned", "com.arcext.rollout.completed"}
        ids = [e["id"] for e in received]
        print(
            f"jobs per node {ran}; {len(waits)} events of 1.1.0, from the outbox to the receiver: median"
            f" {waits[len(waits) // 2] * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms; after SIGKILL of"
            f" {deliverer.name} all delivered by {survivor.name} within {took_over:.2f}s;"
            f" {len(ids) - len(set(ids))} redelivered"
        )
    finally:
        rx.close()


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def pending_on(s: requests.Session, node: Node) -> int:
    hook: dict[str, Any] = s.get(f"{node.url}/arcext/v1/webhooks/fleet", timeout=10).json()
    return int(hook["pending"])
