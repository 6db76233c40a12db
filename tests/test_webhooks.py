"""Signed webhooks against a real local HTTP receiver that verifies every delivery with `standardwebhooks`.

Rollouts run on the manual clock with simulated hosts through the harness (publish_version, advance,
set_faults); retries are fast (ARCEXT_WEBHOOK_RETRY_BASE=0.05 s).
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, ext_url, machine_url, serve_environment, wait_operation
from test_durability import ServeProcess
from webhook_receiver import Receiver

PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
FAST = {"ARCEXT_WEBHOOK_RETRY_BASE": 0.05, "ARCEXT_WEBHOOK_RETRY_MAX": 0.2}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver(new_secret())
    yield rx
    rx.close()


def fleet(s: requests.Session, url_of: ArcextServer | Any, machines: list[str]) -> None:
    for m in machines:
        r = s.put(machine_url(url_of, m), params={"api-version": API}, json={"location": "eastus"})
        assert r.status_code == 200, r.text
        body = {"location": "eastus", "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0.0"}}
        r = s.put(ext_url(url_of, "ama", m), params={"api-version": API}, json=body)
        assert wait_operation(s, r)["status"] == "Succeeded"


def activity_events(arc: ArcextServer) -> list[dict[str, Any]]:
    return arc.activity_log(since="2020-01-01T00:00:00Z")


def stored_registry(arc: ArcextServer) -> str:
    """The registry as the server stored it: ``hooks.json``, or the rows of ``webhook_hooks`` on PostgreSQL."""
    if arc.database_url is None:
        return (arc.data_dir / "webhooks" / "hooks.json").read_text()
    import psycopg

    with psycopg.connect(arc.database_url) as conn:
        return repr(conn.execute("SELECT * FROM webhook_hooks").fetchall())


def wait_for(predicate: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def by_subject(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        out.setdefault(e["subject"], []).append(e["type"].removeprefix("com.arcext."))
    return out


def test_a_rollout_with_one_rollback_arrives_signed_in_order(receiver: Receiver) -> None:
    with ArcextServer(manual_clock=True, simulate=True, config=FAST) as arc, arc.session() as s:
        put = s.put(
            f"{arc.url}/arcext/v1/webhooks/pager",
            json={"url": receiver.url, "events": ["*"], "secret": receiver.secret},
        )
        assert put.status_code == 201, put.text
        assert "secret" not in put.json()
        got = s.get(f"{arc.url}/arcext/v1/webhooks/pager").json()
        assert "secret" not in got and got["enabled"] is True and receiver.secret not in str(got)
        fleet(s, arc, ["m1", "m2", "m3"])
        arc.set_faults("m1", fail_upgrade=1)
        rollout_id = arc.publish_version(PUB, TYPE, "1.1.0")["rolloutId"]
        assert arc.advance(days=60)["rolledBack"] == 1
        assert arc.advance(hours=2)["succeeded"] == 1
        assert arc.services.webhooks.wait_delivered(15)

        events = receiver.events()
        assert receiver.bad_signatures == 0
        assert all(e["specversion"] == "1.0" and e["datacontenttype"] == "application/json" for e in events)
        # every activity-log event of the rollout arrived (at least once), carrying the event's own fields
        log = {e["eventDataId"]: e for e in activity_events(arc)}
        delivered = {e["id"]: e for e in events}
        assert set(log) <= set(delivered)
        for event_id, logged in log.items():
            assert delivered[event_id]["data"] == logged
            assert delivered[event_id]["subject"] == logged["resourceId"]
        # per extension, a consistent order: attempt 1 rolled back, attempt 2 succeeded
        order = by_subject(events)
        m1 = next(k for k in order if k.endswith("/machines/m1/extensions/ama"))
        assert order[m1] == ["upgrade.started", "upgrade.rolledBack", "upgrade.started", "upgrade.succeeded"]
        for m in ("m2", "m3"):
            key = next(k for k in order if k.endswith(f"/machines/{m}/extensions/ama"))
            assert order[key] == ["upgrade.started", "upgrade.succeeded"]
        rolled_back = next(e for e in events if e["type"] == "com.arcext.upgrade.rolledBack")
        assert rolled_back["data"]["properties"]["rolledBack"] is True
        assert rolled_back["data"]["properties"]["fromVersion"] == "1.0.0"
        assert rolled_back["data"]["properties"]["rolloutId"] == rollout_id
        assert order[f"/arcext/v1/rollouts/{rollout_id}"] == ["rollout.planned", "rollout.completed"]
        # the headers are the Standard Webhooks ones, and webhook-id is the CloudEvent id
        first = receiver.received[0]["headers"]
        assert first["webhook-id"] == receiver.received[0]["event"]["id"]
        assert first["webhook-signature"].startswith("v1,") and first["webhook-timestamp"].isdigit()
        # deliveries are listed with their outcome
        listed = s.get(f"{arc.url}/arcext/v1/webhooks/pager/deliveries").json()["value"]
        assert len(listed) == len(events)
        assert {d["state"] for d in listed} == {"Delivered"} and all(d["lastStatus"] == 200 for d in listed)


def test_frozen_and_resumed_rollouts_carry_the_breakers_figures(receiver: Receiver) -> None:
    config = {**FAST, "ARCEXT_BATCH_PERCENT": 100}
    with ArcextServer(manual_clock=True, simulate=True, config=config) as arc, arc.session() as s:
        r = s.put(
            f"{arc.url}/arcext/v1/webhooks/rollouts",
            json={"url": receiver.url, "events": ["rollout.frozen", "rollout.resumed"], "secret": receiver.secret},
        )
        assert r.status_code == 201, r.text
        fleet(s, arc, ["m1", "m2", "m3"])
        arc.set_faults("m1", fail_upgrade=1)
        arc.set_faults("m2", fail_upgrade=1)
        rollout_id = arc.publish_version(PUB, TYPE, "1.1.0")["rolloutId"]
        arc.advance(days=60)
        assert arc.rollout(rollout_id)["state"] == "Frozen"
        arc.set_rollout_state(rollout_id, "resume")
        assert arc.services.webhooks.wait_delivered(15)
        types = [e["type"] for e in receiver.events()]
        assert types == ["com.arcext.rollout.frozen", "com.arcext.rollout.resumed"], "only the asked-for types"
        frozen = receiver.events()[0]["data"]
        breaker = frozen["properties"]["breaker"]
        assert breaker["thresholdPercent"] == 20
        assert [(b["failed"], b["succeeded"]) for b in breaker["batches"]] == [(2, 1)]
        assert "Circuit breaker" in frozen["properties"]["stateReason"]
        assert frozen["level"] == "Warning" and frozen["correlationId"] == rollout_id


def test_receiver_down_then_back_loses_nothing(receiver: Receiver) -> None:
    with ArcextServer(manual_clock=True, simulate=True, config=FAST) as arc, arc.session() as s:
        arc.admin("PUT", "webhooks/ops", json={"url": receiver.url, "secret": receiver.secret})
        receiver.status = 503
        fleet(s, arc, ["m1", "m2"])
        arc.publish_version(PUB, TYPE, "1.1.0")
        arc.advance(days=60)
        assert wait_for(lambda: receiver.refused >= 3), "retries while the receiver is down"
        pending = arc.admin("GET", "webhooks/ops/deliveries")["value"]
        assert pending and all(d["state"] == "Pending" for d in pending)
        assert any(d["attempts"] >= 2 and d["lastError"] == "HTTP 503" and d["nextAttemptAt"] for d in pending)
        assert receiver.events() == []
        receiver.status = 200
        assert arc.services.webhooks.wait_delivered(15)
        ids = {e["id"] for e in receiver.events()}
        assert {e["eventDataId"] for e in activity_events(arc)} <= ids
        metrics = requests.get(f"{arc.url}/metrics", headers={"Authorization": f"Bearer {arc.token}"}).text
        assert 'arcext_webhook_deliveries_total{outcome="retrying",webhook="ops"}' in metrics
        assert 'arcext_webhook_deliveries_total{outcome="delivered",webhook="ops"}' in metrics


def test_410_disables_the_webhook_and_a_put_enables_it_again(receiver: Receiver) -> None:
    with ArcextServer(manual_clock=True, simulate=True, config=FAST) as arc, arc.session() as s:
        arc.admin("PUT", "webhooks/gone", json={"url": receiver.url, "secret": receiver.secret})
        receiver.status = 410
        fleet(s, arc, ["m1"])
        arc.publish_version(PUB, TYPE, "1.1.0")
        assert wait_for(lambda: arc.admin("GET", "webhooks/gone")["enabled"] is False)
        hook = arc.admin("GET", "webhooks/gone")
        assert "410" in hook["disabledReason"] and receiver.refused == 1
        assert arc.admin("GET", "webhooks/gone/deliveries")["value"][-1]["state"] == "Gone"
        receiver.status = 200
        arc.admin("PUT", "webhooks/gone", json={"url": receiver.url, "secret": receiver.secret})
        arc.advance(days=60)
        assert arc.services.webhooks.wait_delivered(15)
        assert {e["type"] for e in receiver.events()} >= {"com.arcext.upgrade.started", "com.arcext.upgrade.succeeded"}


def test_the_api_validates_and_never_returns_the_secret() -> None:
    with ArcextServer(simulate=True) as arc, arc.session() as s:
        base = f"{arc.url}/arcext/v1/webhooks"
        made = s.put(f"{base}/a", json={"url": "http://127.0.0.1:9/x", "events": ["upgrade.failed"]})
        assert made.status_code == 201
        generated = made.json()["secret"]
        assert generated.startswith("whsec_"), "a PUT without a secret gets one, shown once"
        assert generated not in s.get(f"{base}/a").text and generated not in s.get(base).text
        sealed = stored_registry(arc)
        assert "http://127.0.0.1:9/x" in sealed, "the registry as stored"
        assert generated not in sealed and generated.removeprefix("whsec_") not in sealed
        again = s.put(f"{base}/a", json={"url": "http://127.0.0.1:9/y", "secret": new_secret()})
        assert again.status_code == 200 and "secret" not in again.json()
        for bad in (
            {"url": "ftp://example/x"},
            {"url": "http://user:pw@127.0.0.1/x"},
            {"url": "http://127.0.0.1/x", "events": ["upgrade.exploded"]},
            {"url": "http://127.0.0.1/x", "secret": "short"},
        ):
            r = s.put(f"{base}/b", json=bad)
            assert r.status_code == 400, (bad, r.text)
        reader = arc.create_token("Reader", "/")
        assert requests.get(base, headers={"Authorization": f"Bearer {reader}"}).status_code == 403
        assert s.delete(f"{base}/a").status_code == 200
        assert s.delete(f"{base}/a").status_code == 204
        assert s.get(f"{base}/a").status_code == 404


def test_an_outbox_missing_events_after_a_crash_is_repaired_at_start(tmp_path: Path, receiver: Receiver) -> None:
    """The window between the activity log (durable with the job) and the outbox (written a moment later)."""
    with ArcextServer(tmp_path / "d", manual_clock=True, simulate=True, config=FAST) as arc, arc.session() as s:
        arc.admin("PUT", "webhooks/h", json={"url": receiver.url, "secret": receiver.secret})
        fleet(s, arc, ["m1"])
        receiver.status = 503
        hooks = arc.services.webhooks
        hooks.on_events = lambda events: None  # type: ignore[method-assign]  # the outbox never hears of them
        arc.publish_version(PUB, TYPE, "1.1.0")
        arc.advance(days=60)
        expected = {e["eventDataId"] for e in activity_events(arc)}
        assert expected and not receiver.events()
    receiver.status = 200
    with ArcextServer(tmp_path / "d", manual_clock=True, simulate=True, config=FAST) as arc:
        assert arc.services.webhooks.wait_delivered(15)
        assert expected <= {e["id"] for e in receiver.events()}


# --- kill -9 with deliveries pending -------------------------------------------------------------------
@pytest.mark.slow
def test_deliveries_pending_at_kill_9_are_delivered_after_restart(tmp_path: Path) -> None:
    data_dir, logs = tmp_path / "data", tmp_path / "logs"
    logs.mkdir()
    secret = new_secret()
    rx = Receiver(secret)
    rx.status = 503
    env = {"ARCEXT_WEBHOOK_RETRY_BASE": "0.05", "ARCEXT_WEBHOOK_RETRY_MAX": "0.2"}
    old_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        server = Serve(data_dir, logs, 1, ["--manual-clock", "--simulate", "--log-format", "json"])
        try:
            assert server.token_path is not None
            token = server.token_path.read_text().strip()
            with requests.Session() as s:
                s.headers["Authorization"] = f"Bearer {token}"
                target = _Url(server.url)
                hook = {"url": rx.url, "secret": secret}
                assert s.put(f"{server.url}/arcext/v1/webhooks/h", json=hook).status_code == 201
                fleet(s, target, ["m1", "m2"])
                s.put(f"{server.url}/arcext/v1/catalog/{PUB}/{TYPE}/versions/1.1.0", json={"critical": False})
                s.post(f"{server.url}/arcext/v1/clock/advance", json={"seconds": 60 * 86400})
                s.post(f"{server.url}/arcext/v1/engine/run")
                assert wait_for(lambda: len(_events(s, server.url, target.sub)) == 4)
                assert wait_for(lambda: rx.refused >= 2)
                pending = s.get(f"{server.url}/arcext/v1/webhooks/h/deliveries").json()["value"]
                assert len(pending) >= 5 and all(d["state"] == "Pending" for d in pending)
        finally:
            server.kill()
        rx.status = 200
        server = Serve(data_dir, logs, 2, ["--manual-clock", "--simulate", "--log-format", "json"])
        try:
            with requests.Session() as s:
                s.headers["Authorization"] = f"Bearer {token}"
                expected = {e["eventDataId"] for e in _events(s, server.url, target.sub)}
                assert len(expected) == 4

                def deliveries() -> list[dict[str, Any]]:
                    listed: list[dict[str, Any]] = s.get(f"{server.url}/arcext/v1/webhooks/h/deliveries").json()[
                        "value"
                    ]
                    return listed

                # wait until the outbox has nothing pending (its messages go out in order, and rollout.completed
                # comes after the upgrade events: the upgrade events arriving does not mean it has), then
                # compare what the receiver verified with what the activity log and the rollout hold
                assert wait_for(lambda: all(d["state"] == "Delivered" for d in deliveries()), 20), deliveries()
                assert expected <= {e["id"] for e in rx.events()}
                types = {e["type"] for e in rx.events()}
                assert {"com.arcext.rollout.planned", "com.arcext.rollout.completed"} <= types, "rollout events lost"
                listed = deliveries()
                assert {d["id"] for d in listed if d["state"] == "Delivered"} >= expected
        finally:
            server.kill()
        # the server's log is one JSON object per line (--log-format json)
        import json

        lines = [ln for ln in (logs / "serve-1.err").read_text().splitlines() if ln.strip()]
        parsed = [json.loads(ln) for ln in lines]
        assert any(p.get("event") == "http.request" and p.get("x-ms-request-id") for p in parsed)
        assert any(p.get("event") == "upgrade.step" and p.get("rolloutId") for p in parsed)
    finally:
        rx.close()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _events(s: requests.Session, url: str, sub: str) -> list[dict[str, Any]]:
    answer = s.get(
        f"{url}/subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values",
        params={"api-version": "2015-04-01", "$filter": "eventTimestamp ge '2020-01-01T00:00:00Z'"},
    )
    value: list[dict[str, Any]] = answer.json()["value"]
    return value


class _Url:
    """What conftest's URL helpers need of a server: its url (and the default subscription)."""

    def __init__(self, url: str) -> None:
        from conftest import SUB

        self.url = url
        self.sub = SUB


