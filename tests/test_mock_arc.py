"""mock_arc(): code written for Azure (default ARM endpoint, azure-identity credentials) runs unchanged
against an in-process arcext, as a context manager, a decorator and a fixture, sync and async; and
nothing leaves the process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import unittest
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import AioHttpTransport, AsyncioRequestsTransport, RequestsTransport
from azure.core.rest import HttpRequest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential
from azure.mgmt.hybridcompute import HybridComputeManagementClient
from azure.mgmt.hybridcompute.aio import HybridComputeManagementClient as AsyncHybridComputeManagementClient

from arcext.testing import ArcextServer, MockArc, UnmockedHostError, current_mock, mock_arc
from harness_example import turn_off_automatic_upgrade, turn_off_automatic_upgrade_async

SUB = "6f1c2a9e-4b7d-4c1e-9a53-2f0e8d7c1b11"  # made up, as a user's would be
RG = "web-servers"
EXTENSION = {
    "location": "eastus",
    "properties": {
        "publisher": "Microsoft.Azure.Monitor",
        "type": "AzureMonitorWindowsAgent",
        "typeHandlerVersion": "1.2.0",
    },
}

# --- a process-wide record of network activity (audit hooks cannot be removed, so one, gated) ------
_NETWORK: list[tuple[str, Any]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _NETWORK is None:
        return
    if event == "socket.connect":
        _NETWORK.append((event, args[1]))
    elif event == "socket.getaddrinfo" and args[0] not in ("127.0.0.1", "localhost"):
        _NETWORK.append((event, args[0]))  # (the server mock_arc() starts binds a loopback port)


sys.addaudithook(_audit)


@pytest.fixture
def network() -> Iterator[list[tuple[str, Any]]]:
    """Every socket connect and every DNS lookup but loopback's that the process makes during the test."""
    global _NETWORK
    _NETWORK = []
    try:
        yield _NETWORK
    finally:
        _NETWORK = None


def seed(machines: dict[str, list[str]], resource_group: str = RG) -> None:
    """Machines and their extensions, made through the unmodified SDK as a user's setup would."""
    with HybridComputeManagementClient(DefaultAzureCredential(), SUB) as client:
        for machine, extensions in machines.items():
            client.machines.create_or_update(resource_group, machine, {"location": "eastus"})
            for name in extensions:
                client.machine_extensions.begin_create_or_update(resource_group, machine, name, EXTENSION).result()


def automatic_upgrade(resource_group: str = RG) -> dict[str, bool]:
    with HybridComputeManagementClient(DefaultAzureCredential(), SUB) as client:
        return {
            f"{m.name}/{e.name}": e.properties.enable_automatic_upgrade
            for m in client.machines.list_by_resource_group(resource_group)
            for e in client.machine_extensions.list(resource_group, m.name)
        }


def test_unchanged_code_passes_inside_the_context_manager(network: list[tuple[str, Any]]) -> None:
    with mock_arc() as arc:
        seed({"web-01": ["cse", "ama"], "web-02": ["cse"]})
        seed({"db-01": ["cse"]}, resource_group="databases")
        assert turn_off_automatic_upgrade(SUB, RG) == ["web-01/ama", "web-01/cse", "web-02/cse"]
        assert automatic_upgrade() == {"web-01/ama": False, "web-01/cse": False, "web-02/cse": False}
        assert automatic_upgrade("databases") == {"db-01/cse": True}  # another group is left alone
        assert turn_off_automatic_upgrade(SUB, RG) == []  # nothing left to change
        hosts = {url.split("/")[2] for _method, url in arc.requests}
        assert hosts == {"login.microsoftonline.com", "management.azure.com"}
        # the token request went to the tenant the script named, and was answered locally
        assert ("POST", "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token") in arc.requests
    assert network == []  # no connect, no DNS lookup: nothing left the process


@mock_arc()
def test_unchanged_code_passes_inside_the_decorator() -> None:
    seed({"web-01": ["cse"]})
    assert turn_off_automatic_upgrade(SUB, RG) == ["web-01/cse"]
    mock = current_mock()
    assert mock is not None and mock.server.services.store.count_machines() == 1


@mock_arc()
def test_each_decorated_call_gets_a_fresh_server() -> None:
    assert automatic_upgrade() == {}  # the previous test's machines are not here


