"""The ``maintenanceWindow.opened`` event: a machine's maintenance window opens while automatic upgrades on it
wait for one. On the manual clock with simulated hosts, against a real local receiver that verifies every
delivery with `standardwebhooks` (tests/webhook_receiver.py); the event is in the activity log too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from arcext.activity import WINDOW_OPENED_OPERATION
from arcext.testing import ArcextServer
from conftest import machine_url, put_extension
from test_webhooks import FAST, new_secret
from webhook_receiver import Receiver
from windows_setup import assign_machines, put_json, window_configuration

AMA = ("Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent", "1.0.0", "1.1.0")
DEPENDENCY = ("Microsoft.Azure.Monitoring.DependencyAgent", "DependencyAgentWindows", "9.10.0", "9.10.1")
OPENED = "com.arcext.maintenanceWindow.opened"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver(new_secret())
    yield rx
    rx.close()


def _machine(s: requests.Session, arc: ArcextServer, m: str, extensions: list[tuple[str, str, str, str]]) -> None:
    put_json(s, machine_url(arc, m, "rg1"), {"location": "eastus"})
    for name, (publisher, type_, version, _new) in zip(("ama", "dep"), extensions, strict=False):
        put_extension(s, arc, name, m, "rg1", {"publisher": publisher, "type": type_, "typeHandlerVersion": version})


def _opened_in_log(arc: ArcextServer) -> list[dict[str, Any]]:
    return arc.activity_log(since="2020-01-01T00:00:00Z", filter=f"operationName eq '{WINDOW_OPENED_OPERATION}'")


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_one_window_opened_event_per_machine_with_waiting_work(receiver: Receiver) -> None:
    config = {**FAST, "ARCEXT_BATCH_PERCENT": 100}  # one wave: every target is due when the version is published
    with ArcextServer(manual_clock=True, simulate=True, config=config) as arc, arc.session() as s:
        put = s.put(
            f"{arc.url}/arcext/v1/webhooks/ops",
            json={"url": receiver.url, "events": ["*"], "secret": receiver.secret},
        )
        assert put.status_code == 201, put.text
        _machine(s, arc, "m1", [AMA, DEPENDENCY])  # two extensions wait on m1: still one event for it
        _machine(s, arc, "m2", [AMA])
        _machine(s, arc, "m3", [AMA])  # no maintenance window: never waits, never announced
        _machine(s, arc, "m4", [])  # a window, but nothing to upgrade: never announced

        # a daily three-hour window (UTC) that opens six hours from now
        opens = (arc.now() + timedelta(hours=6)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        mw = window_configuration(s, arc, "nightly", opens.strftime("%Y-%m-%d %H:%M"), "03:00", "UTC", "Day")
        assign_machines(s, arc, ["m1", "m2", "m4"], "nightly", mw)

        # outside the window: the assigned machines wait, the unassigned one upgrades, nothing opens
        for publisher, type_, _old, new in (AMA, DEPENDENCY):
            arc.publish_version(publisher, type_, new)
        assert arc.run_engine()["succeeded"] == 1  # m3
        arc.advance(hours=2)
        assert arc.services.webhooks.wait_delivered(15)
        assert not [e for e in receiver.events() if e["type"] == OPENED]
        assert _opened_in_log(arc) == []

        # into the window: one event per machine whose upgrades waited, then they run
        summary = arc.advance(hours=4, minutes=30)
        assert summary["succeeded"] == 3, summary  # m1's two extensions and m2's
        arc.advance(hours=1)  # still in the window, nothing waits any more: nothing new
        arc.advance(days=1)  # the next day's window opens with nothing waiting: nothing new
        assert arc.services.webhooks.wait_delivered(15)

        opened = [e for e in receiver.events() if e["type"] == OPENED]
        assert receiver.bad_signatures == 0
        by_machine = {e["subject"].rsplit("/", 1)[1]: e for e in opened}
        assert len(opened) == 2 and set(by_machine) == {"m1", "m2"}, [e["subject"] for e in opened]
        logged = {e["eventDataId"]: e for e in _opened_in_log(arc)}
        assert set(logged) == {e["id"] for e in opened}, "each delivered event is the activity-log event"
        for event in opened:
            data = event["data"]
            assert data == logged[event["id"]]
            assert event["specversion"] == "1.0" and event["source"] == "/arcext/activitylog"
            assert data["operationName"]["value"] == WINDOW_OPENED_OPERATION
            assert data["resourceType"]["value"] == "Microsoft.HybridCompute/machines"
            props = data["properties"]
            assert props["maintenanceConfigurationIds"] == [mw["id"]]
            assert _stamp(props["windowStart"]) == opens
            assert _stamp(props["windowEnd"]) == opens + timedelta(hours=3)
            assert opens <= _stamp(data["eventTimestamp"]) < opens + timedelta(hours=3)
        waiting = {
            m: sorted((w["extension"], w["targetVersion"]) for w in e["data"]["properties"]["waitingExtensions"])
            for m, e in by_machine.items()
        }
        assert waiting == {"m1": [("ama", "1.1.0"), ("dep", "9.10.1")], "m2": [("ama", "1.1.0")]}
        m1_started = [
            e
            for e in arc.activity_log(since="2020-01-01T00:00:00Z", filter="status eq 'Started'")
            if "/machines/m1/" in e["resourceId"]
        ]
        assert len(m1_started) == 2 and all(
            e["eventTimestamp"] >= by_machine["m1"]["data"]["eventTimestamp"] for e in m1_started
        ), "the event is written as the window releases the upgrades, before they start"
        # per machine, the opening arrives before the upgrades it released
        order = [e["type"] for e in receiver.events() if e["subject"].split("/extensions/")[0].endswith("/m2")]
        assert order == [OPENED, "com.arcext.upgrade.started", "com.arcext.upgrade.succeeded"], order