class Serve(ServeProcess):
    """test_durability's `arcext serve` subprocess, with more options."""

    def __init__(self, data_dir: Path, log_dir: Path, generation: int, options: list[str]) -> None:
        self.stdout_path = log_dir / f"serve-{generation}.out"
        self.stderr_path = log_dir / f"serve-{generation}.err"
        command = [sys.executable, "-m", "arcext.cli", "serve", "--port", "0", "--data-dir", str(data_dir), *options]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, env=serve_environment(PYTHONUNBUFFERED="1"))
        self.url, self.token_path = self._wait_listening(timeout=30)


def test_a_new_webhook_hears_only_of_what_happens_after_it_even_across_restarts(
    tmp_path: Path, receiver: Receiver
) -> None:
    with ArcextServer(tmp_path / "d", manual_clock=True, simulate=True, config=FAST) as arc, arc.session() as s:
        fleet(s, arc, ["m1"])
        arc.publish_version(PUB, TYPE, "1.1.0")
        arc.advance(days=60)  # planned, run and completed before any webhook existed
        arc.admin("PUT", "webhooks/late", json={"url": receiver.url, "secret": receiver.secret})
    with ArcextServer(tmp_path / "d", manual_clock=True, simulate=True, config=FAST) as arc:
        arc.publish_version(PUB, TYPE, "1.2.0")
        arc.advance(days=60)
        assert arc.services.webhooks.wait_delivered(15)
        versions = {
            e["data"]["properties"].get("toVersion") or e["data"]["properties"].get("version")
            for e in receiver.events()
        }
        assert versions == {"1.2.0"}, receiver.events()


