"""The arcext test harness: a live server for your tests, ``mock_arc()`` for unchanged Azure SDK
code, and a pytest plugin (fixtures ``arcext_server``, ``arcext_session``, ``arcext_client``,
``arcext_async_client``, ``arcext_mock``).

from arcext.testing import ArcextServer, mock_arc

with ArcextServer() as arc:
    requests.get(f"{arc.url}/subscriptions/{arc.subscription_id}/providers/Microsoft.HybridCompute/machines",
                 params={"api-version": "2026-07-15"}, headers={"Authorization": f"Bearer {arc.token}"})

with mock_arc():
    client = HybridComputeManagementClient(DefaultAzureCredential(), subscription_id)  # unchanged code
"""

from .mock import MockArc, UnmockedHostError, current_mock, mock_arc
from .server import AdminError, ArcextServer, AsyncStaticTokenCredential, StaticTokenCredential

__all__ = [
    "AdminError",
    "ArcextServer",
    "AsyncStaticTokenCredential",
    "MockArc",
    "StaticTokenCredential",
    "UnmockedHostError",
    "current_mock",
    "mock_arc",
]
