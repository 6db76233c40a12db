"""Webhooks on PostgreSQL in one process: two WebhookService "nodes" on one database, each with its own pool,
claims connection and listener, as two `arcext serve` processes would have them. The same event put in by
both is one message; a rollout change announced by both is one; a registry change on one reaches the other;
a 410 on the node delivering disables the webhook everywhere; a node that missed a new webhook catches up
from the activity log; one node at a time delivers. Skipped without PostgreSQL (tests/pgdb.py)."""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from arcext.activity import UPGRADE_OPERATION
from arcext.crypto import SecretBox
from arcext.metrics import Metrics
from arcext.store.postgres.db import Database
from arcext.webhooks import Settings, WebhookService
from arcext.webhooks.pg_node import NODES_CHANNEL, PRESENCE_CLASS, Listener
from pgdb import fresh_database
from webhook_receiver import Receiver

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FAST = Settings(retry_base=0.05, retry_max=0.2, claim_poll=0.1, refresh=0.5)


class Nodes:
    """Two services on one database (``start``: with their writer, workers and listener running)."""

    def __init__(self, url: str, root: Path) -> None:
        key = base64.urlsafe_b64encode(secrets.token_bytes(32))  # the key file every node shares
        self.dbs = [Database(url, max_size=4), Database(url, max_size=4)]
        self.nodes = [
            WebhookService.open(root / f"n{i}", SecretBox(key), lambda: NOW, Metrics(), FAST, db)
            for i, db in enumerate(self.dbs)
        ]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        for db in self.dbs:
            db.close()


def wait_until_no_node_is_present(url: str) -> None:
    """The previous test's nodes gone from this (reused) database: PostgreSQL frees a closed session's
    presence lock a moment after the close, and a lock seen going away would count as a node that left."""
    with psycopg.connect(url, autocommit=True) as conn:
        assert wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    (PRESENCE_CLASS,),
                ).fetchone()
                == (0,)
            )
        ), "a previous test's webhook listener is still connected"


@pytest.fixture
def two(tmp_path: Path) -> Iterator[Nodes]:
    url = fresh_database()
    wait_until_no_node_is_present(url)
    made = Nodes(url, tmp_path)
    yield made
    made.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    yield rx
    rx.close()


def upgrade(machine: str, status: str, minute: int) -> dict[str, Any]:
    return {
        "eventDataId": str(uuid.uuid4()),
        "eventTimestamp": f"2026-03-01T12:{minute:02d}:00.000000Z",
        "resourceId": f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/{machine}"
        "/extensions/ama",
        "operationName": {"value": UPGRADE_OPERATION},
        "status": {"value": status},
        "properties": {},
    }


def rollout(action: str, state: str, minute: int) -> dict[str, Any]:
    return {
        "eventDataId": str(uuid.uuid4()),
        "eventTimestamp": f"2026-03-01T12:{minute:02d}:00.000000Z",
        "resourceId": "/arcext/v1/rollouts/r1",
        "resourceType": {"value": "arcext/rollouts"},
        "operationName": {"value": f"arcext/rollouts/{action}"},
        "status": {"value": "Succeeded"},
        "properties": {"action": action, "rolloutId": "r1", "state": state},
    }


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def test_the_same_events_put_in_by_both_nodes_are_delivered_once_in_order(two: Nodes, receiver: Receiver) -> None:
    one, other = two.nodes
    one.put("h", receiver.url, ["*"], receiver.secret)
    two.start()
    assert wait_for(lambda: "h" in other._hooks), "the other node knows of the webhook"
    events = [upgrade("m1", "Started", 1), upgrade("m2", "Started", 1), upgrade("m1", "Succeeded", 2)]
    planned = rollout("planned", "Active", 0)
    assert one.enqueue([planned, *events]) == 4
    # the other node announces the same rollout from memory of its own (another event id), and puts in the
    # same activity-log events (a reconcile at its start): nothing new
    assert other.enqueue([rollout("planned", "Active", 0), *events]) == 0
    # both announce the rollout's completion; a leader that took over announces planned+completed again
    assert other.enqueue([rollout("completed", "Completed", 3)]) == 1
    assert one.enqueue([rollout("completed", "Completed", 3)]) == 0
    assert one.enqueue([rollout("planned", "Completed", 4), rollout("completed", "Completed", 4)]) == 0
    assert one.wait_delivered(10) and other.wait_delivered(10)
    got = receiver.events()
    assert receiver.bad_signatures == 0
    assert [e["type"].removeprefix("com.arcext.") for e in got] == [
        "rollout.planned",
        "upgrade.started",
        "upgrade.started",
        "upgrade.succeeded",
        "rollout.completed",
    ]
    assert [e["id"] for e in got[:4]] == [planned["eventDataId"], *(e["eventDataId"] for e in events)]
    for node in (one, other):
        listed = node.deliveries("h")
        assert listed is not None and [d["state"] for d in listed] == ["Delivered"] * 5
        assert [d["id"] for d in listed] == [e["id"] for e in reversed(got)], "newest first"