def test_a_message_older_than_the_maximum_age_expires(receiver: Receiver) -> None:
    config = {**FAST, "ARCEXT_WEBHOOK_MAX_AGE": 0.3}
    with ArcextServer(manual_clock=True, simulate=True, config=config) as arc, arc.session() as s:
        arc.admin("PUT", "webhooks/old", json={"url": receiver.url, "secret": receiver.secret, "events": ["*"]})
        receiver.status = 503
        fleet(s, arc, ["m1"])
        arc.publish_version(PUB, TYPE, "1.1.0")
        arc.advance(days=60)
        assert arc.services.webhooks.wait_delivered(15), "every message expires"
        listed = arc.admin("GET", "webhooks/old/deliveries")["value"]
        assert listed and {d["state"] for d in listed} == {"Expired"}
        assert all(d["attempts"] >= 1 and d["lastError"] == "HTTP 503" for d in listed)
        assert max(d["attempts"] for d in listed) >= 2, "retried before it expired"
        assert arc.admin("GET", "webhooks/old")["enabled"] is True, "expiry does not disable the webhook"
        receiver.status = 200
        arc.publish_version(PUB, TYPE, "1.2.0")
        arc.advance(days=60)
        assert arc.services.webhooks.wait_delivered(15)
        assert {e["type"] for e in receiver.events()} >= {"com.arcext.upgrade.succeeded"}
