#!/usr/bin/env python
"""Time a server's start-up at fleet size: ``Services.open`` and ``Services.start`` (until the engine leads).

Builds a fleet once (``bench_store.build_store``: ``--machines`` machines, ``--extensions`` extensions, one
rollout of the Azure Monitor agent planned over all of them), then opens and starts the services on it in a
fresh process ``--runs`` times and reports how long each step took, how often the machines were scanned
(``Store.project_machines``) and how often the rollouts were read (``Store.list_rollouts``, and on
PostgreSQL the cluster's ``RolloutMirror.read`` with what it fetched). With ``--compare DIR`` (another
checkout's ``backend`` directory) the same is measured with that code too, the runs alternating, on the same
fleet: before/after figures from one build.

With ``--database URL`` the fleet is in a scratch database on that server (the URL's role needs CREATEDB),
dropped at the end; the services then run as a cluster node (``ClusterEngine``), and "leading" is when the
node has taken the leadership and recovered.

Figures, not a test; always exits 0.

    .venv/bin/python scripts/bench_startup.py --machines 25000 --extensions 75000
    .venv/bin/python scripts/bench_startup.py --database "$URL" --compare /tmp/before/backend
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_store import build_store

#: what one measured start-up runs (in a fresh process: imports and caches as a real start has them)
_MEASURE = r"""
import json, logging, pathlib, sys, time
logging.disable(logging.CRITICAL)
from arcext.services import Services
from arcext.store.tinydb_store import TinyDBStore
counts = {"scans": 0, "scan_s": 0.0, "rollout_reads": 0, "mirror_reads": 0}

def counting(cls, name, key, timed=None):
    original = getattr(cls, name)
    def wrapper(self, *args, **kwargs):
        counts[key] += 1
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            if timed:
                counts[timed] += time.perf_counter() - started
    setattr(cls, name, wrapper)

classes = [TinyDBStore]
try:
    from arcext.store.postgres.store import PostgresStore
    classes.append(PostgresStore)
except ImportError:
    pass
for cls in classes:
    counting(cls, "project_machines", "scans", "scan_s")
    counting(cls, "list_rollouts", "rollout_reads")
try:
    from arcext.cluster.rollout_mirror import RolloutMirror
    counting(RolloutMirror, "read", "mirror_reads")
except ImportError:
    pass
data_dir, url = pathlib.Path(sys.argv[1]), sys.argv[2] or None
t0 = time.perf_counter()
svc = Services.open(data_dir, database_url=url)
t1 = time.perf_counter()
svc.start()
t2 = time.perf_counter()
node = getattr(svc.engine, "node", None)
while node is not None and not node.leading:
    time.sleep(0.002)
t3 = time.perf_counter()
rollouts = len(svc.engine.rollout_records()) if hasattr(svc.engine, "rollout_records") else -1
svc.close()
print(json.dumps({"open": t1 - t0, "start": t2 - t1, "leading": t3 - t1, "rollouts": rollouts, **counts}))
"""


def plan_rollout(data_dir: Path, database_url: str | None) -> int:
    """Publish a new Azure Monitor agent version: one rollout planned over the fleet (then stop)."""
    from arcext.services import Services

    svc = Services.open(data_dir, database_url=database_url)
    svc.start()
    node = getattr(svc.engine, "node", None)
    while node is not None and not node.leading:
        time.sleep(0.01)
    record, _ = svc.catalog.publish_version(
        "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent", "1.23.0", False, svc.clock.now()
    )
    rollout = svc.engine.on_version_published(record)
    svc.close()
    return int(rollout["eligible"]) if rollout else 0


def measure(data_dir: Path, database_url: str | None, backend: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if backend is not None:
        env["PYTHONPATH"] = str(backend)
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(data_dir), database_url or ""],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=25_000)
    parser.add_argument("--extensions", type=int, default=75_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", metavar="URL", help="on PostgreSQL: a scratch database on this server")
    parser.add_argument("--compare", type=Path, metavar="DIR", help="another checkout's backend directory")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="arcext-bench-startup-"))
    database_url: str | None = None
    if args.database:
        from arcext.store.postgres import provision

        database_url = provision.create("arcext_bench", admin=args.database)
    try:
        t0 = time.perf_counter()
        build_store(data_dir, args.machines, args.extensions, database_url=database_url)
        eligible = plan_rollout(data_dir, database_url)
        where = "PostgreSQL" if database_url else "embedded store"
        print(
            f"start-up on the {where}: {args.machines:,} machines, {args.extensions:,} extensions, one rollout of "
            f"{eligible:,} targets (built in {time.perf_counter() - t0:.0f} s)"
        )
        variants: list[tuple[str, Path | None]] = [("this checkout", None)]
        if args.compare is not None:
            variants.insert(0, (f"{args.compare}", args.compare))
        results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
        for _ in range(args.runs):
            for name, backend in variants:
                results[name].append(measure(data_dir, database_url, backend))
        for name, runs in results.items():
            print(f"  {name}:")
            for key in ("open", "start", "leading", "scan_s"):
                values = [r[key] for r in runs]
                print(
                    f"    {key:<8} median {statistics.median(values):6.2f} s  runs "
                    + ", ".join(f"{v:.2f}" for v in values)
                )
            last = runs[-1]
            print(
                f"    machine scans {last['scans']}, list_rollouts {last['rollout_reads']}, "
                f"rollout mirror reads {last['mirror_reads']}"
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        if database_url:
            from arcext.store.postgres import provision

            provision.drop(database_url, admin=args.database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
