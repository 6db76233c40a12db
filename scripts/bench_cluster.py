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
  transactions;
* per node (information): its CPU per job by kind of thread (the job workers, the claim loop, the listener, the
  leader's results loop and scheduler, ...; each thread's own CPU clock) and the part spent in the kernel, to tell
  where a node's CPU goes without a profiler's overhead;
* per node (information): how much of its worker slots' time jobs' runs took (from a job's start to its run's end;
  its end's commit overlaps the next job's claim), the part of a run spent in host operations (their latency
  included) and around them (the job's writes and logic), and how long a slot stood idle per job (waiting for a
  claim, a wave, the end of the rollout).

Every node is a process of this script (``node`` subcommand), driven through its stdin/stdout by one line each.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402

import bench_rollout as B  # noqa: E402
from arcext.serving import tune_gc_for_serving  # noqa: E402
from arcext.store.postgres import provision  # noqa: E402


def postgres_cpu(database: str | None = None) -> float | None:
    """CPU seconds of the PostgreSQL server processes on this host (from /proc; None where unreadable): with
    ``database``, only the backends connected to it (their title names it), else every one (other users' too).

    Processes that ended meanwhile (a backend whose connection closed) drop out, so over a run this counts
    the backends that lived through it, which the nodes' pooled connections do."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes().decode(errors="replace") if database else ""
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if not name.startswith("postgres") or (database and f" {database} " not in title):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


class StatementCounter:
    """Counts the SQL statements this process sends (psycopg cursors' execute and executemany rows), by
    their first words, so a run can report statements per job."""

    def __init__(self) -> None:
        import collections
        import threading

        import psycopg

        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        counter = self
        execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany

        def counted_execute(cur: Any, query: Any, params: Any = None, **kw: Any) -> Any:
            counter.add(query, 1)
            return execute(cur, query, params, **kw)

        def counted_executemany(cur: Any, query: Any, params_seq: Any, **kw: Any) -> Any:
            rows = list(params_seq)
            counter.add(query, len(rows))
            return executemany(cur, query, rows, **kw)

        psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign,assignment,unused-ignore]
        psycopg.Cursor.executemany = counted_executemany  # type: ignore[method-assign,assignment,unused-ignore]

    def add(self, query: Any, n: int) -> None:
        text = query if isinstance(query, str) else str(query)
        words = " ".join(text.split()[:4])[:60]
        import traceback

        traced = os.environ.get("ARCEXT_BENCH_TRACE")
        if traced and words.startswith(traced):  # diagnosis: which arcext functions send this statement
            frames = [f for f in traceback.extract_stack()[:-2] if "/arcext/" in f.filename]
            words += " <- " + " < ".join(f"{Path(f.filename).stem}.{f.name}" for f in reversed(frames[-5:]))
        with self._lock:
            self.counts[words] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each live thread of this process so far, by thread id (with its name)."""
    seconds: dict[int, tuple[str, float]] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, ProcessLookupError):
            continue  # ended meanwhile
        seconds[thread.ident] = (re.sub(r"[_-]\d+$", "", thread.name), cpu)
    return seconds


