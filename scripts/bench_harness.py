#!/usr/bin/env python
"""What a test pays in the harness: per request, per long-running operation, per reset().

Figures, not a test (always exits 0). Measured in this process:

* one request (GET of a machine) and one long-running operation (PATCH of an extension: 202,
  Azure-AsyncOperation, polls, final GET) through the unmodified azure-mgmt-hybridcompute client:
  - ``fixture``: ``ArcextServer.sdk_client()`` over loopback HTTP, as the ``arcext_client`` fixture;
  - ``mock_arc``: a client built for Azure (``ClientSecretCredential``, default endpoint, default
    polling interval) inside ``mock_arc()``, answered in-process;
  - the same with the data on disk (the system's temporary directory) instead of tmpfs;
  - ``before``: the harness as it was (data on disk, ``Retry-After: 1``, no settling): whether an
    operation costs a second depends on whether it finished before the SDK's first poll;
* ``mock_arc()`` enter + exit with its own server, and ``ArcextServer`` start + stop;
* ten user tests through the fixtures as a whole pytest run of their own (tests/harness_user_suite.py),
  the fastest of ``--user-suite`` runs (target under 3 s: other load only adds time);
* ``reset()`` of a server holding N machines with one extension each (loaded at start, as a
  session's server that accumulated them), and ``reset()`` after a typical test (10 machines).

    .venv/bin/python scripts/bench_harness.py                    # N = 1,000, 3,000, 5,000
    .venv/bin/python scripts/bench_harness.py --fleet 200 --requests 20 --operations 10 --before 1
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

TARGET_RESET_MS = 250.0  # reset() of a few thousand machines stays cheap
TARGET_USER_SUITE_S = 3.0  # ten user tests, as a whole pytest run, the fastest of the runs
RG = "bench-rg"
EXTENSION = {
    "location": "eastus",
    "properties": {
        "publisher": "Microsoft.Azure.Monitor",
        "type": "AzureMonitorWindowsAgent",
        "typeHandlerVersion": "1.2.0",
    },
}


def _bench_store() -> ModuleType:
    path = Path(__file__).with_name("bench_store.py")
    spec = importlib.util.spec_from_file_location("arcext_bench_store", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def timed(n: int, action: Callable[[int], Any]) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        action(i)
        samples.append(time.perf_counter() - started)
    return samples


def line(label: str, samples: list[float], target_ms: float | None = None) -> None:
    median = statistics.median(samples) * 1000
    worst = max(samples) * 1000
    text = f"  {label:<62} median {median:9.2f} ms   max {worst:9.2f} ms   (n={len(samples)})"
    if target_ms is not None:
        text += f"   target <= {target_ms:g} ms {'PASS' if median <= target_ms else 'FAIL'}"
    print(text, flush=True)


def operation_costs(client: Any, requests: int, operations: int) -> tuple[list[float], list[float]]:
    client.machines.create_or_update(RG, "m1", {"location": "eastus"})
    client.machine_extensions.begin_create_or_update(RG, "m1", "ama", EXTENSION).result()
    gets = timed(requests, lambda _i: client.machines.get(RG, "m1"))

    def flip(i: int) -> None:
        body = {"properties": {"enableAutomaticUpgrade": i % 2 == 1}}
        client.machine_extensions.begin_update(RG, "m1", "ama", body).result()

    return gets, timed(operations, flip)


def bench_operations(requests: int, operations: int, before: int) -> None:
    from azure.identity import ClientSecretCredential
    from azure.mgmt.hybridcompute import HybridComputeManagementClient

    from arcext.testing import ArcextServer, mock_arc

    print("per request and per long-running operation (unmodified SDK, sync client):")
    with ArcextServer() as server, server.sdk_client() as client:
        gets, ops = operation_costs(client, requests, operations)
        line("fixture (loopback HTTP): one request", gets)
        line("fixture (loopback HTTP): one LRO (PATCH, poll, GET)", ops)
    with mock_arc() as arc:
        credential = ClientSecretCredential("contoso.onmicrosoft.com", "app-id", "secret")
        with HybridComputeManagementClient(credential, arc.subscription_id) as client:
            gets, ops = operation_costs(client, requests, operations)
        credential.close()
        line("mock_arc (in-process, default polling_interval): one request", gets)
        line("mock_arc (in-process, default polling_interval): one LRO", ops)
    on_disk = Path(tempfile.mkdtemp(prefix="arcext-bench-harness-"))  # the system's temporary directory
    try:
        with ArcextServer(on_disk / "now") as server, server.sdk_client() as client:
            gets, ops = operation_costs(client, requests, operations)
            line("fixture, data on disk instead of tmpfs: one LRO", ops)
        if before:  # the harness as it was: data on disk, Retry-After: 1, no settling
            old = ArcextServer(on_disk / "before", config={"ARCEXT_RETRY_AFTER": 1}, settle_operations=0)
            with old as server, server.sdk_client() as client:
                gets, ops = operation_costs(client, min(requests, 20), before)
            line("before (data on disk, Retry-After: 1, not settled): one LRO", ops)
    finally:
        shutil.rmtree(on_disk, ignore_errors=True)

    print("starting and stopping:")
    line("ArcextServer() start + stop", timed(5, lambda _i: ArcextServer().start().stop()))
    line("mock_arc() enter + exit (own server)", timed(5, lambda _i: mock_arc().start().stop()))


def bench_reset(fleets: list[int]) -> None:
    from arcext.testing import ArcextServer
    from arcext.testing.server import scratch_dir

    build_store = _bench_store().build_store
    print("reset() (what the arcext_server fixture does before every test):")
    with ArcextServer() as server, server.sdk_client() as client:

        def typical(_i: int) -> None:
            for m in range(10):
                client.machines.create_or_update(RG, f"m{m}", {"location": "eastus"})
            started = time.perf_counter()
            server.reset()
            samples.append(time.perf_counter() - started)

        samples: list[float] = []
        for i in range(10):
            typical(i)
        line("after a test that made 10 machines", samples)
    for size in fleets:
        data_dir = Path(tempfile.mkdtemp(prefix="arcext-bench-harness-", dir=scratch_dir()))
        try:
            build_store(data_dir, size, size)
            with ArcextServer(data_dir) as server:
                count = server.services.store.count_machines()
                started = time.perf_counter()
                server.reset()
                spent = time.perf_counter() - started
                assert server.services.store.count_machines() == 0
            line(f"holding {count:,} machines with one extension each", [spent], TARGET_RESET_MS)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


def bench_user_suite(runs: int) -> None:
    """Ten user tests through the fixtures as a whole pytest run of their own (tests/harness_user_suite.py):
    interpreter start, imports, server start and the ten tests; each run its own subprocess."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from harness_user_suite import SUITES, run_inner

    print("ten user tests as a whole pytest run (create a machine and an extension, turn automatic upgrade off):")
    for label, source in SUITES.items():
        walls: list[float] = []
        costs: dict[str, list[float]] = {}
        for _ in range(runs):
            work = Path(tempfile.mkdtemp(prefix="arcext-bench-suite-"))
            try:
                wall, costs = run_inner(work, source)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            walls.append(wall)
        spread = ", ".join(f"{w:.2f}" for w in walls)
        verdict = "PASS" if min(walls) < TARGET_USER_SUITE_S else "FAIL"
        print(f"  {label}: best {min(walls):.2f} s of {spread} s   target < {TARGET_USER_SUITE_S:g} s {verdict}")
        for name, values in costs.items():
            values.sort()
            print(f"    {name}: median {values[len(values) // 2] * 1000:.1f} ms, max {values[-1] * 1000:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleet", type=int, action="append", help="machines held at reset() (repeatable)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--operations", type=int, default=100)
    parser.add_argument("--before", type=int, default=3, help="LROs timed with the old settings (1 s each)")
    parser.add_argument(
        "--user-suite", type=int, default=3, metavar="RUNS", help="runs of the ten-test suite (0: none)"
    )
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    bench_operations(args.requests, args.operations, args.before)
    bench_reset(args.fleet or [1000, 3000, 5000])
    if args.user_suite:
        bench_user_suite(args.user_suite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
