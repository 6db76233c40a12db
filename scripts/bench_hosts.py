#!/usr/bin/env python
"""Benchmark a host driver: ``--driver psrp|winrm`` against fake Windows hosts, ``--driver ssh`` against a
real loopback sshd (issues 4, 15).

``--hosts`` fake Windows hosts (default 50; ``arcext.testing.fakehost.FakeHost``, in this process,
loopback only, Basic over TLS or ``--auth ntlm`` for NTLM with message encryption over http), one
machine per host registered with its ``hostConnection`` through the API of a live arcext server
(``ArcextServer(manual_clock=True, simulate=False)``, ``ARCEXT_UPGRADE_CONCURRENCY=--concurrency``,
default 16). Each machine gets one extension installed at 1.0.0 through the driver (package pushed to
the host), a 1.1.0 package is attached and published, the manual clock is moved 8 weeks so every wave
is due, and ``POST /arcext/v1/engine/run`` runs the rollout: one upgrade job per host.

Printed (figures, not a test; always exits 0):

* total wall time of the engine run and upgrades per second;
* WS-Management round trips per upgrade: HTTP requests the fake hosts answered during the run
  (their own counters), divided by the upgrades, with the split per WSMan action;
* runspace pools opened per host per job (fake host counters: shells created during the run);
* PASS/FAIL of "every host upgraded" (the host's own model shows 1.1.0 Enabled, nothing else on
  disk, and the API reports typeHandlerVersion 1.1.0) and of "one runspace pool per host per job".

    .venv/bin/python scripts/bench_hosts.py                          # 50 hosts, concurrency 16
    .venv/bin/python scripts/bench_hosts.py --hosts 5 --concurrency 2 --auth ntlm
    .venv/bin/python scripts/bench_hosts.py --driver winrm            # WinRS through pywinrm
"""

from __future__ import annotations

import argparse
import base64
import collections
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcext.testing import ArcextServer
from arcext.testing.fakehost import FakeHost, make_package

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import ok, wait_operations  # noqa: E402

API = "2026-07-15"
RG = "rg-bench"
PUB, TYPE = "Contoso.Bench", "Agent"
HANDLER = f"{PUB}.{TYPE}"
OLD, NEW = "1.0.0", "1.1.0"
WEEK = 7 * 86400
#: the drivers this benchmark can run (each a Windows driver the fake hosts serve)
DRIVERS = ("psrp", "winrm")


@dataclass
class HostFigures:
    """One fake host's own counters for the engine run."""

    machine: str
    pools_opened: int
    round_trips: int
    actions: collections.Counter[str]
    versions: dict[str, str]
    api_version: str | None
    jobs: int = 1


@dataclass
class BenchResult:
    hosts: int
    concurrency: int
    auth: str
    setup_s: float
    wall_s: float
    summary: dict[str, Any]
    per_host: list[HostFigures] = field(default_factory=list)
    fakes: list[FakeHost] = field(default_factory=list)
    driver: str = "psrp"

    @property
    def upgraded(self) -> int:
        return sum(1 for h in self.per_host if h.versions == {NEW: "Enabled"} and h.api_version == NEW)

    @property
    def round_trips(self) -> int:
        return sum(h.round_trips for h in self.per_host)

    @property
    def actions(self) -> collections.Counter[str]:
        total: collections.Counter[str] = collections.Counter()
        for h in self.per_host:
            total.update(h.actions)
        return total


def _machine_url(arc: ArcextServer, sub: str, machine: str) -> str:
    return f"{arc.url}/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.HybridCompute/machines/{machine}"


