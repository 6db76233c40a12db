"""The upgrade engine through the HTTP API, on simulated hosts and a manual clock.

Each test states one promise of Azure Arc's automatic extension upgrade (or arcext's additions)
and checks it on the API, on the simulated host's own model and in the activity log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, wait_operation

PUB, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
HOUR = 3600
WEEK = 7 * 86400
AUTO = "Azure Regional Service Manager"


# --- helpers -------------------------------------------------------------------------------------
def machine(s: requests.Session, arc: ArcextServer, name: str, location: str = "eastus", rg: str = "rg1") -> None:
    r = s.put(machine_url(arc, name, rg), params={"api-version": API}, json={"location": location})
    assert r.status_code == 200, r.text


def extension(
    s: requests.Session,
    arc: ArcextServer,
    m: str,
    version: str = "1.0.0",
    name: str = "ama",
    rg: str = "rg1",
    publisher: str = PUB,
    type_: str = TYPE,
    **props: Any,
) -> None:
    body = {
        "location": "eastus",
        "properties": {
            "publisher": publisher,
            "type": type_,
            "typeHandlerVersion": version,
            "settings": {"workspaceId": f"ws-{m}"},
            "protectedSettings": {"workspaceKey": f"key-{m}"},
            **props,
        },
    }
    r = s.put(ext_url(arc, name, m, rg), params={"api-version": API}, json=body)
    assert wait_operation(s, r)["status"] == "Succeeded"


def publish(
    s: requests.Session,
    arc: ArcextServer,
    version: str,
    critical: bool = False,
    publisher: str = PUB,
    type_: str = TYPE,
) -> dict[str, Any]:
    r = s.put(f"{arc.url}/arcext/v1/catalog/{publisher}/{type_}/versions/{version}", json={"critical": critical})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def advance(s: requests.Session, arc: ArcextServer, seconds: float) -> None:
    r = s.post(f"{arc.url}/arcext/v1/clock/advance", json={"seconds": seconds})
    assert r.status_code == 200, r.text


def run(s: requests.Session, arc: ArcextServer) -> dict[str, Any]:
    r = s.post(f"{arc.url}/arcext/v1/engine/run")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def faults(s: requests.Session, arc: ArcextServer, m: str, **values: Any) -> None:
    r = s.put(f"{arc.url}/arcext/v1/simulated-hosts/{m}/faults", json=values)
    assert r.status_code == 200, r.text


def ext(s: requests.Session, arc: ArcextServer, m: str, name: str = "ama", rg: str = "rg1") -> dict[str, Any]:
    r = s.get(ext_url(arc, name, m, rg), params={"api-version": API})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def host(s: requests.Session, arc: ArcextServer, m: str) -> dict[str, Any]:
    r = s.get(f"{arc.url}/arcext/v1/simulated-hosts/{m}")
    assert r.status_code == 200, r.text
    hosts = r.json()["hosts"]
    assert len(hosts) == 1
    found: dict[str, Any] = hosts[0]
    return found


def events(s: requests.Session, arc: ArcextServer, **eq: str) -> list[dict[str, Any]]:
    clauses = ["eventTimestamp ge '2000-01-01T00:00:00Z'"] + [f"{k} eq '{v}'" for k, v in eq.items()]
    found: list[dict[str, Any]] = []
    url: str | None = f"{arc.url}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values"
    params: dict[str, str] | None = {"api-version": "2015-04-01", "$filter": " and ".join(clauses)}
    while url:
        r = s.get(url, params=params)
        assert r.status_code == 200, r.text
        found += r.json()["value"]
        url, params = r.json().get("nextLink"), None
    return found


def rollouts(s: requests.Session, arc: ArcextServer) -> list[dict[str, Any]]:
    r = s.get(f"{arc.url}/arcext/v1/rollouts")
    assert r.status_code == 200
    value: list[dict[str, Any]] = r.json()["value"]
    return value


def pending(s: requests.Session, arc: ArcextServer, m: str) -> dict[str, dict[str, Any]]:
    r = s.get(f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/{m}/pending")
    assert r.status_code == 200, r.text
    return {e["name"]: e for e in r.json()["extensions"]}


# --- the promises --------------------------------------------------------------------------------
def test_automatic_upgrade_is_on_by_default_and_reaches_the_fleet_within_the_window(
    arc: ArcextServer, s: requests.Session
) -> None:
    for i in range(10):
        machine(s, arc, f"m{i}", ["eastus", "westus"][i % 2])
        extension(s, arc, f"m{i}")
    assert ext(s, arc, "m0")["properties"]["enableAutomaticUpgrade"] is True
    publish(s, arc, "1.1.0")
    run(s, arc)
    assert any(ext(s, arc, f"m{i}")["properties"]["typeHandlerVersion"] == "1.0.0" for i in range(10)), (
        "the rollout spreads over its window: not everything moves at once"
    )
    advance(s, arc, 8 * WEEK)
    summary = run(s, arc)
    assert summary["rolledBack"] == 0 and summary["rollbackFailed"] == 0
    for i in range(10):
        body = ext(s, arc, f"m{i}")
        assert body["properties"]["typeHandlerVersion"] == "1.1.0"
        assert body["properties"]["provisioningState"] == "Succeeded"
        assert body["properties"]["instanceView"]["typeHandlerVersion"] == "1.1.0"
        assert host(s, arc, f"m{i}")["extensions"]["ama"]["version"] == "1.1.0"
    (rollout,) = rollouts(s, arc)
    assert rollout["state"] == "Completed" and rollout["counts"]["succeeded"] == 10


def test_settings_and_protected_settings_survive_the_upgrade(arc: ArcextServer, s: requests.Session) -> None:
    machine(s, arc, "m1")
    extension(s, arc, "m1")
    publish(s, arc, "1.1.0")
    advance(s, arc, 8 * WEEK)
    run(s, arc)
    on_host = host(s, arc, "m1")["extensions"]["ama"]
    assert on_host["version"] == "1.1.0"
    assert on_host["settings"] == {"workspaceId": "ws-m1"}
    expected = arc.services.fleet.protected_digest({"workspaceKey": "key-m1"})  # keyed (issue #10)
    assert on_host["protectedSha256"] == expected
    assert ext(s, arc, "m1")["properties"]["settings"] == {"workspaceId": "ws-m1"}


def test_opted_out_unsupported_and_major_versions_are_never_touched(arc: ArcextServer, s: requests.Session) -> None:
    machine(s, arc, "m1")
    extension(s, arc, "m1", name="pinned", enableAutomaticUpgrade=False)
    machine(s, arc, "m2")
    extension(s, arc, "m2", name="cse", publisher="Microsoft.Compute", type_="CustomScriptExtension")
    machine(s, arc, "m3")
    extension(s, arc, "m3", version="0.9.0")
    publish(s, arc, "1.1.0")
    publish(s, arc, "1.10.0", publisher="Microsoft.Compute", type_="CustomScriptExtension")
    advance(s, arc, 9 * WEEK)
    summary = run(s, arc)
    assert summary["dispatched"] == 0
    assert ext(s, arc, "m1", "pinned")["properties"]["typeHandlerVersion"] == "1.0.0"
    assert ext(s, arc, "m2", "cse")["properties"]["typeHandlerVersion"] == "1.0.0"
    assert ext(s, arc, "m3")["properties"]["typeHandlerVersion"] == "0.9.0"
    assert host(s, arc, "m1")["extensions"]["pinned"]["version"] == "1.0.0"
    assert events(s, arc) == []
    views = pending(s, arc, "m1")["pinned"]
    assert views["automaticUpgrade"] == "Disabled" and views["updateAvailable"] is True
    assert pending(s, arc, "m2")["cse"]["automaticUpgrade"] == "Not supported"
    assert "major" in pending(s, arc, "m3")["ama"]["reason"]


def test_failure_rolls_back_then_retries_hourly_until_it_succeeds(arc: ArcextServer, s: requests.Session) -> None:
    machine(s, arc, "m1")
    extension(s, arc, "m1")
    faults(s, arc, "m1", failUpgrade=1000)
    publish(s, arc, "1.1.0")
    advance(s, arc, 8 * WEEK)
    assert run(s, arc)["rolledBack"] == 1
    body = ext(s, arc, "m1")
    assert body["properties"]["typeHandlerVersion"] == "1.0.0"
    assert body["properties"]["provisioningState"] == "Succeeded"
    assert host(s, arc, "m1")["extensions"]["ama"] == {
        **host(s, arc, "m1")["extensions"]["ama"],
        "version": "1.0.0",
        "state": "enabled",
    }
    view = pending(s, arc, "m1")["ama"]
    assert view["state"] == "RetryWait" and view["attempt"] == 2 and view["targetVersion"] == "1.1.0"
    advance(s, arc, HOUR - 60)
    assert run(s, arc)["dispatched"] == 0, "no attempt sooner than one hour after the failure"
    advance(s, arc, 61)
    assert run(s, arc)["rolledBack"] == 1, "the fault persists: attempt 2 fails and rolls back too"
    faults(s, arc, "m1")  # {} clears
    advance(s, arc, HOUR)
    assert run(s, arc)["succeeded"] == 1
    assert ext(s, arc, "m1")["properties"]["typeHandlerVersion"] == "1.1.0"
    attempts = [e for e in events(s, arc) if e["status"]["value"] != "Started"]
    assert sorted(e["properties"]["attempt"] for e in attempts) == [1, 2, 3]
    failed = [e for e in attempts if e["status"]["value"] == "Failed"]
    assert all(e["properties"]["rolledBack"] is True for e in failed) and len(failed) == 2
    assert all(e["properties"]["lastKnownGoodVersion"] == "1.0.0" for e in attempts)
    history = s.get(f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/rg1/machines/m1/extensions/ama/history")
    assert [h["outcome"] for h in history.json()["value"]] == ["Succeeded", "RolledBack", "RolledBack"]
    order = [c["command"] for c in host(s, arc, "m1")["commands"] if c["version"] == "1.1.0"][-3:]
    assert order == ["update", "install", "enable"]


def test_failed_rollback_marks_the_extension_failed_and_stops(arc: ArcextServer, s: requests.Session) -> None:
    machine(s, arc, "m1")
    extension(s, arc, "m1")
    faults(s, arc, "m1", failUpgrade=1, failRollback=True)
    publish(s, arc, "1.1.0")
    advance(s, arc, 8 * WEEK)
    assert run(s, arc)["rollbackFailed"] == 1
    body = ext(s, arc, "m1")
    assert body["properties"]["provisioningState"] == "Failed"
    assert "Remove and reinstall" in body["properties"]["instanceView"]["status"]["message"]
    faults(s, arc, "m1")
    before = len(events(s, arc))
    advance(s, arc, 5 * HOUR)
    assert run(s, arc)["dispatched"] == 0
    assert len(events(s, arc)) == before
    assert pending(s, arc, "m1")["ama"]["state"] == "Failed"
    # removing and reinstalling the extension puts it back in the queue
    r = s.delete(ext_url(arc, "ama", "m1"), params={"api-version": API})
    wait_operation(s, r)
    extension(s, arc, "m1")
    publish(s, arc, "1.2.0")
    advance(s, arc, 8 * WEEK)
    run(s, arc)
    assert ext(s, arc, "m1")["properties"]["typeHandlerVersion"] == "1.2.0"


def test_turning_automatic_upgrade_off_stops_the_retries(arc: ArcextServer, s: requests.Session) -> None:
    machine(s, arc, "m1")
    extension(s, arc, "m1")
    faults(s, arc, "m1", failUpgrade=1)
    publish(s, arc, "1.1.0")
    advance(s, arc, 8 * WEEK)
    assert run(s, arc)["rolledBack"] == 1
    r = s.patch(
        ext_url(arc, "ama", "m1"), params={"api-version": API}, json={"properties": {"enableAutomaticUpgrade": False}}
    )
    wait_operation(s, r)
    advance(s, arc, 3 * HOUR)
    assert run(s, arc)["succeeded"] == 0
    assert ext(s, arc, "m1")["properties"]["typeHandlerVersion"] == "1.0.0"
    assert len([e for e in events(s, arc) if e["status"]["value"] == "Started"]) == 1
    assert pending(s, arc, "m1")["ama"]["automaticUpgrade"] == "Disabled"


def test_one_failing_extension_does_not_block_another_on_the_same_machine(
    arc: ArcextServer, s: requests.Session
) -> None:
    machine(s, arc, "m1")
    extension(s, arc, "m1", name="ama")
    extension(
        s,
        arc,
        "m1",
        name="da",
        publisher="Microsoft.Azure.Monitoring.DependencyAgent",
        type_="DependencyAgentWindows",
        version="9.10.0",
    )
    faults(s, arc, "m1", failUpgrade=1)  # whichever upgrade runs first on this host fails
    publish(s, arc, "1.1.0")
    publish(s, arc, "9.10.5", publisher="Microsoft.Azure.Monitoring.DependencyAgent", type_="DependencyAgentWindows")
    advance(s, arc, 8 * WEEK)
    summary = run(s, arc)
    assert (summary["rolledBack"], summary["succeeded"]) == (1, 1)
    versions = {
        ext(s, arc, "m1", "ama")["properties"]["typeHandlerVersion"],
        ext(s, arc, "m1", "da")["properties"]["typeHandlerVersion"],
    }
    assert versions in ({"1.1.0", "9.10.0"}, {"1.0.0", "9.10.5"})


def test_manual_upgrade_runs_at_once_as_the_user(arc: ArcextServer, s: requests.Session) -> None:
    machine(s, arc, "m1")
    extension(s, arc, "m1", enableAutomaticUpgrade=False)
    publish(s, arc, "1.1.0")
    alice = arc.create_token("Contributor", f"/subscriptions/{SUB}", name="alice@contoso.com")
    with arc.session(alice) as user:
        r = user.post(
            f"{machine_url(arc, 'm1')}/upgradeExtensions",
            params={"api-version": API},
            json={"extensionTargets": {f"{PUB}.{TYPE}": {"targetVersion": "1.1.0"}}},
        )
        assert r.status_code == 202
        done = wait_operation(user, r)
    assert done["status"] == "Succeeded" and done["properties"] == []
    assert ext(s, arc, "m1")["properties"]["typeHandlerVersion"] == "1.1.0"  # no clock advance, no engine run
    started, ended = sorted(events(s, arc), key=lambda e: e["eventTimestamp"])
    assert started["caller"] == ended["caller"] == "alice@contoso.com"
    assert started["status"]["value"] == "Started" and ended["status"]["value"] == "Succeeded"
    assert started["operationId"] == ended["operationId"]


def test_the_activity_log_query_for_automatic_attempts(arc: ArcextServer, s: requests.Session) -> None:
    for m in ("m1", "m2"):
        machine(s, arc, m)
        extension(s, arc, m)
    faults(s, arc, "m2", failUpgrade=1)
    publish(s, arc, "1.1.0")
    advance(s, arc, 8 * WEEK)
    run(s, arc)
    r = s.post(
        f"{machine_url(arc, 'm1')}/upgradeExtensions",
        params={"api-version": API},
        json={"extensionTargets": {PUB: {"targetVersion": "1.1.0"}}},
    )  # no-op: already there
    assert wait_operation(s, r)["status"] == "Succeeded"
    publish(s, arc, "1.2.0")
    r = s.post(
        f"{machine_url(arc, 'm1')}/upgradeExtensions",
        params={"api-version": API},
        json={"extensionTargets": {PUB: {"targetVersion": "1.2.0"}}},
    )
    assert wait_operation(s, r)["status"] == "Succeeded"
    automatic = events(s, arc, operationName="Microsoft.HybridCompute/machines/upgradeExtensions/action", caller=AUTO)
    every = events(s, arc)
    assert len(every) == 6 and len(automatic) == 4
    assert {e["caller"] for e in every} - {AUTO} == {"arcext-test-owner"}
    assert all(e["properties"]["toVersion"] == "1.1.0" for e in automatic)
    (rollout,) = [r for r in rollouts(s, arc) if r["version"] == "1.1.0"]
    assert {e["correlationId"] for e in automatic} == {rollout["id"]}
    assert len({e["operationId"] for e in automatic}) == 2
    per_machine = events(s, arc, resourceUri=machine_url(arc, "m2").split(arc.url)[1])
    assert len(per_machine) == 2 and {e["status"]["value"] for e in per_machine} == {"Started", "Failed"}
    bad = s.get(
        f"{arc.url}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values",
        params={"api-version": "2015-04-01", "$filter": "caller eq 'x'"},
    )
    assert bad.status_code == 400 and "eventTimestamp ge" in bad.json()["error"]["message"]


# --- availability first --------------------------------------------------------------------------
def test_batches_phases_and_the_circuit_breaker(arc: ArcextServer, s: requests.Session) -> None:
    regions = ["eastus", "westeurope", "southeastasia"]
    names = [f"vm{i:03d}" for i in range(100)]
    for i, m in enumerate(names):
        machine(s, arc, m, regions[i % 3])
        extension(s, arc, m)
    publish(s, arc, "1.1.0")
    (plan,) = rollouts(s, arc)
    waves = [w for p in plan["phases"] for w in p["waves"]]
    assert sum(b["size"] for w in waves for b in w["batches"]) == 100
    assert max(b["size"] for w in waves for b in w["batches"]) <= 20
    assert [p["region"] for p in plan["phases"]] == sorted(
        regions, key=lambda r: (sum(1 for i in range(100) if regions[i % 3] == r), r)
    )
    advance(s, arc, 8 * WEEK)
    run(s, arc)
    (done,) = rollouts(s, arc)
    assert done["state"] == "Completed"
    waves = [w for p in done["phases"] for w in p["waves"]]
    for earlier, later in zip(waves, waves[1:], strict=False):
        assert earlier["completedAt"] <= later["startedAt"], "waves (and so phases) never overlap"
    assert done["counts"] == {"succeeded": 100, "failed": 0, "skipped": 0}

    # a version that fails on half the machines is frozen after its first batch
    rollout_id = publish(s, arc, "1.2.0")["rolloutId"]
    plan = s.get(f"{arc.url}/arcext/v1/rollouts/{rollout_id}", params={"$expand": "targets"}).json()
    order = [t.split("/")[-3] for p in plan["phases"] for w in p["waves"] for b in w["batches"] for t in b["targets"]]
    assert sorted(order) == names
    failing = order[::2]  # half the machines, every other one in rollout order (so in every batch too)
    for m in failing:
        faults(s, arc, m, failUpgrade=1)
    advance(s, arc, 8 * WEEK)
    run(s, arc)
    frozen = next(r for r in rollouts(s, arc) if r["version"] == "1.2.0")
    assert frozen["state"] == "Frozen" and "Circuit breaker" in frozen["stateReason"]
    first = frozen["phases"][0]["waves"][0]
    assert first["state"] == "Completed"
    later_waves = [w for p in frozen["phases"] for w in p["waves"]][1:]
    assert later_waves and all(w["state"] == "Pending" for w in later_waves)
    attempted = sum(b["size"] for b in first["batches"])
    started = [
        e for e in events(s, arc) if e["status"]["value"] == "Started" and e["properties"]["toVersion"] == "1.2.0"
    ]
    assert len(started) == attempted <= 20
    upgraded = sum(ext(s, arc, m)["properties"]["typeHandlerVersion"] == "1.2.0" for m in names)
    assert upgraded < attempted
    # retries wait while the rollout is frozen, and everything moves again once an operator resumes it
    advance(s, arc, 2 * HOUR)
    assert run(s, arc)["dispatched"] == 0
    held = [p for p in (pending(s, arc, m)["ama"] for m in names) if p["state"] == "Held"]
    assert held and all("frozen" in p["reason"] for p in held)
    for m in failing:
        faults(s, arc, m)
    r = s.post(f"{arc.url}/arcext/v1/rollouts/{frozen['id']}/resume")
    assert r.status_code == 200 and r.json()["state"] == "Active"
    advance(s, arc, 8 * WEEK)
    run(s, arc)
    assert all(ext(s, arc, m)["properties"]["typeHandlerVersion"] == "1.2.0" for m in names)


def test_pause_and_resume_a_rollout(arc: ArcextServer, s: requests.Session) -> None:
    for i in range(10):
        machine(s, arc, f"m{i}")
        extension(s, arc, f"m{i}")
    rollout_id = publish(s, arc, "1.1.0")["rolloutId"]
    r = s.post(f"{arc.url}/arcext/v1/rollouts/{rollout_id}/pause")
    assert r.status_code == 200 and r.json()["state"] == "Paused"
    advance(s, arc, 8 * WEEK)
    assert run(s, arc)["dispatched"] == 0
    assert s.post(f"{arc.url}/arcext/v1/rollouts/{rollout_id}/pause").status_code == 200
    assert s.post(f"{arc.url}/arcext/v1/rollouts/{rollout_id}/sideways").status_code == 400
    assert s.post(f"{arc.url}/arcext/v1/rollouts/nope/resume").status_code == 404
    assert s.post(f"{arc.url}/arcext/v1/rollouts/{rollout_id}/resume").json()["state"] == "Active"
    assert s.post(f"{arc.url}/arcext/v1/rollouts/{rollout_id}/resume").status_code == 409
    run(s, arc)
    assert all(ext(s, arc, f"m{i}")["properties"]["typeHandlerVersion"] == "1.1.0" for i in range(10))


def test_a_critical_version_reaches_the_fleet_within_its_shorter_window(arc: ArcextServer, s: requests.Session) -> None:
    for i in range(30):
        machine(s, arc, f"m{i}", ["eastus", "westus", "northeurope"][i % 3])
        extension(s, arc, f"m{i}")
    publish(s, arc, "1.1.0")
    advance(s, arc, 3 * WEEK)
    run(s, arc)
    standard = sum(ext(s, arc, f"m{i}")["properties"]["typeHandlerVersion"] == "1.1.0" for i in range(30))
    assert 0 < standard < 30, "after three weeks a standard version is still on its way"
    publish(s, arc, "1.1.1", critical=True)
    advance(s, arc, 3 * WEEK)
    run(s, arc)
    assert all(ext(s, arc, f"m{i}")["properties"]["typeHandlerVersion"] == "1.1.1" for i in range(30))
    critical = next(r for r in rollouts(s, arc) if r["version"] == "1.1.1")
    assert critical["critical"] is True and critical["state"] == "Completed"
    assert critical["windowSeconds"] == 3 * WEEK


def test_pending_view_explains_what_waits(arc: ArcextServer, s: requests.Session) -> None:
    for i in range(10):
        machine(s, arc, f"m{i}")
        extension(s, arc, f"m{i}")
    publish(s, arc, "1.1.0")
    run(s, arc)
    views = [pending(s, arc, f"m{i}")["ama"] for i in range(10)]
    scheduled = [v for v in views if v["state"] == "Scheduled"]
    assert scheduled and all(v["targetVersion"] == "1.1.0" and v["dueAt"] and "wave" in v["reason"] for v in scheduled)
    assert all(v["updateAvailable"] for v in scheduled)


def test_admin_controls_need_their_preconditions(arcext_server: ArcextServer, arcext_session: requests.Session) -> None:
    """On the wall clock, time cannot be moved; faults name a machine that exists."""
    r = arcext_session.post(f"{arcext_server.url}/arcext/v1/clock/advance", json={"seconds": 60})
    assert r.status_code == 409 and r.json()["error"]["code"] == "ManualClockNotEnabled"
    r = arcext_session.put(f"{arcext_server.url}/arcext/v1/simulated-hosts/ghost/faults", json={})
    assert r.status_code == 404
    r = arcext_session.put(f"{arcext_server.url}/arcext/v1/simulated-hosts/ghost/faults", json={"failUpgrade": "2"})
    assert r.status_code == 400


def test_an_extension_installed_later_joins_the_rollout(arc: ArcextServer, s: requests.Session) -> None:
    machine(s, arc, "m1")
    extension(s, arc, "m1")
    publish(s, arc, "1.1.0")
    advance(s, arc, 8 * WEEK)
    run(s, arc)
    assert ext(s, arc, "m1")["properties"]["typeHandlerVersion"] == "1.1.0"
    # a server set up after the rollout completed, with the old version
    machine(s, arc, "late")
    extension(s, arc, "late")
    view = pending(s, arc, "late")["ama"]
    assert view["state"] == "Queued" and view["targetVersion"] == "1.1.0"
    run(s, arc)
    assert ext(s, arc, "late")["properties"]["typeHandlerVersion"] == "1.1.0"
    # an opted-out extension joins when it opts back in
    extension(s, arc, "late", name="optout", enableAutomaticUpgrade=False)
    run(s, arc)
    assert ext(s, arc, "late", "optout")["properties"]["typeHandlerVersion"] == "1.0.0"
    r = s.patch(
        ext_url(arc, "optout", "late"),
        params={"api-version": API},
        json={"properties": {"enableAutomaticUpgrade": True}},
    )
    wait_operation(s, r)
    run(s, arc)
    assert ext(s, arc, "late", "optout")["properties"]["typeHandlerVersion"] == "1.1.0"


@pytest.fixture(scope="module")
def impatient_server() -> Iterator[ArcextServer]:
    """Host operations time out after half a second."""
    with ArcextServer(manual_clock=True, simulate=True, config={"ARCEXT_HOST_TIMEOUT": 0.5}) as server:
        yield server


def test_hung_and_unreachable_hosts(impatient_server: ArcextServer) -> None:
    arc = impatient_server
    arc.reset()
    with arc.session() as s:
        for m in ("hangs", "gone", "slow"):
            machine(s, arc, m)
            extension(s, arc, m)
        faults(s, arc, "hangs", hang=True)
        faults(s, arc, "gone", unreachable=True)
        faults(s, arc, "slow", latencyMs=200)
        publish(s, arc, "1.1.0")
        advance(s, arc, 8 * WEEK)
        summary = run(s, arc)
        assert (summary["succeeded"], summary["rolledBack"], summary["notRun"]) == (1, 1, 1)
        assert ext(s, arc, "slow")["properties"]["typeHandlerVersion"] == "1.1.0"
        hung = ext(s, arc, "hangs")
        assert hung["properties"]["typeHandlerVersion"] == "1.0.0"  # timed out, so the LKG was reinstalled
        assert (
            "timed" in hung["properties"]["instanceView"]["status"]["message"]
            or "no answer" in (hung["properties"]["instanceView"]["status"]["message"])
        )
        assert host(s, arc, "hangs")["extensions"]["ama"]["version"] == "1.0.0"
        gone = pending(s, arc, "gone")["ama"]
        assert gone["state"] == "RetryWait" and "connection refused" in gone["reason"]
        failed = {e["resourceId"].split("/")[-3]: e for e in events(s, arc) if e["status"]["value"] == "Failed"}
        assert failed["gone"]["properties"]["errorCode"] == "HostUnreachable"
        assert failed["gone"]["properties"]["rolledBack"] is False
        assert failed["hangs"]["properties"]["errorCode"] == "HostOperationTimedOut"
        assert failed["hangs"]["properties"]["rolledBack"] is True
        faults(s, arc, "gone")
        faults(s, arc, "hangs")
        advance(s, arc, HOUR)
        assert run(s, arc)["succeeded"] == 2
