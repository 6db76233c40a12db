"""Ten user tests through the arcext pytest fixtures, run as a user's suite would be (a pytest run of their own).

Each inner test creates a machine and an extension (a long-running operation: 202, Azure-AsyncOperation,
polling) and turns automatic upgrade off (another one), as a user testing Arc automation would. Used by
tests/test_harness_user_suite.py (they pass) and scripts/bench_harness.py (how long the whole run takes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

COMMON = """
import json, os, time

EXTENSION = {
    "location": "eastus",
    "properties": {
        "publisher": "Microsoft.Azure.Monitor",
        "type": "AzureMonitorWindowsAgent",
        "typeHandlerVersion": "1.2.0",
    },
}

def record(name, started):
    with open(os.environ["ARCEXT_TIMINGS"], "a") as out:
        out.write(json.dumps([name, time.perf_counter() - started]) + "\\n")
"""

SYNC_TESTS = (
    COMMON
    + """
import pytest

@pytest.mark.parametrize("n", range(10))
def test_turn_automatic_upgrade_off(arcext_client, n):
    started = time.perf_counter()
    arcext_client.machines.create_or_update("rg", f"m{n}", {"location": "eastus"})
    record("create machine (1 request)", started)
    started = time.perf_counter()
    created = arcext_client.machine_extensions.begin_create_or_update("rg", f"m{n}", "ama", EXTENSION).result()
    record("create extension (LRO)", started)
    assert created.properties.enable_automatic_upgrade is True
    started = time.perf_counter()
    updated = arcext_client.machine_extensions.begin_update(
        "rg", f"m{n}", "ama", {"properties": {"enableAutomaticUpgrade": False}}
    ).result()
    record("turn automatic upgrade off (LRO)", started)
    assert updated.properties.enable_automatic_upgrade is False
    assert arcext_client.machine_extensions.get("rg", f"m{n}", "ama").properties.enable_automatic_upgrade is False
"""
)

ASYNC_TESTS = (
    COMMON
    + """
import asyncio
import pytest

@pytest.mark.parametrize("n", range(10))
def test_turn_automatic_upgrade_off(arcext_async_client, n):
    async def scenario():
        async with arcext_async_client as client:
            started = time.perf_counter()
            await client.machines.create_or_update("rg", f"m{n}", {"location": "eastus"})
            record("create machine (1 request)", started)
            started = time.perf_counter()
            poller = await client.machine_extensions.begin_create_or_update("rg", f"m{n}", "ama", EXTENSION)
            created = await poller.result()
            record("create extension (LRO)", started)
            assert created.properties.enable_automatic_upgrade is True
            started = time.perf_counter()
            poller = await client.machine_extensions.begin_update(
                "rg", f"m{n}", "ama", {"properties": {"enableAutomaticUpgrade": False}}
            )
            updated = await poller.result()
            record("turn automatic upgrade off (LRO)", started)
            assert updated.properties.enable_automatic_upgrade is False
            got = await client.machine_extensions.get("rg", f"m{n}", "ama")
            assert got.properties.enable_automatic_upgrade is False

    asyncio.run(scenario())
"""
)


def run_inner(tmp_path: Path, source: str) -> tuple[float, dict[str, list[float]]]:
    (tmp_path / "test_user_suite.py").write_text(textwrap.dedent(source))
    timings = tmp_path / "timings.jsonl"
    env = {**os.environ, "ARCEXT_TIMINGS": str(timings)}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    # A user's suite has arcext[test]'s plugins, not arcext's own dev tools: schemathesis' and hypothesis'
    # pytest plugins (installed here by .[dev] for tests/test_fuzz_openapi.py and test_engine_model.py) would
    # add about a second of imports to every run that is not the harness's cost.
    dev_only = ["-p", "no:schemathesis", "-p", "no:hypothesispytest"]
    command = [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", *dev_only]
    command.append("test_user_suite.py")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - started
    if done.returncode != 0 or "10 passed" not in done.stdout:
        raise AssertionError(done.stdout + done.stderr)
    costs: dict[str, list[float]] = {}
    for line in timings.read_text().splitlines():
        name, seconds = json.loads(line)
        costs.setdefault(name, []).append(seconds)
    return wall, costs


SUITES = {"sync client": SYNC_TESTS, "async client (.aio)": ASYNC_TESTS}
