"""typeHandlerVersion given as Major.Minor (issue #13, ARM): Azure accepts "1.10" and installs the newest
published 1.10.x; properties.typeHandlerVersion and properties.instanceView.typeHandlerVersion then show
that full version (the spec's Extension_CreateOrUpdate / Extension_Update examples send "1.10" and answer
"1.10.3" in both; the Az recordings send and get back the full "1.4.2798.3"). arcext's catalog decides which
versions are published, and the upgrade engine starts from the full version.

Live server, real HTTP, the unmodified azure-mgmt-hybridcompute SDK, a manual clock for the engine.
"""

from __future__ import annotations

from typing import Any

import requests
from azure.mgmt.hybridcompute.models import MachineExtension, MachineExtensionUpdate

from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url

RG = "thv-rg"
WEEK = 7 * 86400
CSE = ("Microsoft.Compute", "CustomScriptExtension")  # not an automatic-upgrade type: nothing moves by itself
AMA = ("Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent")  # supports automatic upgrade


def _done(poller: Any) -> Any:
    result = poller.result(timeout=30)
    assert poller.status().lower() == "succeeded"
    return result


def _raw(s: requests.Session, arc: ArcextServer, machine: str, name: str) -> dict[str, Any]:
    r = s.get(ext_url(arc, name, machine, RG), params={"api-version": API})
    assert r.status_code == 200, r.text
    props: dict[str, Any] = r.json()["properties"]
    return props


def _versions(props: dict[str, Any]) -> tuple[str, str]:
    return props["typeHandlerVersion"], props["instanceView"]["typeHandlerVersion"]


def _on_host(arc: ArcextServer, machine: str, name: str) -> str:
    (host,) = arc.simulated_host(machine)
    version: str = host["extensions"][name]["version"]
    return version


def test_major_minor_installs_the_newest_published_patch_and_shows_it(arc: ArcextServer, s: requests.Session) -> None:
    publisher, type_ = CSE
    for version in ("1.9.9", "1.10.0", "1.10.3", "1.10.12", "1.11.0", "1.11.2", "2.0.0"):
        arc.publish_version(publisher, type_, version)
    with arc.sdk_client() as client:
        client.machines.create_or_update(RG, "web-01", {"location": "eastus", "properties": {"osType": "windows"}})

        def put(version: str) -> Any:
            body = MachineExtension(
                location="eastus",
                properties={
                    "publisher": publisher,
                    "type": type_,
                    "typeHandlerVersion": version,
                    "settings": {"commandToExecute": "hostname"},
                },
            )
            return _done(client.machine_extensions.begin_create_or_update(RG, "web-01", "cse", body))

        # the spec's example: "1.10" in, the newest 1.10.x out (1.10.12 > 1.10.3: compared as numbers)
        created = put("1.10")
        assert created.properties.type_handler_version == "1.10.12"
        assert created.properties.instance_view.type_handler_version == "1.10.12"
        got = client.machine_extensions.get(RG, "web-01", "cse")
        assert (got.properties.type_handler_version, got.properties.instance_view.type_handler_version) == (
            "1.10.12",
            "1.10.12",
        )
        assert _versions(_raw(s, arc, "web-01", "cse")) == ("1.10.12", "1.10.12")
        assert _on_host(arc, "web-01", "cse") == "1.10.12"  # what the host installed, not "1.10"
        listed = [e.properties.type_handler_version for e in client.machine_extensions.list(RG, "web-01")]
        assert listed == ["1.10.12"]
        machine = client.machines.get(RG, "web-01", expand="instanceView")
        assert [e.properties.type_handler_version for e in machine.resources or []] == ["1.10.12"]

        # PATCH (Update-AzConnectedMachineExtension -TypeHandlerVersion, the SDK's begin_update) resolves too
        updated = _done(
            client.machine_extensions.begin_update(
                RG, "web-01", "cse", MachineExtensionUpdate(properties={"typeHandlerVersion": "1.11"})
            )
        )
        assert (updated.properties.type_handler_version, updated.properties.instance_view.type_handler_version) == (
            "1.11.2",
            "1.11.2",
        )
        assert _on_host(arc, "web-01", "cse") == "1.11.2"
        assert updated.properties.settings == {"commandToExecute": "hostname"}

        # full versions (three or four parts, as the Az recordings send) and other lengths are taken as they are
        assert put("1.10.3").properties.type_handler_version == "1.10.3"
        assert put("1.4.2798.3").properties.type_handler_version == "1.4.2798.3"
        assert put("2").properties.type_handler_version == "2"
        # a Major.Minor with nothing published under it is kept as given (arcext's catalog holds only what an
        # operator published; installing an unpublished version stays allowed)
        assert _versions(_raw(s, arc, "web-01", "cse")) == ("2", "2")
        kept = put("3.1")
        assert (kept.properties.type_handler_version, kept.properties.instance_view.type_handler_version) == (
            "3.1",
            "3.1",
        )

        # a PUT that omits the version keeps the resolved one; a GET-then-PUT round trip (az's generic update)
        # sends the full version back unchanged
        put("1.10")
        round_trip = client.machine_extensions.get(RG, "web-01", "cse")
        round_trip.properties.settings = {"commandToExecute": "whoami"}
        again = _done(client.machine_extensions.begin_create_or_update(RG, "web-01", "cse", round_trip))
        assert again.properties.type_handler_version == "1.10.12"
        assert again.properties.settings == {"commandToExecute": "whoami"}