def test_a_rollout_planned_and_completed_at_once_is_announced_whole(two: Nodes, receiver: Receiver) -> None:
    one, _other = two.nodes
    one.put("h", receiver.url, ["rollout.planned", "rollout.completed"], receiver.secret)
    assert one.enqueue([rollout("planned", "Completed", 1), rollout("completed", "Completed", 1)]) == 2
    assert one.storage.rollout_states() == {"r1": "Completed"}


def test_registry_changes_on_one_node_reach_the_other(two: Nodes, receiver: Receiver) -> None:
    one, other = two.nodes
    two.start()
    view, generated, created = one.put("h", receiver.url, ["upgrade.started"], None)
    assert created and generated and generated.startswith("whsec_") and view["enabled"]
    assert other.get("h") == view, "read from the shared registry"
    assert [h["name"] for h in other.list_hooks()] == ["h"]
    assert wait_for(lambda: "h" in other._hooks and other._hooks["h"].events == ["upgrade.started"])
    other.put("h", receiver.url, ["*"], receiver.secret)
    assert wait_for(lambda: one._hooks["h"].events == ["*"]), "a replacement reaches the other node"
    assert one.delete("h") and other.get("h") is None
    assert wait_for(lambda: "h" not in other._hooks), "a deletion reaches the other node"
    assert not other.delete("h")


def test_410_on_the_node_delivering_disables_the_webhook_on_both(two: Nodes, receiver: Receiver) -> None:
    one, other = two.nodes
    one.put("h", receiver.url, ["*"], receiver.secret)
    two.start()
    receiver.status = 410
    one.enqueue([upgrade("m1", "Started", 1)])
    assert wait_for(lambda: not (other.get("h") or {}).get("enabled", True))
    assert wait_for(lambda: one._hooks["h"].disabled and other._hooks["h"].disabled)
    assert "410" in (one.get("h") or {})["disabledReason"] and receiver.refused == 1
    assert one.enqueue([upgrade("m2", "Started", 2)]) == 0, "a disabled webhook gets no messages"
    receiver.status = 200
    other.put("h", receiver.url, ["*"], receiver.secret)
    assert wait_for(lambda: not one._hooks["h"].disabled), "enabled again on both"
    one.enqueue([upgrade("m3", "Started", 3)])
    assert wait_for(lambda: len(receiver.events()) == 1)


def test_a_node_that_missed_a_new_webhook_catches_up_from_the_activity_log(two: Nodes, receiver: Receiver) -> None:
    one, other = two.nodes
    log = [upgrade("m1", "Started", 1), upgrade("m1", "Succeeded", 2)]
    other.reconcile(lambda day: iter(log), [], lambda r, action: {})  # its start: no webhook yet
    one.put("h", receiver.url, ["*"], receiver.secret)
    other.on_events(log)  # recorded before it heard of the webhook: dropped on its fast path
    other.flush()
    assert other.pending_counts() == {"h": 0}
    other.refresh()  # it hears of the webhook: the events since its creation go in
    other.flush()
    assert other.pending_counts() == {"h": 2}


