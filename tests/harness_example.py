"""Code under test for the mock_arc() tests and the README's worked example: a script written for
Azure, unchanged (default ARM endpoint, azure-identity credential), that turns automatic upgrade off
for every extension in a resource group."""

from __future__ import annotations

from azure.identity import ClientSecretCredential
from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential
from azure.mgmt.hybridcompute import HybridComputeManagementClient
from azure.mgmt.hybridcompute.aio import HybridComputeManagementClient as AsyncHybridComputeManagementClient
from azure.mgmt.hybridcompute.models import MachineExtensionUpdate

TENANT, CLIENT_ID, SECRET = "contoso.onmicrosoft.com", "8a1e3d52-0000-4000-8000-000000000001", "not-a-real-secret"


def turn_off_automatic_upgrade(subscription_id: str, resource_group: str) -> list[str]:
    """Turn automatic upgrade off on every extension of every machine in the group; return the
    "machine/extension" names it changed."""
    credential = ClientSecretCredential(TENANT, CLIENT_ID, SECRET)
    changed = []
    with HybridComputeManagementClient(credential, subscription_id) as client:
        for machine in client.machines.list_by_resource_group(resource_group):
            for extension in client.machine_extensions.list(resource_group, machine.name):
                if extension.properties.enable_automatic_upgrade is False:
                    continue
                client.machine_extensions.begin_update(
                    resource_group,
                    machine.name,
                    extension.name,
                    MachineExtensionUpdate(properties={"enableAutomaticUpgrade": False}),
                ).result()
                changed.append(f"{machine.name}/{extension.name}")
    credential.close()
    return sorted(changed)


async def turn_off_automatic_upgrade_async(subscription_id: str, resource_group: str) -> list[str]:
    """The same with the asynchronous SDK."""
    changed = []
    async with (
        AsyncClientSecretCredential(TENANT, CLIENT_ID, SECRET) as credential,
        AsyncHybridComputeManagementClient(credential, subscription_id) as client,
    ):
        async for machine in client.machines.list_by_resource_group(resource_group):
            async for extension in client.machine_extensions.list(resource_group, machine.name):
                if extension.properties.enable_automatic_upgrade is False:
                    continue
                poller = await client.machine_extensions.begin_update(
                    resource_group,
                    machine.name,
                    extension.name,
                    MachineExtensionUpdate(properties={"enableAutomaticUpgrade": False}),
                )
                await poller.result()
                changed.append(f"{machine.name}/{extension.name}")
    return sorted(changed)
