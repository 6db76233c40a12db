"""pytest plugin (entry point ``arcext``): fixtures prefixed ``arcext_`` so they never clash.

- ``arcext_server``: a live server shared by the session (under pytest-xdist: by the worker), reset
  before each test; with helpers to drive it (``publish_version``, ``advance``, ``set_faults``,
  ``activity_log``, ``rollouts``, ``create_token``…).
- ``arcext_session``: a ``requests.Session`` that sends the server's Owner token.
- ``arcext_client``: an azure-mgmt-hybridcompute ``HybridComputeManagementClient`` for the server.
- ``arcext_async_client``: the ``azure.mgmt.hybridcompute.aio`` client; open it in your coroutine
  with ``async with arcext_async_client as client:``.
- ``arcext_mock``: ``mock_arc()`` over the same server: unchanged code that builds
  ``HybridComputeManagementClient(credential, subscription_id)`` for Azure talks to it in-process.

Override ``arcext_server_options`` (session scope) to pass ArcextServer options, e.g.
``{"manual_clock": True}`` or ``{"tls": True}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from .mock import MockArc, mock_arc
from .server import ArcextServer


@pytest.fixture(scope="session")
def arcext_server_options() -> dict[str, Any]:
    return {}


@pytest.fixture(scope="session")
def arcext_live_server(arcext_server_options: dict[str, Any]) -> Iterator[ArcextServer]:
    # One per pytest process: each xdist worker gets its own server (a free port, its own temporary
    # data directory), so workers share nothing.
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


@pytest.fixture
def arcext_async_client(arcext_server: ArcextServer) -> Any:
    # Not opened here: aiohttp's session belongs to the event loop of the test that enters it.
    return arcext_server.async_sdk_client()


@pytest.fixture
def arcext_mock(arcext_server: ArcextServer) -> Iterator[MockArc]:
    with mock_arc(arcext_server) as mock:
        yield mock