def test_publisher_and_type_of_the_stored_extension_resolve_a_bare_version(
    arc: ArcextServer, s: requests.Session
) -> None:
    """A PATCH carries only the version; the catalog lookup uses the extension's own publisher and type,
    case-insensitively, as the catalog does."""
    publisher, type_ = CSE
    for version in ("1.10.0", "1.10.3"):
        arc.publish_version(publisher, type_, version)
    r = s.put(
        f"{arc.url}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.HybridCompute/machines/web-02",
        params={"api-version": API},
        json={"location": "eastus"},
    )
    assert r.status_code == 200, r.text
    body = {"location": "eastus", "properties": {"publisher": publisher.lower(), "type": type_.upper()}}
    body["properties"]["typeHandlerVersion"] = "1.9.0"
    r = s.put(ext_url(arc, "cse", "web-02", RG), params={"api-version": API}, json=body)
    assert r.status_code == 202, r.text
    assert arc.wait_for_operations()
    r = s.patch(
        ext_url(arc, "cse", "web-02", RG),
        params={"api-version": API},
        json={"properties": {"typeHandlerVersion": "1.10"}},
    )
    assert r.status_code == 202, r.text
    assert arc.wait_for_operations()
    assert _versions(_raw(s, arc, "web-02", "cse")) == ("1.10.3", "1.10.3")


def test_the_engine_starts_from_the_resolved_version(arc: ArcextServer, s: requests.Session) -> None:
    """Created as "1.0" with 1.0.0 and 1.0.5 published: 1.0.5 runs, nothing is pending (1.0.5 is not an
    upgrade of itself); a newer minor published later still reaches it automatically, from 1.0.5."""
    publisher, type_ = AMA
    for version in ("1.0.0", "1.0.5"):
        arc.publish_version(publisher, type_, version)
    with arc.sdk_client() as client:
        client.machines.create_or_update(RG, "ama-01", {"location": "eastus", "properties": {"osType": "windows"}})
        created = _done(
            client.machine_extensions.begin_create_or_update(
                RG,
                "ama-01",
                "ama",
                MachineExtension(
                    location="eastus",
                    properties={"publisher": publisher, "type": type_, "typeHandlerVersion": "1.0"},
                ),
            )
        )
    assert created.properties.type_handler_version == "1.0.5"
    assert created.properties.enable_automatic_upgrade is True

    pending_url = f"{arc.url}/arcext/v1/subscriptions/{SUB}/resourceGroups/{RG}/machines/ama-01/pending"
    (item,) = s.get(pending_url).json()["extensions"]
    assert (item["version"], item["updateAvailable"], item["state"]) == ("1.0.5", False, "UpToDate")
    arc.advance(days=70)  # nothing to do: the installed 1.0.5 is the newest 1.0.x
    assert _versions(_raw(s, arc, "ama-01", "ama")) == ("1.0.5", "1.0.5")

    rollout = arc.publish_version(publisher, type_, "1.1.0")
    assert rollout.get("rolloutId")
    (item,) = s.get(pending_url).json()["extensions"]
    assert (item["version"], item["updateAvailable"], item["targetVersion"]) == ("1.0.5", True, "1.1.0")
    summary = arc.advance(days=8 * 7)
    assert summary["rolledBack"] == 0 and summary["rollbackFailed"] == 0
    assert _versions(_raw(s, arc, "ama-01", "ama")) == ("1.1.0", "1.1.0")
    assert _on_host(arc, "ama-01", "ama") == "1.1.0"
    events = arc.activity_log(filter=f"resourceUri eq '{_ext_id('ama-01', 'ama')}'")
    upgrades = [e for e in events if (e.get("properties") or {}).get("toVersion") == "1.1.0"]
    assert upgrades and {e["properties"]["fromVersion"] for e in upgrades} == {"1.0.5"}, events


def _ext_id(machine: str, name: str) -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.HybridCompute/machines/{machine}"
        f"/extensions/{name}"
    )
