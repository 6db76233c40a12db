"""pytest plugin (entry point ``arcext``): fixtures prefixed ``arcext_`` so they never clash.

- ``arcext_server``: a live server shared by the session, reset before each test.
- ``arcext_session``: a ``requests.Session`` that sends the server's Owner token.
- ``arcext_client``: an azure-mgmt-hybridcompute ``HybridComputeManagementClient`` for the server.

Override ``arcext_server_options`` (session scope) to pass ArcextServer options, e.g. ``{"tls": True}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from .server import ArcextServer


@pytest.fixture(scope="session")
def arcext_server_options() -> dict[str, Any]:
    return {}


@pytest.fixture(scope="session")
def arcext_live_server(arcext_server_options: dict[str, Any]) -> Iterator[ArcextServer]:
    with ArcextServer(**arcext_server_options) as server:
        yield server


@pytest.fixture
def arcext_server(arcext_live_server: ArcextServer) -> ArcextServer:
    arcext_live_server.reset()
    return arcext_live_server


@pytest.fixture
def arcext_session(arcext_server: ArcextServer) -> Iterator[requests.Session]:
    with arcext_server.session() as session:
        yield session


@pytest.fixture
def arcext_client(arcext_server: ArcextServer) -> Any:
    client = arcext_server.sdk_client()
    yield client
    client.close()
