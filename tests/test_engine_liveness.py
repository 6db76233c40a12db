"""Engine correctness under change (issue 18): rollouts that must not stall, manual upgrades that must
end, automatic upgrades that must not be lost, views that must not lie, a clock that must not forget.

Every test drives a live server on the manual clock with simulated hosts over HTTP, the way an
operator found each failure: time moves by ``clock/advance`` and work by ``engine/run``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, wait_operation

PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
HANDLER = f"{PUB}.{TYPE}"
DAY = 86400


# --- helpers -------------------------------------------------------------------------------------
def create(
    s: requests.Session, arc: ArcextServer, m: str, version: str = "1.0.0", rg: str = "rg1", wait: bool = True
) -> None:
    r = s.put(machine_url(arc, m, rg), params={"api-version": API}, json={"location": "eastus"})
    assert r.status_code == 200, r.text
    body = {
        "location": "eastus",
        "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": version, "settings": {"w": m}},
    }
    r = s.put(ext_url(arc, "ama", m, rg), params={"api-version": API}, json=body)
    assert r.status_code in (200, 202), r.text
    if wait:
        assert wait_operation(s, r)["status"] == "Succeeded"


def publish(s: requests.Session, arc: ArcextServer, version: str, critical: bool = False) -> None:
    r = s.put(f"{arc.url}/arcext/v1/catalog/{PUB}/{TYPE}/versions/{version}", json={"critical": critical})
    assert r.status_code == 201, r.text


def advance(s: requests.Session, arc: ArcextServer, seconds: float) -> None:
    r = s.post(f"{arc.url}/arcext/v1/clock/advance", json={"seconds": seconds})
    assert r.status_code == 200, r.text


def run(s: requests.Session, arc: ArcextServer) -> dict[str, Any]:
    r = s.post(f"{arc.url}/arcext/v1/engine/run")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def days(s: requests.Session, arc: ArcextServer, n: int, step: float = DAY) -> None:
    """Advance ``n`` days, running the engine after every step (hourly retries need the runs)."""
    run(s, arc)
    for _ in range(int(n * DAY / step)):
        advance(s, arc, step)
        run(s, arc)


def faults(s: requests.Session, arc: ArcextServer, m: str, **values: Any) -> None:
    r = s.put(f"{arc.url}/arcext/v1/simulated-hosts/{m}/faults", json=values)
    assert r.status_code == 200, r.text


def ext(s: requests.Session, arc: ArcextServer, m: str, rg: str = "rg1") -> dict[str, Any]:
    r = s.get(ext_url(arc, "ama", m, rg), params={"api-version": API})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def version_of(s: requests.Session, arc: ArcextServer, m: str, rg: str = "rg1") -> str:
    return str(ext(s, arc, m, rg)["properties"]["typeHandlerVersion"])


def rollouts(s: requests.Session, arc: ArcextServer, expand: bool = False) -> list[dict[str, Any]]:
    r = s.get(f"{arc.url}/arcext/v1/rollouts")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["value"]
    if expand:
        found = [s.get(f"{arc.url}/arcext/v1/rollouts/{x['id']}", params={"$expand": "targets"}).json() for x in found]
    return found


def rollout_of(s: requests.Session, arc: ArcextServer, version: str, expand: bool = False) -> dict[str, Any]:
    return next(r for r in rollouts(s, arc, expand) if r["version"] == version)


def wave_members(rollout: dict[str, Any]) -> dict[int, list[str]]:
    """Machine names per wave index (from ``$expand=targets``)."""
    out: dict[int, list[str]] = {}
    for phase in rollout["phases"]:
        for wave in phase["waves"]:
            out[wave["index"]] = [t.split("/machines/")[1].split("/")[0] for b in wave["batches"] for t in b["targets"]]
    return out


def pending(s: requests.Session, arc: ArcextServer, m: str, rg: str = "rg1") -> dict[str, Any]:
    r = s.get(f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/{rg}/machines/{m}/pending")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    item: dict[str, Any] = body["extensions"][0]
    item["now"] = body["now"]
    return item


def upgrade(s: requests.Session, arc: ArcextServer, m: str, version: str, rg: str = "rg1") -> requests.Response:
    return s.post(
        f"{machine_url(arc, m, rg)}/upgradeExtensions",
        params={"api-version": API},
        json={"extensionTargets": {HANDLER: {"targetVersion": version}}},
    )


def assert_all_settled(s: requests.Session, arc: ArcextServer) -> None:
    """Every rollout Completed, no wave left Running, counts add up to the eligible extensions."""
    for r in rollouts(s, arc):
        assert r["state"] == "Completed", (r["version"], r["state"], r["stateReason"], r["nextAction"])
        waves = [w for p in r["phases"] for w in p["waves"]]
        assert all(w["state"] == "Completed" for w in waves), r
        assert sum(r["counts"].values()) == r["eligible"], r


# --- 1. planning while creates are in flight -----------------------------------------------------
def test_rollout_planned_while_creates_are_in_flight_completes_with_true_counts(
    s: requests.Session, arc: ArcextServer
) -> None:
    machines = [(f"m{i:04d}", f"rg{i % 20:02d}") for i in range(2000)]

    def onboard(chunk: list[tuple[str, str]]) -> None:
        with arc.session() as client:
            for m, rg in chunk:
                create(client, arc, m, rg=rg, wait=False)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(onboard, [machines[i::8] for i in range(8)]))
    publish(s, arc, "1.1.0", critical=True)  # right after the last PUT answered
    assert arc.wait_for_operations(120)
    days(s, arc, 25)

    def version(pair: tuple[str, str]) -> str:
        with arc.session() as client:
            return version_of(client, arc, pair[0], pair[1])

    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(version, machines))
    assert versions.count("1.1.0") == 2000, f"{versions.count('1.1.0')} of 2000 on 1.1.0"
    rollout = rollout_of(s, arc, "1.1.0")
    assert rollout["state"] == "Completed", rollout["nextAction"]
    assert rollout["counts"]["succeeded"] == 2000, rollout["counts"]


# --- 2. a target that already holds a waiting job ------------------------------------------------
@pytest.mark.parametrize("how", ["toggle", "manual", "newer"])
def test_wave_closes_when_a_target_already_holds_a_waiting_job(
    s: requests.Session, arc: ArcextServer, how: str
) -> None:
    for i in range(50):
        create(s, arc, f"m{i:02d}")
    publish(s, arc, "1.1.0")
    if how == "newer":
        publish(s, arc, "1.2.0")
        newer = wave_members(rollout_of(s, arc, "1.2.0", expand=True))[0]
        older = wave_members(rollout_of(s, arc, "1.1.0", expand=True))
        # X retries 1.2.0 when 1.1.0's wave with X starts (the plans are shuffled by rollout id)
        wave, x = next((k, m) for k in range(1, 5) for m in newer if m in older[k])
    else:
        wave, x = 1, wave_members(rollout_of(s, arc, "1.1.0", expand=True))[1][0]
    faults(s, arc, x, failUpgrade=100_000)
    if how == "toggle":
        record = ext(s, arc, x)
        for flag in (False, True):
            body = {"location": "eastus", "properties": {**record["properties"], "enableAutomaticUpgrade": flag}}
            for k in ("provisioningState", "instanceView"):
                body["properties"].pop(k, None)
            r = s.put(ext_url(arc, "ama", x), params={"api-version": API}, json=body)
            assert wait_operation(s, r)["status"] == "Succeeded"
    elif how == "manual":
        r = upgrade(s, arc, x, "1.1.0")
        assert r.status_code == 202, r.text
        assert wait_operation(s, r, timeout=30)["status"] == "Failed"
    failing = 20 if wave == 1 else int(wave * 56 / 5) + 2  # until X's wave of 1.1.0 has started
    days(s, arc, failing, step=6 * 3600)
    faults(s, arc, x)  # clears the fault
    days(s, arc, 70 - failing)
    final = "1.2.0" if how == "newer" else "1.1.0"
    assert [m for m in (f"m{i:02d}" for i in range(50)) if version_of(s, arc, m) != final] == []
    assert_all_settled(s, arc)
    item = pending(s, arc, x)
    assert item["state"] == "UpToDate", item


# --- 3. a manual upgrade racing a wave's claim ----------------------------------------------------
def test_manual_upgrade_racing_a_wave_never_hangs(s: requests.Session, arc: ArcextServer) -> None:
    for i in range(100):
        create(s, arc, f"m{i:03d}")
    publish(s, arc, "1.2.0")
    r = s.post(f"{arc.url}/arcext/v1/rollouts/{rollout_of(s, arc, '1.2.0')['id']}/pause")
    assert r.status_code == 200, r.text
    publish(s, arc, "1.3.0", critical=True)
    wave0 = wave_members(rollout_of(s, arc, "1.3.0", expand=True))[0]
    assert len(wave0) == 20
    for m in wave0:
        faults(s, arc, m, latencyMs=1500)
    runner = threading.Thread(target=run, args=(arc.session(), arc))
    runner.start()
    time.sleep(0.5)
    # the extensions of wave 0 that no worker has started yet (handed to workers, still 1.0.0 and idle)
    waiting = [m for m in wave0 if ext(s, arc, m)["properties"]["provisioningState"] == "Succeeded"]
    assert waiting, "every wave-0 upgrade already started; the race was not set up"
    answers = [upgrade(s, arc, m, "1.2.0") for m in waiting]
    runner.join()
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["error"]["code"] == "AnotherOperationInProgress", answer.text
            continue
        assert answer.status_code == 202, answer.text
        assert wait_operation(s, answer, timeout=30)["status"] in ("Succeeded", "Failed")
    for m in wave0:
        faults(s, arc, m)
    days(s, arc, 22)
    assert {version_of(s, arc, m) for m in wave0} == {"1.3.0"}  # the automatic 1.3.0 is not dropped


# --- 4. a manual upgrade to an older version than a pending automatic one ------------------------
def test_manual_upgrade_elsewhere_keeps_a_failed_automatic_retry(s: requests.Session, arc: ArcextServer) -> None:
    create(s, arc, "m1")
    publish(s, arc, "1.2.0")
    assert s.post(f"{arc.url}/arcext/v1/rollouts/{rollout_of(s, arc, '1.2.0')['id']}/pause").status_code == 200
    publish(s, arc, "1.3.0", critical=True)
    faults(s, arc, "m1", failUpgrade=1)
    run(s, arc)
    assert pending(s, arc, "m1")["state"] == "RetryWait"
    r = upgrade(s, arc, "m1", "1.2.0")
    assert r.status_code == 202, r.text
    assert wait_operation(s, r, timeout=30)["status"] == "Succeeded"
    assert version_of(s, arc, "m1") == "1.2.0"
    item = pending(s, arc, "m1")
    assert item["targetVersion"] == "1.3.0", item
    days(s, arc, 1, step=3600)
    assert version_of(s, arc, "m1") == "1.3.0"


def test_manual_upgrade_elsewhere_keeps_a_late_joiners_automatic_upgrade(
    s: requests.Session, arc: ArcextServer
) -> None:
    for i in range(5):
        create(s, arc, f"m{i}")
    publish(s, arc, "1.2.0")
    assert s.post(f"{arc.url}/arcext/v1/rollouts/{rollout_of(s, arc, '1.2.0')['id']}/pause").status_code == 200
    publish(s, arc, "1.3.0", critical=True)
    run(s, arc)
    create(s, arc, "late")
    assert pending(s, arc, "late")["targetVersion"] == "1.3.0"
    r = upgrade(s, arc, "late", "1.2.0")
    assert wait_operation(s, r, timeout=30)["status"] == "Succeeded"
    item = pending(s, arc, "late")
    assert item["state"] != "NotEligible" and item["targetVersion"] == "1.3.0", item
    days(s, arc, 22)
    assert version_of(s, arc, "late") == "1.3.0"


# --- 5. pending views that say what will happen ---------------------------------------------------
def test_pending_views_say_what_will_actually_happen(s: requests.Session, arc: ArcextServer) -> None:
    for i in range(10):
        create(s, arc, f"m{i}")
    publish(s, arc, "1.1.0")
    members = wave_members(rollout_of(s, arc, "1.1.0", expand=True))
    later, dropped = members[4][0], members[3][0]
    publish(s, arc, "1.3.0")
    assert s.post(f"{arc.url}/arcext/v1/rollouts/{rollout_of(s, arc, '1.3.0')['id']}/freeze").status_code == 200
    # already on a newer version: not scheduled for the superseded 1.1.0
    r = upgrade(s, arc, later, "1.3.0")
    assert wait_operation(s, r, timeout=30)["status"] == "Succeeded"
    item = pending(s, arc, later)
    assert item["state"] == "UpToDate", item
    # a Failed extension: no due time
    faults(s, arc, dropped, failUpgrade=1, failRollback=True)
    r = upgrade(s, arc, dropped, "1.1.0")
    assert wait_operation(s, r, timeout=30)["status"] == "Failed"
    # the 1.1.0 rollout frozen by an operator; time passes every wave's notBefore
    rid = rollout_of(s, arc, "1.1.0")["id"]
    run(s, arc)
    assert s.post(f"{arc.url}/arcext/v1/rollouts/{rid}/freeze").status_code == 200
    advance(s, arc, 60 * DAY)
    for i in range(10):
        item = pending(s, arc, f"m{i}")
        assert item["dueAt"] is None or item["dueAt"] >= item["now"], item
    item = pending(s, arc, dropped)
    assert item["state"] == "Failed" and item["dueAt"] is None, item
    frozen = pending(s, arc, members[2][0])
    assert frozen["state"] == "Held" and "frozen" in frozen["reason"], frozen


# --- found by the model test: a Failed extension updated successfully ------------------------------
def test_a_failed_extension_that_an_update_reinstalls_rejoins_automatic_upgrade(
    s: requests.Session, arc: ArcextServer
) -> None:
    """A failed rollback leaves the extension Failed and out of the queue. An update that succeeds
    (PATCH or PUT: arcext reinstalls the extension on the host) makes it Succeeded again; it must then
    be upgraded automatically like any healthy opted-in extension, not show Succeeded while its pending
    view says Failed and every later version passes it by. An update that fails keeps it out."""
    machines = ("m1", "m2", "m3")
    for m in machines:
        create(s, arc, m)
    publish(s, arc, "1.1.0")
    for m in machines:
        faults(s, arc, m, failUpgrade=1, failRollback=True)
        assert wait_operation(s, upgrade(s, arc, m, "1.1.0"), timeout=30)["status"] == "Failed"
        assert ext(s, arc, m)["properties"]["provisioningState"] == "Failed"
        assert pending(s, arc, m)["state"] == "Failed"
        faults(s, arc, m)
    publish(s, arc, "1.2.0")
    # m1: PATCH (turn automatic upgrade on, as it already is); m2: PUT of what it has; m3: the host is down
    patch = {"properties": {"enableAutomaticUpgrade": True}}
    r = s.patch(ext_url(arc, "ama", "m1"), params={"api-version": API}, json=patch)
    assert wait_operation(s, r)["status"] == "Succeeded"
    body = {"location": "eastus", "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.1.0"}}
    r = s.put(ext_url(arc, "ama", "m2"), params={"api-version": API}, json=body)
    assert wait_operation(s, r)["status"] == "Succeeded"
    faults(s, arc, "m3", unreachable=True)
    r = s.patch(ext_url(arc, "ama", "m3"), params={"api-version": API}, json=patch)
    assert wait_operation(s, r)["status"] == "Failed"
    faults(s, arc, "m3")
    for m in ("m1", "m2"):
        assert ext(s, arc, m)["properties"]["provisioningState"] == "Succeeded"
        item = pending(s, arc, m)
        assert item["state"] != "Failed" and item["targetVersion"] == "1.2.0", item
    assert pending(s, arc, "m3")["state"] == "Failed"
    days(s, arc, 60, step=5 * DAY)
    assert [version_of(s, arc, m) for m in machines] == ["1.2.0", "1.2.0", "1.1.0"]
    assert ext(s, arc, "m3")["properties"]["provisioningState"] == "Failed"
    assert_all_settled(s, arc)


# --- 6. the manual clock persists -----------------------------------------------------------------
def test_manual_clock_persists_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ArcextServer(data, manual_clock=True) as first, first.session() as s:
        advance(s, first, 16 * DAY)
        before = s.get(f"{first.url}/arcext/v1/clock").json()["now"]
    with ArcextServer(data, manual_clock=True) as second, second.session() as s:
        after = s.get(f"{second.url}/arcext/v1/clock").json()["now"]
        assert after == before
        advance(s, second, DAY)
    with ArcextServer(data, manual_clock=True) as third, third.session() as s:
        assert s.get(f"{third.url}/arcext/v1/clock").json()["now"] > before


# --- the engine checks its own invariants ---------------------------------------------------------
REPAIR = "Microsoft.HybridCompute/machines/extensions/engineRepair/action"


def repair_events(s: requests.Session, arc: ArcextServer) -> list[dict[str, Any]]:
    now = s.get(f"{arc.url}/arcext/v1/clock").json()["now"]
    r = s.get(
        f"{arc.url}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values",
        params={
            "api-version": "2015-04-01",
            "$filter": f"eventTimestamp ge '2020-01-01T00:00:00Z' and eventTimestamp le '{now}' "
            f"and operationName eq '{REPAIR}'",
        },
    )
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["value"]
    return events


def test_engine_repairs_lost_bookkeeping_and_says_so_in_the_activity_log(
    s: requests.Session, arc: ArcextServer
) -> None:
    for i in range(3):
        create(s, arc, f"m{i}")
    publish(s, arc, "1.1.0", critical=True)
    x = wave_members(rollout_of(s, arc, "1.1.0", expand=True))[0][0]
    y = next(m for m in ("m0", "m1", "m2") if m != x)
    faults(s, arc, x, failUpgrade=1)
    run(s, arc)  # x failed its attempt and waits to retry in an hour
    assert pending(s, arc, x)["state"] == "RetryWait"
    # a manual upgrade whose schedule and bookkeeping vanish: its operation would stay InProgress for ever
    r = upgrade(s, arc, y, "1.1.0")
    assert r.status_code == 202, r.text
    engine = arc.services.engine
    with engine._lock:  # lose the engine's in-memory schedule and manual bookkeeping, as a bug would
        engine._due.clear()
        engine._manual_queue.clear()
        engine._manual.clear()
    advance(s, arc, 2 * 3600)
    summary = run(s, arc)
    assert summary["repairs"] >= 1, summary
    assert version_of(s, arc, x) == "1.1.0"  # the retry ran although its schedule entry was lost
    events = repair_events(s, arc)
    assert events and all(e["level"] == "Warning" for e in events)
    assert any(e["properties"]["invariant"] == "QueuedJobNotScheduled" for e in events), events
    assert wait_operation(s, r, timeout=30)["status"] in ("Succeeded", "Failed")
    days(s, arc, 22)
    assert rollout_of(s, arc, "1.1.0")["state"] == "Completed"


def test_a_rollout_that_cannot_move_shows_stalled_with_the_reason(tmp_path: Path) -> None:
    with ArcextServer(tmp_path / "data", manual_clock=True, simulate=False) as srv, srv.session() as s:
        for m in ("nohost1", "nohost2"):
            create(s, srv, m)  # no host connection: nothing can upgrade them
        publish(s, srv, "1.1.0", critical=True)
        run(s, srv)
        assert rollout_of(s, srv, "1.1.0")["state"] == "Active"
        first = wave_members(rollout_of(s, srv, "1.1.0", expand=True))[0][0]
        other = "nohost2" if first == "nohost1" else "nohost1"
        advance(s, srv, 2 * DAY)
        run(s, srv)
        rollout = rollout_of(s, srv, "1.1.0")
        assert rollout["state"] == "Stalled", rollout
        assert first in rollout["stateReason"] and "no host connection" in rollout["stateReason"], rollout
        item = pending(s, srv, first)
        assert "stalled" in item["reason"], item
        # the portal says so too
        with requests.Session() as browser:
            browser.trust_env = False
            page = browser.get(f"{srv.url}/portal/signin")
            csrf = page.text.split('name="csrf_token" value="')[1].split('"')[0]
            signed = browser.post(
                f"{srv.url}/portal/signin", data={"csrf_token": csrf, "token": srv.token, "next": "/portal/rollouts"}
            )
            assert signed.status_code == 200, signed.text
            assert "Stalled rollouts" in signed.text and "no host connection" in signed.text
        # the operator turns automatic upgrade off for the one that cannot move: its wave completes
        r = s.patch(
            ext_url(srv, "ama", first),
            params={"api-version": API},
            json={"properties": {"enableAutomaticUpgrade": False}},
        )
        assert wait_operation(s, r)["status"] == "Succeeded"
        advance(s, srv, 10 * DAY)
        run(s, srv)  # wave 0 completed (skipped); wave 1 starts, with the other
        advance(s, srv, 2 * DAY)
        run(s, srv)
        rollout = rollout_of(s, srv, "1.1.0")
        assert rollout["counts"]["skipped"] == 1, rollout
        assert rollout["state"] == "Stalled" and other in rollout["stateReason"], rollout
        # and removes the other
        r = s.delete(ext_url(srv, "ama", other), params={"api-version": API})
        assert r.status_code in (200, 202, 204), r.text
        if r.status_code == 202:
            wait_operation(s, r)
        run(s, srv)
        assert rollout_of(s, srv, "1.1.0")["state"] == "Completed"


def test_engine_repairs_a_job_left_running_and_an_operation_left_in_progress(
    s: requests.Session, arc: ArcextServer
) -> None:
    from arcext.clock import iso
    from arcext.ids import MachineKey
    from arcext.operations import new_operation

    create(s, arc, "m1")
    create(s, arc, "m2")
    publish(s, arc, "1.1.0")
    assert s.post(f"{arc.url}/arcext/v1/rollouts/{rollout_of(s, arc, '1.1.0')['id']}/pause").status_code == 200
    svc = arc.services
    now = svc.clock.now()
    key = MachineKey(SUB, "rg1", "m1")

    def running(doc: Any) -> tuple[Any, None]:  # what a lost worker would leave: a Running job nobody runs
        record = doc["extensions"]["ama"]
        record["upgrade"] = {
            "toVersion": "1.1.0",
            "fromVersion": "1.0.0",
            "lastKnownGoodVersion": "1.0.0",
            "correlationId": "lost-job",
            "operationId": "lost-job-attempt",
            "caller": None,
            "state": "Running",
            "step": "upgrade",
            "attempt": 1,
            "firstAttemptDone": True,
            "dueAt": iso(now),
            "startedAt": iso(now),
            "retry": True,
        }
        record["operation"] = "lost-job-attempt"
        record["resource"]["properties"]["provisioningState"] = "Updating"
        return doc, None

    svc.store.mutate_machine(key, running)
    # and a manual upgrade operation InProgress with no job behind it
    key2 = MachineKey(SUB, "rg1", "m2")
    op = new_operation(
        "extension.upgrade",
        key2,
        key2.id,
        "eastus",
        "someone",
        now,
        targets=[{"extension": "ama", "fromVersion": "1.0.0", "toVersion": "1.1.0"}],
    )
    svc.store.put_operation(op)
    summary = run(s, arc)
    assert summary["repairs"] >= 2, summary
    assert ext(s, arc, "m1")["properties"]["provisioningState"] == "Succeeded"
    assert version_of(s, arc, "m1") == "1.1.0"  # reconciled with the host, then run again
    status = s.get(
        f"{arc.url}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/locations/eastus/operationstatus/{op['id']}",
        params={"api-version": API},
    ).json()
    assert status["status"] == "Failed" and "did not run" in status["error"]["message"], status
    invariants = {e["properties"]["invariant"] for e in repair_events(s, arc)}
    assert {"ClaimedJobNotRunning", "OperationWithoutJob"} <= invariants, invariants


def test_an_extension_an_older_rollout_upgrades_joins_the_newest_one(s: requests.Session, arc: ArcextServer) -> None:
    """Found by the model test: m1 is a target of 1.1.0's plan, but not of 1.2.0's (its extension was
    deleted when 1.2.0 came) and never a late joiner of it (created again while its host was down, the
    create failed). 1.1.0's wave then upgrades it; it must go on to 1.2.0, the newest of its major, by
    itself (no repair needed), also with a new major published (which the self-check once read as the
    newest version of every major, so it saw nothing behind)."""
    create(s, arc, "m1")
    publish(s, arc, "1.1.0")
    wait_operation(s, s.delete(ext_url(arc, "ama", "m1"), params={"api-version": API}))
    publish(s, arc, "1.2.0")
    publish(s, arc, "2.0.0")
    faults(s, arc, "m1", unreachable=True)
    body = {"location": "eastus", "properties": {"publisher": PUB, "type": TYPE, "typeHandlerVersion": "1.0.0"}}
    r = s.put(ext_url(arc, "ama", "m1"), params={"api-version": API}, json=body)
    assert wait_operation(s, r)["status"] == "Failed"
    faults(s, arc, "m1")
    repairs = run(s, arc)["repairs"]
    for _ in range(12):
        advance(s, arc, 5 * DAY)
        repairs += run(s, arc)["repairs"]
    assert version_of(s, arc, "m1") == "1.2.0", pending(s, arc, "m1")
    assert repairs == 0 and not repair_events(s, arc)
    assert_all_settled(s, arc)


def test_the_self_check_finds_an_extension_behind_the_newest_rollout_of_its_major(
    s: requests.Session, arc: ArcextServer
) -> None:
    """An opted-in extension on 1.0.0 with nothing queued while 1.1.0 rolls out is behind, also when
    2.0.0 (a new major, never automatic) was published after 1.1.0."""
    from arcext.ids import MachineKey

    create(s, arc, "m1")
    create(s, arc, "m2")
    r = s.patch(
        ext_url(arc, "ama", "m1"), params={"api-version": API}, json={"properties": {"enableAutomaticUpgrade": False}}
    )
    wait_operation(s, r)
    publish(s, arc, "1.1.0")
    publish(s, arc, "2.0.0")

    def opt_in(doc: Any) -> tuple[Any, None]:  # lost bookkeeping: opted in without the engine hearing of it
        doc["extensions"]["ama"]["resource"]["properties"]["enableAutomaticUpgrade"] = True
        return doc, None

    arc.services.store.mutate_machine(MachineKey(SUB, "rg1", "m1"), opt_in)
    assert run(s, arc)["repairs"] >= 1
    assert "EligibleExtensionNotQueued" in {e["properties"]["invariant"] for e in repair_events(s, arc)}
    item = pending(s, arc, "m1")
    assert item["targetVersion"] == "1.1.0" and item["state"] in ("Queued", "Scheduled"), item
    days(s, arc, 60, step=5 * DAY)
    assert version_of(s, arc, "m1") == "1.1.0"


def test_automatic_upgrade_turned_on_by_an_update_that_fails_on_the_host_still_counts(
    s: requests.Session, arc: ArcextServer
) -> None:
    """Found by the model test: a PATCH turning automatic upgrade on while the host is unreachable fails
    (the extension shows Failed) but keeps the flag, as Azure does. The engine must queue the extension
    for the rollout it now belongs to at once, not leave it for its self-check to repair."""
    create(s, arc, "m1")
    patch = {"properties": {"enableAutomaticUpgrade": False}}
    wait_operation(s, s.patch(ext_url(arc, "ama", "m1"), params={"api-version": API}, json=patch))
    publish(s, arc, "1.1.0")
    faults(s, arc, "m1", unreachable=True)
    patch = {"properties": {"enableAutomaticUpgrade": True}}
    r = s.patch(ext_url(arc, "ama", "m1"), params={"api-version": API}, json=patch)
    assert wait_operation(s, r)["status"] == "Failed"
    assert ext(s, arc, "m1")["properties"]["enableAutomaticUpgrade"] is True
    item = pending(s, arc, "m1")
    assert item["targetVersion"] == "1.1.0" and item["state"] in ("Queued", "Scheduled"), item
    faults(s, arc, "m1")
    repairs = run(s, arc)["repairs"]
    for _ in range(12):
        advance(s, arc, 5 * DAY)
        repairs += run(s, arc)["repairs"]
    assert version_of(s, arc, "m1") == "1.1.0"
    assert repairs == 0 and not repair_events(s, arc)
