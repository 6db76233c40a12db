"""``scripts/bench_hosts.py --driver ssh``: the ssh driver against a real OpenSSH server on loopback.

Starts Debian's sshd with its own config and host key (tests/sshd.py; needs root and
openssh-server, see scripts/install-sshd) and gives each of ``--hosts`` machines (osType linux) its
own handler root on that server, so every machine is a separate host tree reached over its own SSH
connection. Each machine gets one extension installed at 1.0.0 through the driver, a 1.1.0 package is
published, the manual clock moves 8 weeks and ``POST /arcext/v1/engine/run`` runs the rollout.

Printed (figures, not a test; always exits 0): wall time of the engine run, upgrades per second,
SSH channels (one per agent call) and connections per upgrade, the split per agent operation, and
PASS/FAIL of "every host upgraded" read from the files the agent wrote on each host root.
"""

from __future__ import annotations

import base64
import collections
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from arcext.hosts import ssh
from arcext.testing import ArcextServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import ok, wait_operations  # noqa: E402
from sshd import Sshd, commands, make_package, skip_reason, versions  # noqa: E402

API = "2026-07-15"
RG = "rg-bench"
PUB, TYPE = "Contoso.Bench", "LinuxAgent"
HANDLER = f"{PUB}.{TYPE}"
OLD, NEW = "1.0.0", "1.1.0"
WEEK = 7 * 86400
MACHINES = "Microsoft.HybridCompute/machines"
ORDER = [(OLD, "disable"), (NEW, "update"), (OLD, "uninstall"), (NEW, "install"), (NEW, "enable")]


def run_bench(hosts: int, concurrency: int, root: Path) -> dict[str, Any]:
    sshd = Sshd(root / "sshd").start()
    try:
        roots = [root / f"host{i}" for i in range(hosts)]
        names = [f"bench-l{i:03d}" for i in range(hosts)]
        with (
            ArcextServer(
                root / "arcext", manual_clock=True, simulate=False, config={"ARCEXT_UPGRADE_CONCURRENCY": concurrency}
            ) as arc,
            arc.session() as s,
        ):
            sub = arc.subscription_id
            catalog = f"{arc.url}/arcext/v1/catalog/{PUB}/{TYPE}"
            ok(s.put(catalog, json={"autoUpgradeSupported": True}), 200, 201)
            for version in (OLD, NEW):
                body = {"zipBase64": base64.b64encode(make_package(HANDLER, version)).decode()}
                ok(s.put(f"{catalog}/versions/{version}/package", json=body), 200, 201)
            t_setup = time.perf_counter()
            ops = []
            for name, host_root in zip(names, roots, strict=True):
                host_root.mkdir(parents=True)
                url = f"{arc.url}/subscriptions/{sub}/resourceGroups/{RG}/providers/{MACHINES}/{name}"
                ok(
                    s.put(
                        url, params={"api-version": API}, json={"location": "eastus", "properties": {"osType": "linux"}}
                    ),
                    200,
                )
                conn = sshd.connection(host_root, statusDeadlineSeconds=30)
                del conn["driver"]  # osType linux: ssh by default
                ok(
                    s.put(
                        f"{arc.url}/arcext/v1/subscriptions/{sub}/resourceGroups/{RG}/machines/{name}/hostConnection",
                        json=conn,
                    ),
                    200,
                    201,
                )
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
                ops.append(r.headers["Azure-AsyncOperation"])
            statuses = wait_operations(s, ops, timeout=120 + 5 * hosts)
            if any(st != "Succeeded" for st in statuses):
                raise RuntimeError(f"installing {OLD} failed: {collections.Counter(statuses)}")
            setup_s = time.perf_counter() - t_setup
            ok(s.put(f"{catalog}/versions/{NEW}", json={"critical": False}), 200, 201)
            ok(s.post(f"{arc.url}/arcext/v1/clock/advance", json={"seconds": 8 * WEEK}), 200)
            before = collections.Counter(ssh.STATS)
            t0 = time.perf_counter()
            summary = ok(s.post(f"{arc.url}/arcext/v1/engine/run", timeout=3600), 200)
            wall_s = time.perf_counter() - t0
            during = collections.Counter(ssh.STATS)
            during.subtract(before)
        upgraded = sum(1 for r in roots if versions(r, HANDLER) == {NEW: "Enabled"} and commands(r)[2:] == ORDER)
        return {
            "hosts": hosts,
            "concurrency": concurrency,
            "setup_s": setup_s,
            "wall_s": wall_s,
            "summary": summary,
            "stats": during,
            "upgraded": upgraded,
        }
    finally:
        sshd.stop()


def format_report(result: dict[str, Any]) -> str:
    n = result["hosts"]
    summary = result["summary"]
    upgrades = int(summary.get("succeeded", 0))
    stats: collections.Counter[str] = result["stats"]
    per = max(upgrades, 1)
    split = ", ".join(f"{k[3:]} {v / per:.1f}" for k, v in sorted(stats.items()) if k.startswith("op:") and v)
    every = result["upgraded"] == n
    keys = ("dispatched", "succeeded", "rolledBack", "notRun", "rollbackFailed")
    lines = [
        f"fleet: {n} Linux hosts (handler roots on one real sshd, 127.0.0.1), one upgrade each ({OLD} -> {NEW}), "
        f"concurrency {result['concurrency']}",
        f"setup (machines, host connections, {OLD} installed through the driver): {result['setup_s']:.1f} s",
        f"engine run: { {k: summary.get(k) for k in keys} }",
        "results",
        f"  total wall time (engine/run)              {result['wall_s']:.2f} s",
        f"  upgrades per second                       {upgrades / result['wall_s'] if result['wall_s'] else 0:.2f} /s",
        f"  SSH channels per upgrade                  {stats['channels'] / per:.1f}",
        f"    per agent operation: {split}",
        f"  SSH connections per upgrade               {stats['connections'] / per:.1f}",
        f"  every host upgraded                       {result['upgraded']} of {n}    {'PASS' if every else 'FAIL'}",
        f"overall: {'PASS' if every else 'FAIL'}",
    ]
    return "\n".join(lines) + "\n"


def main(hosts: int, concurrency: int, root: Path | None) -> int:
    reason = skip_reason()
    if reason:
        print(f"benchmark skipped: {reason}")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="arcext-bench-ssh-"))
    try:
        result = run_bench(hosts, concurrency, root or tmp)
    except Exception as exc:  # figures, not a test: report and exit 0
        print(f"benchmark failed: {type(exc).__name__}: {exc}")
        print("overall: FAIL")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.stdout.write(format_report(result))
    return 0
