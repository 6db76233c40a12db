"""The harness's helpers drive the world without hand-written admin calls; its speed settings keep
the ARM wire shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.mgmt.hybridcompute.models import MachineExtensionUpdate

from arcext.config import DEFAULTS
from arcext.testing import AdminError, ArcextServer

SUB = "00000000-0000-0000-0000-000000000000"
PUBLISHER, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"
EXTENSION = {
    "location": "eastus",
    "properties": {"publisher": PUBLISHER, "type": TYPE, "typeHandlerVersion": "1.2.0"},
}
API = "2026-07-15"


@pytest.fixture(scope="module")
def manual() -> Iterator[ArcextServer]:
    with ArcextServer(manual_clock=True) as server:
        yield server


@pytest.fixture
def arc(manual: ArcextServer) -> Iterator[ArcextServer]:
    manual.reset()
    yield manual


def fleet(arc: ArcextServer, *machines: str, rg: str = "rg1") -> None:
    with arc.sdk_client() as client:
        for name in machines:
            client.machines.create_or_update(rg, name, {"location": "eastus"})
            client.machine_extensions.begin_create_or_update(rg, name, "ama", EXTENSION).result()


def version(arc: ArcextServer, machine: str, rg: str = "rg1") -> str:
    with arc.sdk_client() as client:
        got = client.machine_extensions.get(rg, machine, "ama").properties.type_handler_version
        assert isinstance(got, str)
        return got


def test_publish_advance_and_read_rollouts_and_the_activity_log(arc: ArcextServer) -> None:
    fleet(arc, "m1", "m2")
    published = arc.publish_version(PUBLISHER, TYPE, "1.3.0")
    assert published["version"] == "1.3.0" and published["critical"] is False and published["rolloutId"]
    with arc.sdk_client() as client:  # ExtensionMetadata shows it at once
        assert "1.3.0" in [v.properties.version for v in client.extension_metadata.list("eastus", PUBLISHER, TYPE)]
    [rollout] = arc.rollouts()
    assert rollout["id"] == published["rolloutId"] and rollout["eligible"] == 2 and rollout["state"] == "Active"
    assert arc.rollout(rollout["id"], targets=True)["id"] == rollout["id"]
    before = arc.now()
    summary = arc.advance(days=8 * 7)  # the standard spread window
    assert (arc.now() - before).days == 56
    assert summary["succeeded"] == 2 and summary["rolledBack"] == 0
    assert version(arc, "m1") == version(arc, "m2") == "1.3.0"
    assert arc.rollouts()[0]["state"] == "Completed"
    done = [e for e in arc.activity_log() if e["status"]["value"] == "Succeeded"]
    assert len(done) == 2
    assert {e["caller"] for e in done} == {"Azure Regional Service Manager"}
    assert {e["properties"]["toVersion"] for e in done} == {"1.3.0"}
    only_m1 = arc.activity_log(filter="resourceUri eq '" + done[0]["resourceId"] + "'")
    assert {e["resourceId"] for e in only_m1} == {done[0]["resourceId"]}


def test_a_critical_version_uses_the_shorter_window(arc: ArcextServer) -> None:
    fleet(arc, "m1")
    arc.publish_version(PUBLISHER, TYPE, "1.3.0", critical=True)
    [rollout] = arc.rollouts()
    assert rollout["critical"] is True
    assert rollout["windowSeconds"] == DEFAULTS["ARCEXT_CRITICAL_WINDOW"]
    assert arc.advance(days=21)["succeeded"] == 1


def test_faults_make_an_upgrade_fail_and_roll_back_until_cleared(arc: ArcextServer) -> None:
    fleet(arc, "m1")
    faults = arc.set_faults("m1", fail_upgrade=1000)
    assert faults["faults"]["failUpgrade"] == 1000
    arc.publish_version(PUBLISHER, TYPE, "1.3.0")
    assert arc.advance(days=56)["rolledBack"] == 1
    assert version(arc, "m1") == "1.2.0"  # the last known good version
    [failed] = [e for e in arc.activity_log() if e["status"]["value"] == "Failed"]
    assert failed["properties"]["lastKnownGoodVersion"] == "1.2.0"
    arc.clear_faults("m1")
    assert arc.advance(hours=1)["succeeded"] == 1  # the hourly retry
    assert version(arc, "m1") == "1.3.0"
    assert arc.simulated_host("m1")[0]["extensions"]["ama"]["version"] == "1.3.0"


def test_set_rollout_state_and_extension_types(arc: ArcextServer) -> None:
    fleet(arc, "m1")
    rollout_id = arc.publish_version(PUBLISHER, TYPE, "1.3.0")["rolloutId"]
    assert arc.set_rollout_state(rollout_id, "pause")["state"] == "Paused"
    assert arc.advance(days=56)["dispatched"] == 0
    assert arc.set_rollout_state(rollout_id, "resume")["state"] == "Active"
    assert arc.run_engine()["succeeded"] == 1
    assert arc.set_extension_type("Contoso", "Agent", auto_upgrade_supported=False)["autoUpgradeSupported"] is False


def test_admin_errors_carry_the_servers_answer(arc: ArcextServer, arcext_server: ArcextServer) -> None:
    with pytest.raises(AdminError, match="ManualClockNotEnabled") as raised:
        arcext_server.advance(hours=1)  # the shared fixture's server runs on the wall clock
    assert raised.value.status == 409 and raised.value.error["code"] == "ManualClockNotEnabled"
    with pytest.raises(AdminError) as missing:
        arc.set_faults("no-such-machine", hang=True)
    assert missing.value.status == 404


def test_scoped_tokens(arc: ArcextServer) -> None:
    fleet(arc, "m1")
    fleet(arc, "m9", rg="rg2")
    reader = arc.create_token("Reader", f"/subscriptions/{SUB}/resourceGroups/rg1")
    with arc.sdk_client(token=reader) as client:
        assert [m.name for m in client.machines.list_by_resource_group("rg1")] == ["m1"]
        with pytest.raises(HttpResponseError) as denied:
            client.machine_extensions.begin_update(
                "rg1", "m1", "ama", MachineExtensionUpdate(properties={"enableAutomaticUpgrade": False})
            )
        assert denied.value.status_code == 403
        with pytest.raises(HttpResponseError) as elsewhere:
            client.machines.get("rg2", "m9")
        assert elsewhere.value.status_code == 403


def test_operations_are_settled_before_the_202_and_can_be_held(arc: ArcextServer) -> None:
    fleet(arc, "m1")
    url = f"{arc.url}/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/m1"
    body = {"properties": {"enableAutomaticUpgrade": False}}
    with arc.session() as s:
        accepted = s.patch(f"{url}/extensions/ama", params={"api-version": API}, json=body)
        assert accepted.status_code == 202 and accepted.headers["Retry-After"] == "0"
        assert s.get(accepted.headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded"  # the first poll
        with arc.hold_operations():
            held = s.patch(f"{url}/extensions/ama", params={"api-version": API}, json=body)
            assert held.status_code == 202
            assert s.get(held.headers["Azure-AsyncOperation"]).json()["status"] == "InProgress"
            got = s.get(f"{url}/extensions/ama", params={"api-version": API}).json()
            assert got["properties"]["provisioningState"] == "Updating"
        assert s.get(held.headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded"


def test_the_harness_sends_retry_after_0_and_arcext_serve_1(arc: ArcextServer) -> None:
    assert DEFAULTS["ARCEXT_RETRY_AFTER"] == 1
    with ArcextServer(config={"ARCEXT_RETRY_AFTER": 1}, settle_operations=0) as plain:
        fleet(plain, "m1")
        url = f"{plain.url}/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/m1"
        with plain.session() as s:
            r = s.patch(f"{url}/extensions/ama", params={"api-version": API}, json={"properties": {}})
            assert r.status_code == 202 and r.headers["Retry-After"] == "1"


def test_reset_forgets_the_world_but_keeps_tokens(arc: ArcextServer) -> None:
    fleet(arc, "m1")
    token = arc.create_token("Reader", f"/subscriptions/{SUB}")
    arc.publish_version(PUBLISHER, TYPE, "1.3.0")
    arc.reset()
    assert arc.rollouts() == []
    with requests.get(
        f"{arc.url}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/machines",
        params={"api-version": API},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ) as r:
        assert r.status_code == 200 and r.json()["value"] == []