def test_unchanged_code_passes_with_the_fixture(arcext_mock: MockArc, arcext_server: ArcextServer) -> None:
    assert arcext_mock.server is arcext_server
    seed({"web-01": ["ama"], "web-02": ["ama"]})
    seed({"db-01": ["ama"]}, resource_group="databases")
    assert turn_off_automatic_upgrade(SUB, RG) == ["web-01/ama", "web-02/ama"]
    # the harness helpers work through the mock: only the opted-in extension is eligible
    arcext_mock.publish_version("Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent", "1.3.0")
    assert [(r["version"], r["eligible"]) for r in arcext_mock.rollouts()] == [("1.3.0", 1)]


def test_worked_example_the_opted_out_group_is_never_upgraded() -> None:
    """The README's example: the script opts a group out, a new version reaches everything else."""
    with mock_arc(manual_clock=True) as arc:
        seed({"web-01": ["ama"], "web-02": ["ama"]})
        seed({"db-01": ["ama"]}, resource_group="databases")
        assert turn_off_automatic_upgrade(SUB, RG) == ["web-01/ama", "web-02/ama"]
        arc.publish_version("Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent", "1.3.0")
        summary = arc.advance(days=60)  # past the 8-week spread window
        assert summary["succeeded"] == 1
        upgraded = [
            e["resourceId"].split("/machines/")[1] for e in arc.activity_log(SUB) if e["status"]["value"] == "Succeeded"
        ]
        assert upgraded == ["db-01/extensions/ama"]


def test_unchanged_async_code_passes_inside_the_mock(network: list[tuple[str, Any]]) -> None:
    async def scenario() -> list[str]:
        async with mock_arc():
            seed({"web-01": ["cse", "ama"]})
            changed = await turn_off_automatic_upgrade_async(SUB, RG)
            assert automatic_upgrade() == {"web-01/ama": False, "web-01/cse": False}
            return changed

    assert asyncio.run(scenario()) == ["web-01/ama", "web-01/cse"]
    assert network == []


@mock_arc()
async def _decorated_coroutine() -> list[str]:
    seed({"web-01": ["cse"]})
    return await turn_off_automatic_upgrade_async(SUB, RG)


def test_the_decorator_wraps_coroutines() -> None:
    assert asyncio.run(_decorated_coroutine()) == ["web-01/cse"]


def test_a_request_for_another_host_fails_naming_it(network: list[tuple[str, Any]]) -> None:
    with mock_arc():
        client = HybridComputeManagementClient(DefaultAzureCredential(), SUB, base_url="https://arc.contoso.example")
        with client, pytest.raises(UnmockedHostError, match=r"arc\.contoso\.example is not mocked") as raised:
            client.machines.get(RG, "web-01")
        assert raised.value.host == "arc.contoso.example"
    assert network == []


def test_an_async_request_for_another_host_fails_naming_it(network: list[tuple[str, Any]]) -> None:
    async def scenario() -> None:
        async with (
            mock_arc(),
            AsyncClientSecretCredential("contoso.onmicrosoft.com", "app", "secret") as credential,
            AsyncHybridComputeManagementClient(credential, SUB, base_url="https://arc.contoso.example:8443") as client,
        ):
            with pytest.raises(UnmockedHostError, match=r"arc\.contoso\.example:8443 is not mocked"):
                await client.machines.get(RG, "web-01")

    asyncio.run(scenario())
    assert network == []


def test_identities_map_a_client_id_to_a_scoped_token() -> None:
    with mock_arc() as arc:
        seed({"web-01": ["cse"]})
        arc.identities["8a1e3d52-0000-4000-8000-000000000001"] = arc.create_token("Reader", f"/subscriptions/{SUB}")
        with pytest.raises(HttpResponseError) as refused:  # the script's service principal may only read
            turn_off_automatic_upgrade(SUB, RG)
        assert refused.value.status_code == 403 and refused.value.error is not None
        assert refused.value.error.code == "AuthorizationFailed"
        assert automatic_upgrade() == {"web-01/cse": True}


def test_managed_identity_is_answered_locally(network: list[tuple[str, Any]]) -> None:
    with mock_arc(), HybridComputeManagementClient(ManagedIdentityCredential(), SUB) as client:
        client.machines.create_or_update(RG, "web-01", {"location": "eastus"})
        assert [m.name for m in client.machines.list_by_subscription()] == ["web-01"]
    assert network == []


