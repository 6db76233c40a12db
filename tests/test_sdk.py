"""The unmodified azure-mgmt-hybridcompute 10.0.0 SDK against a live server, over http and https."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.hybridcompute import HybridComputeManagementClient
from azure.mgmt.hybridcompute.models import MachineExtension, MachineExtensionUpdate

from arcext.testing import ArcextServer

RG = "sdk-rg"
PUBLISHER, TYPE = "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"


@pytest.fixture(scope="module")
def tls_server() -> Iterator[ArcextServer]:
    with ArcextServer(tls=True) as server:
        yield server


@pytest.fixture(params=["http", "https"])
def server(request: pytest.FixtureRequest, arcext_server: ArcextServer) -> ArcextServer:
    if request.param == "http":
        return arcext_server
    tls: ArcextServer = request.getfixturevalue("tls_server")
    tls.reset()
    return tls


def _completed(poller: Any) -> Any:
    result = poller.result(timeout=30)
    assert poller.done()
    assert poller.status().lower() == "succeeded"
    return result


def test_sdk_end_to_end(server: ArcextServer) -> None:
    assert server.url.startswith("https://" if server.tls else "http://")
    client: HybridComputeManagementClient = server.sdk_client()
    with client:
        machine = client.machines.create_or_update(
            RG, "web-01", {"location": "eastus", "properties": {"osType": "windows"}}
        )
        assert machine.id.endswith("/resourceGroups/sdk-rg/providers/Microsoft.HybridCompute/machines/web-01")
        client.machines.create_or_update(RG, "web-02", {"location": "westus", "properties": {"osType": "linux"}})
        client.machines.create_or_update("other-rg", "db-01", {"location": "westus"})
        assert client.machines.get(RG, "WEB-01").name == "web-01"
        assert sorted(m.name for m in client.machines.list_by_resource_group(RG)) == ["web-01", "web-02"]
        assert sorted(m.name for m in client.machines.list_by_subscription()) == ["db-01", "web-01", "web-02"]

        created = _completed(
            client.machine_extensions.begin_create_or_update(
                RG,
                "web-01",
                "AzureMonitorWindowsAgent",
                MachineExtension(
                    location="eastus",
                    properties={
                        "publisher": PUBLISHER,
                        "type": TYPE,
                        "typeHandlerVersion": "1.2.0",
                        "settings": {"workspace": "w1"},
                        "protectedSettings": {"key": "do-not-return"},
                    },
                ),
            )
        )
        assert created.properties.provisioning_state == "Succeeded"
        assert created.properties.enable_automatic_upgrade is True  # the default when omitted
        assert created.properties.protected_settings is None

        got = client.machine_extensions.get(RG, "web-01", "AzureMonitorWindowsAgent")
        assert got.properties.type_handler_version == "1.2.0"
        assert got.properties.instance_view.type_handler_version == "1.2.0"
        assert [e.name for e in client.machine_extensions.list(RG, "web-01")] == ["AzureMonitorWindowsAgent"]
        assert [e.name for e in client.machine_extensions.list(RG, "web-01", expand="instanceView")] == [
            "AzureMonitorWindowsAgent"
        ]

        for flag in (False, True):
            updated = _completed(
                client.machine_extensions.begin_update(
                    RG,
                    "web-01",
                    "AzureMonitorWindowsAgent",
                    MachineExtensionUpdate(properties={"enableAutomaticUpgrade": flag}),
                )
            )
            assert updated.properties.enable_automatic_upgrade is flag
            assert updated.properties.settings == {"workspace": "w1"}  # PATCH merges
            fetched = client.machine_extensions.get(RG, "web-01", "AzureMonitorWindowsAgent")
            assert fetched.properties.enable_automatic_upgrade is flag

        session = server.session()
        for version in ("1.2.0", "1.10.1", "1.9.0"):
            r = session.put(
                f"{server.url}/arcext/v1/catalog/{PUBLISHER}/{TYPE}/versions/{version}", json={"critical": False}
            )
            assert r.status_code in (200, 201), r.text
        versions = [v.properties.version for v in client.extension_metadata.list("eastus", PUBLISHER, TYPE)]
        assert versions == ["1.10.1", "1.9.0", "1.2.0"]  # newest first, compared component by component
        one = client.extension_metadata.get("eastus", PUBLISHER, TYPE, "1.10.1")
        assert (one.properties.publisher, one.properties.extension_type, one.properties.version) == (
            PUBLISHER,
            TYPE,
            "1.10.1",
        )

        # publishing to a one-machine fleet starts its wave at once: let that automatic upgrade end first, or the
        # delete races it (409 AnotherOperationInProgress whenever the upgrade is slower than two GETs)
        server.run_engine()
        _completed(client.machine_extensions.begin_delete(RG, "web-01", "AzureMonitorWindowsAgent"))
        assert list(client.machine_extensions.list(RG, "web-01")) == []
        with pytest.raises(ResourceNotFoundError):
            client.machine_extensions.get(RG, "web-01", "AzureMonitorWindowsAgent")

        _completed(client.machines.begin_delete(RG, "web-02"))
        assert sorted(m.name for m in client.machines.list_by_subscription()) == ["db-01", "web-01"]


def test_sdk_client_fixture_and_paging(arcext_server: ArcextServer, arcext_client: Any) -> None:
    """The plugin's client follows nextLink pages (the server pages at ARCEXT_PAGE_SIZE)."""
    app = arcext_server.app
    assert app is not None
    previous = app.config["ARCEXT_PAGE_SIZE"]
    app.config["ARCEXT_PAGE_SIZE"] = 3
    try:
        for i in range(7):
            arcext_client.machines.create_or_update("paged", f"m{i}", {"location": "eastus"})
        names = [m.name for m in arcext_client.machines.list_by_resource_group("paged")]
        assert names == [f"m{i}" for i in range(7)]
    finally:
        app.config["ARCEXT_PAGE_SIZE"] = previous
