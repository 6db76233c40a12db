"""Shared helpers. The arcext pytest plugin (fixtures arcext_server, arcext_session, arcext_client)
is loaded through its pytest11 entry point, exactly as users get it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from arcext.testing import ArcextServer

pytest_plugins = ("pgdb",)  # its fixtures: pg_url, db (tests/pgdb.py)

API = "2026-07-15"
SUB = "00000000-0000-0000-0000-000000000000"


# --- a server on the manual clock with simulated hosts, shared by a module and reset per test -----------
# (a module may override ``manual_server`` to configure it, or ``arc`` to use another server)
@pytest.fixture(scope="module")
def manual_server() -> Iterator[ArcextServer]:
    with ArcextServer(manual_clock=True, simulate=True) as server:
        yield server


@pytest.fixture
def arc(manual_server: ArcextServer) -> ArcextServer:
    manual_server.reset()
    return manual_server


@pytest.fixture
def s(arc: ArcextServer) -> Iterator[requests.Session]:
    with arc.session() as session:
        yield session


# --- a server on the manual clock that reaches real (fake or sshd) hosts, for the driver suites -----------
#: what a host handler's commands run in one upgrade: WALA's order (disable old, update new, uninstall old,
#: install new, enable new)
UPGRADE_ORDER = [
    ("1.0.0", "disable"),
    ("1.1.0", "update"),
    ("1.0.0", "uninstall"),
    ("1.1.0", "install"),
    ("1.1.0", "enable"),
]


@pytest.fixture(scope="module")
def driver_server() -> Iterator[ArcextServer]:
    with ArcextServer(manual_clock=True, simulate=False) as server:
        yield server


@pytest.fixture
def driver_arc(driver_server: ArcextServer) -> ArcextServer:
    """The module's driver server, reset, polling host status fast (0.1 s) so the suites run quickly."""
    from arcext.hosts.agent import DriverTuning

    driver_server.reset()
    driver_server.services.hosts.tuning = DriverTuning(status_poll_s=0.1, deadline_margin_s=10)
    return driver_server


def rg_url(server: ArcextServer, rg: str = "rg1", sub: str = SUB) -> str:
    return f"{server.url}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute"


def machine_url(server: ArcextServer, machine: str = "m1", rg: str = "rg1", sub: str = SUB) -> str:
    return f"{rg_url(server, rg, sub)}/machines/{machine}"


def ext_url(server: ArcextServer, ext: str = "cse", machine: str = "m1", rg: str = "rg1", sub: str = SUB) -> str:
    return f"{machine_url(server, machine, rg, sub)}/extensions/{ext}"


def put_machine(
    session: requests.Session,
    server: ArcextServer,
    machine: str = "m1",
    rg: str = "rg1",
    location: str = "eastus",
    **extra: Any,
) -> dict[str, Any]:
    r = session.put(
        machine_url(server, machine, rg),
        params={"api-version": API},
        json={"location": location, "properties": {"osType": "windows"}, **extra},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_operation(session: requests.Session, response: requests.Response, timeout: float = 10) -> dict[str, Any]:
    """Poll a 202's Azure-AsyncOperation URL (faster than Retry-After) until it is terminal."""
    assert response.status_code == 202, response.text
    url = response.headers["Azure-AsyncOperation"]
    deadline = time.monotonic() + timeout
    while True:
        status = session.get(url)
        assert status.status_code == 200, status.text
        body: dict[str, Any] = status.json()
        if body["status"] != "InProgress":
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"operation still InProgress after {timeout}s: {body}")
        time.sleep(0.02)


def put_extension(
    session: requests.Session,
    server: ArcextServer,
    ext: str = "cse",
    machine: str = "m1",
    rg: str = "rg1",
    properties: dict[str, Any] | None = None,
    wait: bool = True,
) -> requests.Response:
    props = properties or {
        "publisher": "Microsoft.Compute",
        "type": "CustomScriptExtension",
        "typeHandlerVersion": "1.10.3",
        "settings": {"commandToExecute": "hostname"},
    }
    r = session.put(
        ext_url(server, ext, machine, rg), params={"api-version": API}, json={"location": "eastus", "properties": props}
    )
    if wait:
        assert wait_operation(session, r)["status"] == "Succeeded"
    return r


@pytest.fixture
def seeded(arcext_server: ArcextServer, arcext_session: requests.Session) -> ArcextServer:
    """A machine m1 in rg1 with one CustomScriptExtension 'cse'."""
    put_machine(arcext_session, arcext_server)
    put_extension(arcext_session, arcext_server)
    return arcext_server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the PostgreSQL pass (ARCEXT_TEST_STORE=postgres, ./scripts/test) a test that is about the embedded
    store's own files says so with ``@pytest.mark.embedded_store("why")`` and is skipped with that reason."""
    if os.environ.get("ARCEXT_TEST_STORE") != "postgres":
        return
    for item in items:
        marker = item.get_closest_marker("embedded_store")
        if marker is not None:
            why = marker.args[0] if marker.args else "about the embedded store"
            item.add_marker(pytest.mark.skip(reason=f"embedded store only: {why}"))


#: what `arcext serve` reads from the environment as its flags (--data-dir, --public-url, --manual-clock, --simulate,
#: --database): a test that starts it gives those itself, whatever the shell running the tests exported
SERVE_FLAG_VARIABLES = (
    "ARCEXT_DATA_DIR",
    "ARCEXT_PUBLIC_URL",
    "ARCEXT_MANUAL_CLOCK",
    "ARCEXT_SIMULATE",
    "ARCEXT_DATABASE_URL",
)


def serve_environment(**extra: str) -> dict[str, str]:
    """The environment for an `arcext serve` subprocess: this one without ``SERVE_FLAG_VARIABLES``, plus ``extra``."""
    return {k: v for k, v in os.environ.items() if k not in SERVE_FLAG_VARIABLES} | extra