def test_one_node_at_a_time_delivers_a_webhook(two: Nodes, receiver: Receiver) -> None:
    one, other = two.nodes
    one.put("h", receiver.url, ["*"], receiver.secret)
    receiver.status = 503
    two.start()
    one.enqueue([upgrade(f"m{i}", "Started", i) for i in range(5)])
    assert wait_for(lambda: receiver.refused >= 3)
    hook = one._hooks["h"]
    holders = [n for n in two.nodes if n.storage.claim(n._hooks["h"])]
    assert len(holders) == 1, "exactly one node holds the claim"
    holder = holders[0]
    survivor = other if holder is one else one
    holder.close()  # its claims connection closes: the claim is free
    receiver.status = 200
    assert survivor.wait_delivered(10)
    assert len({e["id"] for e in receiver.events()}) == 5
    assert [e["subject"].split("/machines/")[1] for e in receiver.events()][:5] == [
        f"m{i}/extensions/ama" for i in range(5)
    ], "in order"
    assert hook.uid == survivor._hooks["h"].uid


def test_events_a_node_recorded_but_never_put_in_are_put_back_when_it_leaves(two: Nodes, receiver: Receiver) -> None:
    """A kill -9 between the activity log and the outbox: the other node looks for such events as soon as the
    node's presence lock goes (its session ended), not only at the next start."""
    one, other = two.nodes
    log: list[dict[str, Any]] = []
    one.put("h", receiver.url, ["*"], receiver.secret)
    for node in two.nodes:
        node.reconcile(lambda day: iter(list(log)), [], lambda r, action: {})
    two.start()
    assert wait_for(lambda: "h" in other._hooks and not other._catch_ups)
    log += [upgrade("m1", "Started", 1), upgrade("m1", "Succeeded", 2)]  # recorded by one, never put in
    time.sleep(1.0)
    assert receiver.events() == [], "nothing puts them in while every node is there"
    one.close()  # its listener's session ends, and with it its presence lock
    assert wait_for(lambda: len(receiver.events()) == 2)
    assert [e["id"] for e in receiver.events()] == [e["eventDataId"] for e in log]


def test_two_nodes_putting_in_the_same_events_in_opposite_orders_at_once_both_succeed(
    two: Nodes, receiver: Receiver
) -> None:
    """Each waits for the other's rows (a deadlock PostgreSQL breaks by ending one): the one ended goes again."""
    from concurrent.futures import ThreadPoolExecutor

    one, other = two.nodes
    one.put("h", receiver.url, ["upgrade.started"], receiver.secret)
    other.refresh()
    receiver.status = 503  # nothing is delivered (the workers are not started anyway)
    for round_ in range(5):
        events = [upgrade(f"m{i}", "Started", 10 + round_) for i in range(200)]
        with ThreadPoolExecutor(2) as pool:
            added = list(pool.map(lambda job: job[0].enqueue(job[1]), [(one, events), (other, events[::-1])]))
        assert sum(added) == 200, added
    assert one.pending_counts() == {"h": 1000}


def test_a_node_that_comes_and_goes_between_two_looks_is_seen_leaving() -> None:
    """A node whose process dies seconds after it started (a crash loop) leaves events it may not have put in the
    outbox: the others must see it leave even when it came and went between two of their looks at the presence
    locks. It announces itself as it takes its lock; a listener that heard it looks for its lock at the next look."""
    url = fresh_database()
    wait_until_no_node_is_present(url)
    looks: list[float] = []
    gone: list[float] = []
    listener = Listener(url, 1.5, lambda: looks.append(time.monotonic()), lambda: None, lambda: gone.append(1))
    listener.start()
    try:
        assert wait_for(lambda: len(looks) >= 1), "the listener connected and looked once"
        time.sleep(0.1)
        for _ in range(2):  # a node that starts and is killed before the next look, twice
            with psycopg.connect(url, autocommit=True) as brief:
                brief.execute("SELECT pg_advisory_lock(%s, pg_backend_pid())", (PRESENCE_CLASS,))
                brief.execute("SELECT pg_notify(%s, pg_backend_pid()::text)", (NODES_CHANNEL,))
                time.sleep(0.2)
            before = len(gone)
            assert wait_for(lambda b=before: len(gone) > b, timeout=5), "the brief node's leaving was seen"
        # a node that stays is not reported gone
        with psycopg.connect(url, autocommit=True) as staying:
            staying.execute("SELECT pg_advisory_lock(%s, pg_backend_pid())", (PRESENCE_CLASS,))
            staying.execute("SELECT pg_notify(%s, pg_backend_pid()::text)", (NODES_CHANNEL,))
            count = len(gone)
            time.sleep(3.5)  # two looks
            assert len(gone) == count
    finally:
        listener.stop()
