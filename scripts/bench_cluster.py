#!/usr/bin/env python
"""The rollout benchmark on PostgreSQL with several nodes (``bench_rollout.py --database URL --nodes N``).

The fleet of bench_rollout.py (``--machines`` × ``--extensions-per-machine``, ``--latency-ms`` per simulated host
operation) is written to a scratch database made on the server ``--database`` names (its role needs CREATEDB;
dropped at the end). Then ``--nodes`` processes open the services on it, each a cluster node with ``--concurrency``
workers (node 0 starts first and leads). Node 0 publishes the new versions (planning, excluded from the wall time)
and runs ``run_until_idle``; every node claims and runs jobs. Figures:

* wall time from the first dispatch to the end of ``run_until_idle``, against the ideal bound: host operations ×
  latency / (concurrency × nodes) (target ≤ 1.25×);
* per node: jobs it ran, and engine CPU per job: the node process's CPU over the run minus the CPU spent inside
  the simulated driver's calls, divided by the jobs it ran (node 0's CPU includes the scheduling of every job).
  The simulated hosts live in the database here (arcext.cluster.simhosts), so the driver's CPU includes its
  transactions.

Every node is a process of this script (``node`` subcommand), driven through its stdin/stdout by one line each.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_rollout as B  # noqa: E402
from arcext.serving import tune_gc_for_serving  # noqa: E402
from arcext.store.postgres import provision  # noqa: E402


def node_main(argv: list[str]) -> int:
    """One node: answers ``publish``, ``mark``, ``run``, ``report`` and ``stop`` on stdin, one JSON line each."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, required=True)
    parser.add_argument("--machines", type=int, required=True)
    parser.add_argument("--extensions-per-machine", type=int, required=True)
    parser.add_argument("--subscriptions", type=int, required=True)
    parser.add_argument("--regions", type=int, required=True)
    parser.add_argument("--lead", action="store_true", help="wait until this node leads before answering ready")
    args = parser.parse_args(argv)
    tune_gc_for_serving()
    args.database_url = args.database
    services = B.open_services(args.data_dir, args)
    layout = B.Layout(args.machines, args.extensions_per_machine, args.subscriptions, args.regions)
    meter = B.meter_hosts(services)
    engine: Any = services.engine
    engine.start(background=False)
    while args.lead and not engine.node.leading:
        time.sleep(0.05)
    print(json.dumps({"ready": True, "node": engine.node.node_id}), flush=True)
    base: dict[str, float] = {}
    for line in sys.stdin:
        command = line.strip()
        answer: dict[str, Any] = {}
        if command == "publish":
            started = time.perf_counter()
            rollouts = B.publish(services, layout)
            answer = {
                "planned": time.perf_counter() - started,
                "rollouts": len(rollouts),
                "waves": sum(len(r["waves"]) for r in rollouts),
            }
        elif command == "mark":
            gc.collect()
            base = {
                "cpu": time.process_time(),
                "host": meter.cpu,
                "ops": meter.operations,
                "jobs": engine.node.jobs_run,
            }
            answer = {"marked": True}
        elif command == "run":
            answer = engine.run_until_idle()
        elif command == "report":
            answer = {
                "cpu": time.process_time() - base["cpu"],
                "host": meter.cpu - base["host"],
                "ops": meter.operations - base["ops"],
                "jobs": engine.node.jobs_run - base["jobs"],
            }
        elif command == "stop":
            services.close()
            print(json.dumps({"stopped": True}), flush=True)
            return 0
        print(json.dumps(answer), flush=True)
    services.close()
    return 0


class NodeProcess:
    def __init__(self, index: int, database: str, root: Path, args: argparse.Namespace, lead: bool) -> None:
        command = [sys.executable, __file__, "node", "--database", database, "--data-dir", str(root / f"node{index}")]
        for option in ("concurrency", "latency_ms", "machines", "extensions_per_machine", "subscriptions", "regions"):
            command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
        if lead:
            command.append("--lead")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a node process ended (exit {self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ask(self, command: str) -> dict[str, Any]:
        self.send(command)
        return self.read()


def bench(args: argparse.Namespace) -> list[B.Figure]:
    scratch = provision.create("arcext_bench", admin=args.database)
    root = Path(tempfile.mkdtemp(prefix="arcext-bench-cluster-"))
    nodes: list[NodeProcess] = []
    try:
        layout = B.Layout(args.machines, args.extensions_per_machine, args.subscriptions, args.regions)
        print(
            f"cluster rollout: {args.nodes} nodes x {args.concurrency} workers on PostgreSQL; "
            f"{layout.machines} machines x {layout.per_machine} extensions; host latency {args.latency_ms:g} ms",
            flush=True,
        )
        args.database_url = scratch
        services = B.open_services(root / "node0", args)
        try:
            built = B.build_fleet(services, layout, args.build_threads)
        finally:
            services.close()
        for index in range(1, args.nodes):  # every node's data directory holds the same key file
            (root / f"node{index}").mkdir(parents=True)
            shutil.copy2(root / "node0" / "secret.key", root / f"node{index}" / "secret.key")
        print(f"  built in {built:.1f} s", flush=True)
        nodes.append(NodeProcess(0, scratch, root, args, lead=True))
        nodes += [NodeProcess(i, scratch, root, args, lead=False) for i in range(1, args.nodes)]
        planned = nodes[0].ask("publish")
        print(f"  planned {planned['rollouts']} rollouts ({planned['waves']} waves) in {planned['planned']:.2f} s")
        for node in nodes:
            node.ask("mark")
        started = time.perf_counter()
        summary = nodes[0].ask("run")
        wall = time.perf_counter() - started
        reports = [node.ask("report") for node in nodes]
    finally:
        for node in nodes:
            try:
                node.ask("stop")
            except (RuntimeError, OSError, ValueError):
                node.proc.kill()
            node.proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
        provision.drop(scratch, admin=args.database)
    jobs = sum(int(r["jobs"]) for r in reports)
    operations = sum(int(r["ops"]) for r in reports)
    ideal = operations * args.latency_ms / 1000 / (args.concurrency * args.nodes)
    print(
        f"  ran {jobs} jobs ({summary['succeeded']} succeeded, {summary['rolledBack']} rolled back, "
        f"{summary['notRun']} not run), {operations} host operations; rollouts "
        f"{sorted({r['state'] for r in summary['rollouts']})}"
    )
    figures = [
        B.Figure("rollout wall time", wall, "s"),
        B.Figure("ideal bound: host ops x latency / (concurrency x nodes)", ideal, "s"),
        B.Figure("wall / ideal", wall / ideal if ideal else float("nan"), "x", 1.25),
    ]
    for index, report in enumerate(reports):
        per_job = max(int(report["jobs"]), 1)
        figures += [
            B.Figure(f"node {index}{' (leader)' if index == 0 else ''}: jobs run (information)", report["jobs"], ""),
            B.Figure(
                f"node {index}: engine CPU per job ((CPU - host CPU) / jobs)",
                (report["cpu"] - report["host"]) / per_job * 1000,
                "ms",
                0.5,
            ),
            B.Figure(f"node {index}: process CPU per job (information)", report["cpu"] / per_job * 1000, "ms"),
        ]
    return figures


def main(args: argparse.Namespace) -> int:
    figures = bench(args)
    print("results")
    for figure in figures:
        print(figure.line())
    print(f"overall: {'PASS' if all(f.passed for f in figures) else 'FAIL'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "node":
        sys.exit(node_main(sys.argv[2:]))
    sys.exit(B.main())