def thread_cpu_since(base: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per kind of thread (its name without a worker's number) since ``base`` (``thread_cpu``)."""
    spent: dict[str, float] = {}
    for ident, (name, cpu) in thread_cpu().items():
        spent[name] = spent.get(name, 0.0) + cpu - base.get(ident, (name, 0.0))[1]
    return spent


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
    parser.add_argument("--count-statements", action="store_true")
    args = parser.parse_args(argv)
    counter = StatementCounter() if args.count_statements else None
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
    threads0: dict[int, tuple[str, float]] = {}
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
            if hasattr(services.store, "db"):
                services.store.db.pool.pop_stats()
            base = {
                "cpu": time.process_time(),
                "system": os.times().system,
                "host": meter.cpu,
                "ops": meter.operations,
                "jobs": engine.node.jobs_run,
                "busy": engine.node.busy_seconds,
                "hostWall": meter.wall,
            }
            statements0 = counter.snapshot() if counter else {}
            threads0 = thread_cpu()
            profile_to = os.environ.get("ARCEXT_BENCH_PROFILE")  # diagnosis: a CPU profile of every thread
            if profile_to:
                import yappi  # type: ignore[import-untyped,import-not-found,unused-ignore]  # pip install yappi

                yappi.set_clock_type("cpu")
                yappi.start()
            answer = {"marked": True}
        elif command == "run":
            answer = engine.run_until_idle()
        elif command == "report":
            answer = {
                "cpu": time.process_time() - base["cpu"],
                "host": meter.cpu - base["host"],
                "ops": meter.operations - base["ops"],
                "jobs": engine.node.jobs_run - base["jobs"],
                "busy": engine.node.busy_seconds - base["busy"],
                "hostWall": meter.wall - base["hostWall"],
                "threads": thread_cpu_since(threads0),
                "system": os.times().system - base["system"],
            }
            if profile_to:
                yappi.stop()
                yappi.get_func_stats().save(f"{profile_to}.{engine.node.node_id.split(':')[-1]}.pstat", type="pstat")
            pool = services.store.db.pool.get_stats() if hasattr(services.store, "db") else {}
            answer["poolWaits"] = {k: pool.get(k, 0) for k in ("requests_num", "requests_queued", "requests_wait_ms")}
            answer["poolSize"] = pool.get("pool_size", 0)
            if counter:
                now = counter.snapshot()
                answer["statements"] = {
                    k: v - statements0.get(k, 0) for k, v in now.items() if v != statements0.get(k, 0)
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
        if args.count_statements:
            command.append("--count-statements")
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
        bench_db = psycopg.conninfo.conninfo_to_dict(scratch).get("dbname")
        pg0, own0 = postgres_cpu(), postgres_cpu(str(bench_db))
        started = time.perf_counter()
        summary = nodes[0].ask("run")
        wall = time.perf_counter() - started
        pg1, own1 = postgres_cpu(), postgres_cpu(str(bench_db))
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
    if args.count_statements:
        total = sum(sum(r["statements"].values()) for r in reports)
        print(f"  SQL statements: {total} ({total / max(jobs, 1):.1f} per job, every node)")
        merged: dict[str, int] = {}
        for r in reports:
            for k, v in r["statements"].items():
                merged[k] = merged.get(k, 0) + v
        for k, v in sorted(merged.items(), key=lambda kv: -kv[1])[:25]:
            print(f"    {v / max(jobs, 1):7.2f}/job  {k}")
    for index, report in enumerate(reports):
        waits = report["poolWaits"]
        print(
            f"  node {index} pool: {report['poolSize']} connections, {waits['requests_num']} requests,"
            f" {waits['requests_queued']} waited ({waits['requests_wait_ms']} ms in all)"
        )
    for index, report in enumerate(reports):
        per_job = max(int(report["jobs"]), 1)
        capacity = wall * args.concurrency
        print(
            f"  node {index} worker slots: {report['busy'] / capacity:.1%} taken by jobs' runs; per job"
            f" {report['busy'] / per_job * 1000:.1f} ms of run, {report['hostWall'] / per_job * 1000:.1f} ms of it in"
            f" host operations, {(report['busy'] - report['hostWall']) / per_job * 1000:.1f} ms around them;"
            f" a slot idle {(capacity - report['busy']) / per_job * 1000:.1f} ms per job"
        )
    for index, report in enumerate(reports):
        per_job = max(int(report["jobs"]), 1)
        spent = sorted(report["threads"].items(), key=lambda kv: -kv[1])
        print(
            f"  node {index} CPU per job by thread (ms; {report['system'] / per_job * 1000:.3f} of it in the kernel): "
            + ", ".join(f"{name} {seconds / per_job * 1000:.3f}" for name, seconds in spent if seconds >= 0.005)
        )
    if pg0 is not None and pg1 is not None:
        pg_per_job = (pg1 - pg0) / max(jobs, 1) * 1000
        figures.append(B.Figure("PostgreSQL CPU per job (information, every process)", pg_per_job, "ms"))
    if own0 is not None and own1 is not None:
        own_per_job = (own1 - own0) / max(jobs, 1) * 1000
        figures.append(B.Figure("PostgreSQL CPU per job (information, the bench's backends)", own_per_job, "ms"))
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
    tune_gc_for_serving()
    logging.basicConfig(level=logging.WARNING)
    figures = bench(args)
    print("results")
    for figure in figures:
        print(figure.line())
    print(f"overall: {'PASS' if all(f.passed for f in figures) else 'FAIL'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "node":
        sys.exit(node_main(sys.argv[2:]))
    sys.exit(main(B.build_parser().parse_args()))
