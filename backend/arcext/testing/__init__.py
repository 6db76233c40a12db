"""The arcext test harness: a live server for your tests, and a pytest plugin.

from arcext.testing import ArcextServer

with ArcextServer() as arc:
    requests.get(f"{arc.url}/subscriptions/{arc.subscription_id}/providers/Microsoft.HybridCompute/machines",
                 params={"api-version": "2026-07-15"}, headers={"Authorization": f"Bearer {arc.token}"})
"""

from .server import ArcextServer, StaticTokenCredential

__all__ = ["ArcextServer", "StaticTokenCredential"]