def run_bench(
    hosts: int, concurrency: int, auth: str = "basic", root: Path | None = None, driver: str = "psrp"
) -> BenchResult:
    """Run the benchmark; the returned fake hosts are stopped but keep their counters and models."""
    if auth not in ("basic", "ntlm"):
        raise ValueError("auth must be basic or ntlm")
    if driver not in DRIVERS:
        raise ValueError(f"driver must be one of {', '.join(DRIVERS)}")
    root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="arcext-bench-hosts-"))
    fakes = [
        FakeHost(
            root / f"host{i}", name=f"BENCH{i}", auth=auth, tls=auth == "basic", username=f"bench{i}", driver=driver
        )
        for i in range(hosts)
    ]
    names = [f"bench-m{i:03d}" for i in range(hosts)]
    for fake in fakes:
        fake.start()
    try:
        with (
            ArcextServer(
                root / "arcext", manual_clock=True, simulate=False, config={"ARCEXT_UPGRADE_CONCURRENCY": concurrency}
            ) as arc,
            arc.session() as s,
        ):
            sub = arc.subscription_id
            t_setup = time.perf_counter()
            catalog = f"{arc.url}/arcext/v1/catalog/{PUB}/{TYPE}"
            ok(s.put(catalog, json={"autoUpgradeSupported": True}), 200, 201)
            for version in (OLD, NEW):
                package = make_package(HANDLER, version)
                body = {"zipBase64": base64.b64encode(package).decode()}
                ok(s.put(f"{catalog}/versions/{version}/package", json=body), 200, 201)
            operations = []
            for name, fake in zip(names, fakes, strict=True):
                url = _machine_url(arc, sub, name)
                ok(s.put(url, params={"api-version": API}, json={"location": "eastus"}), 200, 201)
                conn = f"{arc.url}/arcext/v1/subscriptions/{sub}/resourceGroups/{RG}/machines/{name}/hostConnection"
                ok(s.put(conn, json=fake.connection()), 200, 201)
                ext = {
                    "location": "eastus",
                    "properties": {
                        "publisher": PUB,
                        "type": TYPE,
                        "typeHandlerVersion": OLD,
                        "settings": {"workspaceId": f"ws-{name}"},
                        "protectedSettings": {"workspaceKey": "bench-secret"},
                    },
                }
                r = s.put(f"{url}/extensions/agent", params={"api-version": API}, json=ext)
                ok(r, 202)
                operations.append(r.headers["Azure-AsyncOperation"])
            statuses = wait_operations(s, operations, timeout=60 + 2 * hosts)
            if any(st != "Succeeded" for st in statuses):
                raise RuntimeError(f"installing {OLD} failed: {collections.Counter(statuses)}")
            for fake in fakes:
                if fake.machine.versions(HANDLER) != {OLD: "Enabled"}:
                    raise RuntimeError(f"{fake.name}: {OLD} not enabled: {fake.machine.versions(HANDLER)}")
            setup_s = time.perf_counter() - t_setup

            ok(s.put(f"{catalog}/versions/{NEW}", json={"critical": False}), 200, 201)
            ok(s.post(f"{arc.url}/arcext/v1/clock/advance", json={"seconds": 8 * WEEK}), 200)
            pools_before = [f.server.pools_opened for f in fakes]
            actions_before = [len(f.server.actions) for f in fakes]
            t0 = time.perf_counter()
            summary = ok(s.post(f"{arc.url}/arcext/v1/engine/run", timeout=3600), 200)
            wall_s = time.perf_counter() - t0

            per_host = []
            for name, fake, pools0, actions0 in zip(names, fakes, pools_before, actions_before, strict=True):
                actions = fake.server.actions[actions0:]
                props = ok(s.get(f"{_machine_url(arc, sub, name)}/extensions/agent", params={"api-version": API}), 200)
                per_host.append(
                    HostFigures(
                        machine=name,
                        pools_opened=fake.server.pools_opened - pools0,
                        round_trips=len(actions),
                        actions=collections.Counter(actions),
                        versions=fake.machine.versions(HANDLER),
                        api_version=props["properties"].get("typeHandlerVersion"),
                    )
                )
    finally:
        for fake in fakes:
            fake.stop()
    return BenchResult(hosts, concurrency, auth, setup_s, wall_s, dict(summary), per_host, fakes, driver)


def format_report(result: BenchResult) -> str:
    n = result.hosts
    upgrades = int(result.summary.get("succeeded", 0))
    pools = [h.pools_opened / h.jobs for h in result.per_host]
    one_pool = all(p == 1 for p in pools)
    every = result.upgraded == n
    per_upgrade = result.round_trips / upgrades if upgrades else float("nan")
    transport = "Basic over TLS" if result.auth == "basic" else "NTLM + message encryption over http"
    split = ", ".join(f"{a} {c / max(upgrades, 1):.1f}" for a, c in sorted(result.actions.items()))
    summary = {k: result.summary.get(k) for k in ("dispatched", "succeeded", "rolledBack", "notRun", "rollbackFailed")}
    lines = [
        f"fleet: {n} fake hosts ({transport}), driver {result.driver},"
        f" one upgrade each ({OLD} -> {NEW}), concurrency {result.concurrency}",
        f"setup (machines, host connections, {OLD} installed through the driver): {result.setup_s:.1f} s",
        f"engine run: {summary}",
        "results",
        f"  total wall time (engine/run)              {result.wall_s:.2f} s",
        f"  upgrades per second                       {upgrades / result.wall_s if result.wall_s else 0:.2f} /s",
        f"  WS-Management round trips per upgrade     {per_upgrade:.1f}",
        f"    per action: {split}",
        f"  runspace pools opened per host per job    min {min(pools, default=0):g} max {max(pools, default=0):g}"
        f"    {'PASS' if one_pool else 'FAIL'}",
        f"  every host upgraded                       {result.upgraded} of {n}    {'PASS' if every else 'FAIL'}",
    ]
    lines.append(f"overall: {'PASS' if one_pool and every else 'FAIL'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--auth", choices=["basic", "ntlm"], default="basic")
    parser.add_argument(
        "--driver",
        choices=[*DRIVERS, "ssh"],
        default="psrp",
        help="the host driver to measure (ssh: handler roots on a real loopback sshd, see bench_hosts_ssh.py)",
    )
    parser.add_argument("--root", type=Path, default=None, help="working directory (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.driver == "ssh":  # Linux hosts: handler roots on a real loopback sshd
        from bench_hosts_ssh import main as ssh_main

        return ssh_main(args.hosts, args.concurrency, args.root)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="arcext-bench-hosts-") as tmp:
        try:
            result = run_bench(args.hosts, args.concurrency, args.auth, args.root or Path(tmp), args.driver)
        except Exception as exc:  # figures, not a test: report and exit 0
            print(f"benchmark failed: {type(exc).__name__}: {exc}")
            print("overall: FAIL")
            return 0
    sys.stdout.write(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
