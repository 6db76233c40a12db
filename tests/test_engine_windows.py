"""Maintenance windows and the upgrade engine, on the manual clock and simulated hosts.

A weekly two-hour window (Saturday 22:00-00:00, Pacific time) is assigned to part of a fleet, to some
machines directly and to others through a resource group assignment with a tag filter. A critical version
is published three weeks before the US daylight-saving change; one assigned machine fails its upgrade
eight times, so its hourly retries carry it across the change. Every upgrade Started event of an assigned
machine falls inside its window on the Pacific wall clock; the unassigned machines upgrade when their
wave starts; the rollout completes without being Stalled and the engine's audit finds nothing to repair.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from arcext.activity import UPGRADE_OPERATION
from arcext.testing import ArcextServer
from conftest import API, SUB, machine_url, put_extension
from windows_setup import MW_API, assign, assign_machines, put_json, window_configuration

PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
PACIFIC = ZoneInfo("America/Los_Angeles")
ASSIGNED_DIRECTLY = ["m0", "m1", "m2"]
ASSIGNED_BY_GROUP = ["g4", "g5"]  # in rg-win, tagged maint=weekend
UNASSIGNED = [("rg1", "m3"), ("rg-win", "g6"), ("rg1", "m7"), ("rg1", "m8"), ("rg1", "m9")]


@pytest.fixture(scope="module")
def arc() -> Iterator[ArcextServer]:
    with ArcextServer(manual_clock=True, simulate=True) as server:
        yield server


def _next_dst_change(after: datetime) -> datetime:
    """The first instant after ``after`` at which Pacific time changes its UTC offset (hour resolution)."""
    t = after.replace(minute=0, second=0, microsecond=0)
    offset = t.astimezone(PACIFIC).utcoffset()
    while t.astimezone(PACIFIC).utcoffset() == offset:
        t += timedelta(hours=1)
    return t


def _extension(s: requests.Session, arc: ArcextServer, rg: str, m: str) -> None:
    put_extension(s, arc, "ama", m, rg, {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0.0"})


def _started(arc: ArcextServer, since: datetime) -> dict[str, list[datetime]]:
    """Upgrade Started events per machine name."""
    found: dict[str, list[datetime]] = {}
    for event in arc.activity_log(since=since, filter=f"operationName eq '{UPGRADE_OPERATION}'"):
        if event["status"]["value"] != "Started":
            continue
        name = event["resourceId"].split("/machines/")[1].split("/")[0]
        found.setdefault(name, []).append(datetime.fromisoformat(event["eventTimestamp"].replace("Z", "+00:00")))
    return {k: sorted(v) for k, v in found.items()}


def _version(s: requests.Session, arc: ArcextServer, rg: str, m: str) -> str:
    r = s.get(f"{machine_url(arc, m, rg)}/extensions/ama", params={"api-version": API})
    return str(r.json()["properties"]["typeHandlerVersion"])


def test_weekly_window_across_daylight_saving(arc: ArcextServer) -> None:
    s = arc.session()
    change = _next_dst_change(arc.now() + timedelta(days=30))
    publish_at = change - timedelta(days=25)
    arc.advance(seconds=(publish_at - arc.now()).total_seconds())

    for m in [*ASSIGNED_DIRECTLY, "m3", "m7", "m8", "m9"]:
        put_json(s, machine_url(arc, m, "rg1"), {"location": "eastus"})
        _extension(s, arc, "rg1", m)
    for m in ASSIGNED_BY_GROUP:
        put_json(s, machine_url(arc, m, "rg-win"), {"location": "eastus", "tags": {"maint": "weekend"}})
        _extension(s, arc, "rg-win", m)
    put_json(s, machine_url(arc, "g6", "rg-win"), {"location": "eastus", "tags": {"maint": "never"}})
    _extension(s, arc, "rg-win", "g6")

    local_start = arc.now().astimezone(PACIFIC).strftime("%Y-%m-%d") + " 22:00"
    config = window_configuration(s, arc, "sat", local_start, "02:00", "Pacific Standard Time", "Week Saturday")
    assign_machines(s, arc, ASSIGNED_DIRECTLY, "sat", config)
    assign(
        s,
        f"{arc.url}/subscriptions/{SUB}/resourceGroups/rg-win",
        "sat",
        config,
        {"tagSettings": {"tags": {"maint": ["weekend"]}, "filterOperator": "Any"}},
    )
    arc.set_faults("m0", fail_upgrade=8)  # two attempts per window (retries an hour apart): five windows

    published_at = arc.now()
    rollout_id = arc.publish_version(PUB, TYPE, "1.1.0", critical=True)["rolloutId"]
    arc.run_engine()

    waiting_seen = False
    everyone = [("rg1", m) for m in ASSIGNED_DIRECTLY] + [("rg-win", m) for m in ASSIGNED_BY_GROUP] + UNASSIGNED
    for _hour in range(24 * 70):
        arc.advance(hours=1)
        if not waiting_seen:
            for rg, m in [("rg1", m) for m in ASSIGNED_DIRECTLY] + [("rg-win", m) for m in ASSIGNED_BY_GROUP]:
                r = s.get(f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/{rg}/machines/{m}/pending")
                item = r.json()["extensions"][0]
                if "waiting for maintenance window, next opens at" in (item["reason"] or ""):
                    due = datetime.fromisoformat(item["dueAt"].replace("Z", "+00:00")).astimezone(PACIFIC)
                    assert (due.strftime("%A %H:%M"), due >= arc.now()) == ("Saturday 22:00", True), item
                    assert r.json()["maintenanceWindows"][0]["name"] == "sat"
                    waiting_seen = True
        # machines waiting for their window are neither stuck nor inconsistent: the invariant audit repairs
        # nothing and finds no stall
        assert arc.services.engine.audit() == []
        rollout = arc.rollout(rollout_id)
        assert rollout["state"] != "Stalled", rollout
        if rollout["state"] == "Completed" and all(_version(s, arc, rg, m) == "1.1.0" for rg, m in everyone):
            break
    else:
        raise AssertionError(f"the version did not reach every machine: {arc.rollout(rollout_id)}")
    assert waiting_seen, "no assigned machine ever showed that it waits for its window"
    assert arc.services.engine.audit() == []

    started = _started(arc, published_at)
    offsets = set()
    for m in ASSIGNED_DIRECTLY + ASSIGNED_BY_GROUP:
        assert started.get(m), f"{m} never started an upgrade"
        for at in started[m]:
            local = at.astimezone(PACIFIC)
            assert local.strftime("%A") == "Saturday" and local.hour in (22, 23), f"{m} started at {local}"
            offsets.add(local.utcoffset())
    assert len(started["m0"]) == 9  # eight failures, then success: every retry waited for a window
    assert offsets == {timedelta(hours=-8), timedelta(hours=-7)}, "the windows must span the daylight-saving change"

    # the unassigned machines upgrade as soon as their wave starts: assigned ones never held them back
    planned = arc.rollout(rollout_id, targets=True)
    wave_start: dict[str, datetime] = {}
    for phase in planned["phases"]:
        for wave in phase["waves"]:
            for batch in wave["batches"]:
                for target in batch["targets"]:
                    name = target.split("/machines/")[1].split("/")[0]
                    wave_start[name] = datetime.fromisoformat(wave["notBefore"].replace("Z", "+00:00"))
    for _rg, m in UNASSIGNED:
        first = started[m][0]
        assert first - wave_start[m] <= timedelta(hours=1), f"{m} waited: wave at {wave_start[m]}, started {first}"
    assert max(started[m][0] for _rg, m in UNASSIGNED) < published_at + timedelta(weeks=3, hours=1)


def test_manual_upgrades_ignore_windows_and_windows_survive_a_restart(tmp_path: Any) -> None:
    """A machine whose only window is weeks away: the automatic rollout waits (and says so), a manual
    upgrade runs at once; the configuration and assignment are still there after a restart, and the
    automatic upgrade then runs in the window."""
    with ArcextServer(tmp_path / "data", manual_clock=True, simulate=True) as arc:
        s = arc.session()
        for m in ("m1", "m2"):
            put_json(s, machine_url(arc, m, "rg1"), {"location": "eastus"})
            _extension(s, arc, "rg1", m)
        # the window opens six hours after the rollout's last wave is due (20 days in: a critical version's
        # waves spread over three weeks), so whichever wave m1 is in, it waits for the window
        opens_local = (
            (arc.now() + timedelta(days=20, hours=6))
            .astimezone(ZoneInfo("Europe/Berlin"))
            .replace(second=0, microsecond=0)
        )
        config = window_configuration(
            s,
            arc,
            "w",
            opens_local.strftime("%Y-%m-%d %H:%M"),
            "03:00",
            "W. Europe Standard Time",
            "Month",
            location="westeurope",
        )
        assign(s, f"{arc.url}/subscriptions/{SUB}", "all", config, {"locations": ["East US"]})
        arc.publish_version(PUB, TYPE, "1.1.0", critical=True)
        arc.run_engine()
        r = s.get(f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/m1/pending")
        item = r.json()["extensions"][0]
        assert "waiting for maintenance window, next opens at" in item["reason"], item
        assert datetime.fromisoformat(item["dueAt"].replace("Z", "+00:00")) == opens_local.replace(
            tzinfo=ZoneInfo("Europe/Berlin")
        )

        manual = s.post(
            f"{machine_url(arc, 'm2', 'rg1')}/upgradeExtensions",
            params={"api-version": API},
            json={"extensionTargets": {f"{PUB}.{TYPE}": {"targetVersion": "1.1.0"}}},
        )
        assert manual.status_code == 202, manual.text
        for _ in range(100):
            if _version(s, arc, "rg1", "m2") == "1.1.0":
                break
            arc.run_engine()
        assert _version(s, arc, "rg1", "m2") == "1.1.0", "a manual upgrade ignores windows"
        assert _version(s, arc, "rg1", "m1") == "1.0.0"

    with ArcextServer(tmp_path / "data", manual_clock=True, simulate=True) as arc:
        s = arc.session()
        got = s.get(
            f"{arc.url}/subscriptions/{SUB}/providers/Microsoft.Maintenance/configurationAssignments",
            params={"api-version": MW_API},
        )
        assert [a["name"] for a in got.json()["value"]] == ["all"]
        for _hour in range(24 * 21):
            arc.advance(hours=1)
            if _version(s, arc, "rg1", "m1") == "1.1.0":
                break
        started = _started(arc, arc.now() - timedelta(days=60))
        (first,) = started["m1"]
        local = first.astimezone(ZoneInfo("Europe/Berlin"))
        window_start = opens_local.replace(tzinfo=ZoneInfo("Europe/Berlin"))
        assert window_start <= local < window_start + timedelta(hours=3)


# --- late results: a wave's targets that waited for their window feed its breaker when they run -----------------
EAST = ["m1", "m2", "m3", "m4"]
WEST = ["w1", "w2", "w3", "w4", "w5"]


def _late_rollout(tmp_path: Any, fail: bool, hook: Any = None) -> tuple[ArcextServer, str]:
    """Two regions, one wave each (batch 100%). In eastus m1 and m2 have a daily window that opens six hours
    after the version is published, m3 and m4 none; westus has w1-w5 (no windows). Returns the running server
    and the rollout once eastus's wave has completed with m1 and m2 waiting for their window and the clock has
    moved into it (``hook``: a receiver that gets the rollout.frozen webhook)."""
    from test_webhooks import FAST

    arc = ArcextServer(
        tmp_path / "data", manual_clock=True, simulate=True, config={**FAST, "ARCEXT_BATCH_PERCENT": 100}
    )
    arc.start()
    s = arc.session()
    if hook is not None:
        body = {"url": hook.url, "events": ["rollout.frozen"], "secret": hook.secret}
        assert s.put(f"{arc.url}/arcext/v1/webhooks/pager", json=body).status_code == 201
    # the smaller region goes first: eastus's wave now, westus's four weeks later
    machines = [*((m, "eastus") for m in EAST), *((m, "westus") for m in WEST)]
    for m, location in machines:
        put_json(s, machine_url(arc, m, "rg1"), {"location": location})
        put_extension(s, arc, "ama", m, "rg1", {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0.0"})
    opens = (arc.now() + timedelta(hours=6)).astimezone(ZoneInfo("UTC")).replace(minute=0, second=0, microsecond=0)
    config = window_configuration(s, arc, "d", opens.strftime("%Y-%m-%d %H:%M"), "03:00", "UTC", "Day")
    assign_machines(s, arc, ["m1", "m2"], "d", config)
    for m in ("m1", "m2"):
        if fail:
            arc.set_faults(m, fail_upgrade=1)
    rollout_id = arc.publish_version(PUB, TYPE, "1.1.0")["rolloutId"]
    assert arc.run_engine()["succeeded"] == 2  # m3, m4: m1 and m2 wait for their window
    rollout = arc.rollout(rollout_id)
    (east,) = [p for p in rollout["phases"] if p["region"] == "eastus"]
    (batch,) = east["waves"][0]["batches"]
    assert east["waves"][0]["state"] == "Completed", "the wave does not wait for machines waiting for a window"
    assert (batch["succeeded"], batch["failed"], batch["skipped"], batch["waitingForWindow"]) == (2, 0, 2, 2)
    assert batch["late"] == {"succeeded": 0, "failed": 0}
    (west,) = [p for p in rollout["phases"] if p["region"] == "westus"]
    assert west["waves"][0]["notBefore"] > (opens + timedelta(hours=3)).isoformat().replace("+00:00", "Z"), (
        "the test needs westus's wave to come after the window"
    )
    assert rollout["state"] == "Active"
    arc.advance(hours=7)  # into the window: m1 and m2 run now, after their wave completed
    return arc, rollout_id


def test_late_failures_in_the_window_trip_the_waves_breaker(tmp_path: Any) -> None:
    from test_webhooks import new_secret
    from webhook_receiver import Receiver

    rx = Receiver(new_secret())
    arc: ArcextServer | None = None
    try:
        arc, rollout_id = _late_rollout(tmp_path, fail=True, hook=rx)
        rollout = arc.rollout(rollout_id)
        assert rollout["state"] == "Frozen", rollout
        assert "2 of 4 upgrades failed" in rollout["stateReason"] and "2 of them late" in rollout["stateReason"]
        (east,) = [p for p in rollout["phases"] if p["region"] == "eastus"]
        (batch,) = east["waves"][0]["batches"]
        assert (batch["succeeded"], batch["failed"], batch["skipped"]) == (2, 2, 0)
        assert batch["late"] == {"succeeded": 0, "failed": 2}
        assert rollout["lateResults"] == {"succeeded": 0, "failed": 2}
        # frozen: westus's wave never starts, however long we wait
        arc.advance(days=60)
        assert arc.rollout(rollout_id)["state"] == "Frozen"
        assert _version(arc.session(), arc, "rg1", "w1") == "1.0.0"
        # the same rollout.frozen webhook as a wave's breaker, with the breaker's figures and the late ones
        assert arc.services.webhooks.wait_delivered(15)
        assert rx.bad_signatures == 0
        (frozen,) = rx.events()
        assert frozen["type"] == "com.arcext.rollout.frozen" and frozen["data"]["correlationId"] == rollout_id
        (figures,) = frozen["data"]["properties"]["breaker"]["batches"]
        assert (figures["failed"], figures["succeeded"], figures["late"]) == (2, 2, {"succeeded": 0, "failed": 2})
    finally:
        if arc is not None:
            arc.stop()
        rx.close()


def test_late_successes_in_the_window_keep_the_rollout_going(tmp_path: Any) -> None:
    arc, rollout_id = _late_rollout(tmp_path, fail=False)
    try:
        rollout = arc.rollout(rollout_id)
        assert rollout["state"] == "Active", rollout
        assert rollout["lateResults"] == {"succeeded": 2, "failed": 0}
        for _day in range(60):
            arc.advance(days=1)
            if arc.rollout(rollout_id)["state"] == "Completed":
                break
        rollout = arc.rollout(rollout_id)
        assert rollout["state"] == "Completed", rollout
        assert rollout["counts"] == {"succeeded": 9, "failed": 0, "skipped": 0}
        s = arc.session()
        assert all(_version(s, arc, "rg1", m) == "1.1.0" for m in EAST + WEST)
    finally:
        arc.stop()