def test_the_made_up_service_principal_is_set_only_while_active() -> None:
    before = {k: os.environ.get(k) for k in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET")}
    with mock_arc():
        assert all(os.environ.get(k) for k in before)
    assert {k: os.environ.get(k) for k in before} == before


def test_the_transports_are_restored_after_the_block() -> None:
    originals = (RequestsTransport.send, AsyncioRequestsTransport.send, AioHttpTransport.send)
    with mock_arc():
        assert RequestsTransport.send is not originals[0] and AioHttpTransport.send is not originals[2]
        with mock_arc() as inner:  # nested: the innermost answers
            assert current_mock() is inner
    assert (RequestsTransport.send, AsyncioRequestsTransport.send, AioHttpTransport.send) == originals
    assert current_mock() is None


def test_passthrough_hosts_reach_the_network(arcext_server: ArcextServer) -> None:
    host = arcext_server.url.split("//")[1].split(":")[0]
    with mock_arc(passthrough=[host]) as arc, arcext_server.sdk_client() as client:
        client.machines.create_or_update(RG, "web-01", {"location": "eastus"})  # over loopback HTTP
        assert arc.requests == []  # the mock answered nothing
    assert arcext_server.services.store.count_machines() == 1


@mock_arc()
class TestAsAClassDecorator:
    def test_each_method_gets_a_fresh_mock(self) -> None:
        seed({"web-01": ["ama"]})
        assert turn_off_automatic_upgrade(SUB, RG) == ["web-01/ama"]

    def test_and_a_fresh_server(self) -> None:
        assert automatic_upgrade() == {}


@mock_arc()
class UnittestCase(unittest.TestCase):
    def setUp(self) -> None:
        seed({"web-01": ["ama"]})  # setUp runs inside the mock too

    def test_set_up_and_test_share_the_mock(self) -> None:
        self.assertEqual(turn_off_automatic_upgrade(SUB, RG), ["web-01/ama"])


def test_send_request_with_a_streamed_body_and_a_streamed_answer() -> None:
    """The client's own send_request: a chunked upload reaches arcext whole; stream=True reads the answer."""
    url = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.HybridCompute/machines/web-01"
    with mock_arc(), HybridComputeManagementClient(DefaultAzureCredential(), SUB) as client:
        chunks = iter([b'{"location": ', b'"eastus"}'])
        put = HttpRequest("PUT", url, params={"api-version": "2024-07-10"}, content=chunks)
        put.headers["Content-Type"] = "application/json"
        created = client.send_request(put)
        assert created.status_code == 200 and created.json()["location"] == "eastus"
        got = client.send_request(HttpRequest("GET", url, params={"api-version": "2024-07-10"}), stream=True)
        assert json.loads(b"".join(got.iter_bytes()))["name"] == "web-01"
        got.close()


def test_absolute_urls_from_the_servers_own_address_are_shown_as_arm() -> None:
    """A server that builds Location/Azure-AsyncOperation and nextLink from its own public URL (contract 7)
    still works under mock_arc(): the mock shows those URLs as the ARM endpoint the client called."""
    with ArcextServer(config={"ARCEXT_PAGE_SIZE": 1}) as server:
        assert server.app is not None
        inner = server.app.wsgi_app
        own = server.url.split("//")[1]

        def as_its_public_url(environ: dict[str, Any], start_response: Any) -> Any:
            environ.update({"HTTP_HOST": own, "wsgi.url_scheme": "http"})
            return inner(environ, start_response)

        server.app.wsgi_app = as_its_public_url  # type: ignore[method-assign]
        with mock_arc(server) as arc, HybridComputeManagementClient(DefaultAzureCredential(), SUB) as client:
            seed({"web-01": ["ama"], "web-02": ["ama"]})  # two LROs, each polled
            assert sorted(m.name for m in client.machines.list_by_resource_group(RG)) == ["web-01", "web-02"]
            assert turn_off_automatic_upgrade(SUB, RG) == ["web-01/ama", "web-02/ama"]
            polled = [url for method, url in arc.requests if "/operationstatus/" in url]
            assert polled and all(url.startswith("https://management.azure.com/") for url in polled)
            assert any("skiptoken" in url.lower() for _method, url in arc.requests)  # a nextLink was followed


@mock_arc
def test_the_decorator_works_without_parentheses() -> None:
    seed({"web-01": ["ama"]})
    assert turn_off_automatic_upgrade(SUB, RG) == ["web-01/ama"]
