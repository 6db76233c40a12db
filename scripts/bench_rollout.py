#!/usr/bin/env python
"""Benchmark the upgrade engine on the simulated driver (issue 3).

Two measurements, each on its own data directory, through the domain objects (no HTTP):

**Rollout.** ``--machines`` machines (default 10,000) × ``--extensions-per-machine`` extensions
(default 3, of three different auto-upgrade types), spread over ``--subscriptions`` subscriptions
and ``--regions`` regions. A new version of each type is published (three rollouts, planned by
``Engine.on_version_published``) and ``Engine.run_until_idle`` runs every job on a manual clock
with a zero standard window, so every wave is due at once and only the availability-first order
(phase after phase, batch after batch) gates the work. Every simulated host operation sleeps
``--latency-ms`` (default 50); ``--concurrency`` (default 64) jobs run at once.

* wall time: from the first dispatch to the end of ``run_until_idle`` (planning excluded);
* ideal bound: host operations × latency / concurrency, host operations counted at the driver
  (one per upgrade here; a rollback or a reconcile would add theirs); target wall ≤ 1.25 × ideal;
* engine CPU per job (the target, ≤ 0.5 ms): CPU time of the whole process over the run
  (``time.process_time``: every thread: scheduler, workers, store, activity log), minus the CPU
  spent inside the simulated driver's calls (its own model and file writes: the host's work, not
  the engine's; per-call ``time.thread_time``), divided by the jobs run. Under the GIL this is the
  figure that bounds throughput: at 0.5 ms per job one process does at most 2,000 jobs/s;
* wall overhead per job-slot (information): (wall − ideal) × concurrency / jobs: how long each
  worker slot spent per job on anything but the host's latency (includes waiting at wave barriers).

**Planning.** A fleet of ``--plan-extensions`` extensions (default 100,000) of one type,
``--plan-extensions-per-machine`` per machine (default 4, so 25,000 machines, the fleet size of
issue 2), and the wall time of ``Engine.on_version_published`` for a new version of that type
(every extension eligible): reading the fleet, planning phases/batches/waves, persisting the
rollout; target ≤ 2 s.

The fleets are written with ``store.mutate_machine`` (one durable write per machine, from several
threads) from a template machine made by ``ResourceService``; then the services are closed and opened
again on that data directory, as a server starts on an existing fleet, and only then measured.
Figures, not a test: prints PASS/FAIL per target and always exits 0.

    .venv/bin/python scripts/bench_rollout.py                        # full size
    .venv/bin/python scripts/bench_rollout.py --machines 200 --plan-extensions 2000
    .venv/bin/python scripts/bench_rollout.py --profile plan         # cProfile the planning call
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import logging
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from arcext.clock import SystemClock
from arcext.hosts.base import ExtensionSpec, InstalledExtension
from arcext.hosts.simulated import SimulatedDriver
from arcext.ids import MachineKey
from arcext.resources import ResourceService
from arcext.services import Services
from arcext.serving import tune_gc_for_serving
from arcext.store import MachineDoc, TinyDBStore
from arcext.upgrades.settings import EngineSettings

PRINCIPAL = "bench@example.com"
_PLACEHOLDER_SUB = "99999999-9999-9999-9999-999999999999"
_PLACEHOLDER_RG = "rg-placeholder-0"
_PLACEHOLDER_MACHINE = "machine-placeholder-0"
_PLACEHOLDER_REGION = "placeholderregion"
REGIONS = ["eastus", "westeurope", "southeastasia", "brazilsouth", "australiaeast", "japaneast"]

#: (name, properties, new version) of the extension types every machine gets; all support auto-upgrade.
EXTENSIONS: list[tuple[str, dict[str, Any], str]] = [
    (
        "AzureMonitorWindowsAgent",
        {
            "publisher": "Microsoft.Azure.Monitor",
            "type": "AzureMonitorWindowsAgent",
            "typeHandlerVersion": "1.22.0",
            "settings": {"authentication": {"managedIdentity": {"identifier-name": "mi_res_id"}}},
        },
        "1.23.0",
    ),
    (
        "DependencyAgentWindows",
        {
            "publisher": "Microsoft.Azure.Monitoring.DependencyAgent",
            "type": "DependencyAgentWindows",
            "typeHandlerVersion": "9.10.0",
            "settings": {"enableAMA": "true"},
        },
        "9.10.1",
    ),
    (
        "WindowsPatchExtension",
        {
            "publisher": "Microsoft.CPlat.Core",
            "type": "WindowsPatchExtension",
            "typeHandlerVersion": "1.5.60",
            "settings": {"patchMode": "AutomaticByPlatform", "maintenanceWindow": "Sat 02:00-04:00"},
            "protectedSettings": {"storageAccountKey": "c2VjcmV0LWtleS1mb3ItYmVuY2htYXJraW5nLW9ubHk="},
        },
        "1.5.61",
    ),
]

MACHINE_BODY: dict[str, Any] = {
    "location": _PLACEHOLDER_REGION,
    "tags": {"env": "bench", "owner": "platform-team"},
    "properties": {
        "osName": "windows",
        "osType": "windows",
        "osVersion": "10.0.20348.2340",
        "osSku": "Windows Server 2022 Datacenter",
        "domainName": "corp.example.com",
        "agentVersion": "1.41.02664.1629",
        "osProfile": {"computerName": "placeholder"},
    },
}


# --- the fleet ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    machines: int
    per_machine: int
    subscriptions: int
    regions: int
    resource_groups: int = 20
    single_type: bool = False  # every extension of the first type (the planning fleet)

    def key(self, i: int) -> MachineKey:
        sub = f"{i % self.subscriptions:08x}-1111-2222-3333-444444444444"
        return MachineKey(sub, f"rg-bench-{i % self.resource_groups}", f"machine-{i:06d}")

    def region(self, i: int) -> str:
        return REGIONS[(i // self.subscriptions) % self.regions]

    def extensions(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for n in range(self.per_machine):
            name, props, _new = EXTENSIONS[0 if self.single_type else n % len(EXTENSIONS)]
            out.append((name if n < (1 if self.single_type else len(EXTENSIONS)) else f"{name}-{n}", props))
        return out

    @property
    def types(self) -> list[tuple[str, str, str]]:
        """(publisher, type, new version) of every type in the fleet."""
        used = EXTENSIONS[:1] if self.single_type else EXTENSIONS[: min(self.per_machine, len(EXTENSIONS))]
        return [(props["publisher"], props["type"], new) for _name, props, new in used]


def template_document(services: Services, layout: Layout) -> str:
    """One machine document made by ResourceService (sealed with the fleet's key), as JSON text."""
    scratch = Path(tempfile.mkdtemp(prefix="arcext-template-"))
    try:
        store = TinyDBStore(scratch)
        service = ResourceService(store, services.box, SystemClock())  # no driver, runner never started
        key = MachineKey(_PLACEHOLDER_SUB, _PLACEHOLDER_RG, _PLACEHOLDER_MACHINE)
        service.put_machine(key, MACHINE_BODY, PRINCIPAL)
        for name, props in layout.extensions():
            body = {"location": _PLACEHOLDER_REGION, "properties": json.loads(json.dumps(props))}
            op = service.put_extension(key, name, body, PRINCIPAL)
            service.complete_operation(op["id"])
        doc = store.get_machine(key)
        store.close()
        assert doc is not None
        return json.dumps(doc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def build_fleet(services: Services, layout: Layout, threads: int) -> float:
    """Write every machine document through store.mutate_machine; returns the seconds it took."""
    template = template_document(services, layout)
    started = time.perf_counter()

    def write(i: int) -> None:
        key = layout.key(i)
        text = (
            template.replace(_PLACEHOLDER_SUB, key.subscription)
            .replace(_PLACEHOLDER_MACHINE, key.name)
            .replace(_PLACEHOLDER_RG, key.resource_group)
            .replace(_PLACEHOLDER_REGION, layout.region(i))
        )
        doc: MachineDoc = json.loads(text)
        services.store.mutate_machine(key, lambda _current: (doc, None))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(write, range(layout.machines)))
    return time.perf_counter() - started


# --- counting host operations ---------------------------------------------------------------------------


class HostMeter:
    """Counts simulated host operations and the CPU time spent inside them (thread_time per call)."""

    def __init__(self) -> None:
        self.operations = 0
        self.cpu = 0.0
        self.wall = 0.0  # seconds inside the calls (the simulated latency included)
        self._lock = threading.Lock()

    def add(self, cpu: float, wall: float = 0.0) -> None:
        with self._lock:
            self.operations += 1
            self.cpu += cpu
            self.wall += wall


class MeteredDriver:
    """A SimulatedDriver whose every call is counted (the HostDriver protocol, delegated)."""

    def __init__(self, inner: SimulatedDriver, meter: HostMeter) -> None:
        self.inner = inner
        self.meter = meter

    def _timed(self, call: Callable[[], Any]) -> Any:
        t, w = time.thread_time(), time.perf_counter()
        try:
            return call()
        finally:
            self.meter.add(time.thread_time() - t, time.perf_counter() - w)

    def installed(self, name: str) -> InstalledExtension | None:
        found: InstalledExtension | None = self._timed(lambda: self.inner.installed(name))
        return found

    def install(self, spec: ExtensionSpec, version: str) -> None:
        self._timed(lambda: self.inner.install(spec, version))

    def upgrade(self, spec: ExtensionSpec, from_version: str, to_version: str) -> None:
        self._timed(lambda: self.inner.upgrade(spec, from_version, to_version))

    def rollback(self, spec: ExtensionSpec, failed_version: str, good_version: str) -> None:
        self._timed(lambda: self.inner.rollback(spec, failed_version, good_version))

    def remove(self, name: str) -> None:
        self._timed(lambda: self.inner.remove(name))

    def close(self) -> None:
        self.inner.close()


def meter_hosts(services: Services) -> HostMeter:
    meter = HostMeter()
    fleet = services.fleet
    plain = fleet.driver

    def metered(key: MachineKey) -> Any:
        return MeteredDriver(plain(key), meter)

    fleet.driver = metered  # type: ignore[method-assign]
    return meter


# --- figures ----------------------------------------------------------------------------------------


@dataclass
class Figure:
    label: str
    value: float
    unit: str
    target: float | None = None

    @property
    def passed(self) -> bool:
        return self.target is None or self.value <= self.target

    def line(self) -> str:
        text = f"  {self.label:<52} {self.value:>10.3f} {self.unit:<3}"
        if self.target is not None:
            text += f"  target <= {self.target:g} {self.unit:<3} {'PASS' if self.passed else 'FAIL'}"
        return text


def open_services(data_dir: Path, args: argparse.Namespace) -> Services:
    settings = EngineSettings(
        concurrency=args.concurrency,
        standard_window=timedelta(0),
        critical_window=timedelta(0),
        tick_seconds=3600.0,  # no background loop is started; run_until_idle drives the engine
    )
    return Services.open(
        data_dir,
        manual_clock=True,
        simulate=True,
        engine_settings=settings,
        simulated_latency_ms=args.latency_ms,
        database_url=getattr(args, "database_url", None),
    )


def reopened(data_dir: Path, args: argparse.Namespace, layout: Layout) -> Services:
    """Build the fleet, close, and open again: the engine is measured as a server runs it, started on a
    data directory that holds the fleet (loaded from its snapshots), not in the process that wrote it."""
    services = open_services(data_dir, args)
    try:
        built = build_fleet(services, layout, args.build_threads)
    finally:
        services.close()
    started = time.perf_counter()
    services = open_services(data_dir, args)
    print(f"  built in {built:.1f} s; server start on it {time.perf_counter() - started:.1f} s", flush=True)
    return services


def publish(services: Services, layout: Layout) -> list[dict[str, Any]]:
    rollouts = []
    for publisher, type_, version in layout.types:
        record, created = services.catalog.publish_version(publisher, type_, version, False, services.clock.now())
        assert created, (publisher, type_, version)
        rollout = services.engine.on_version_published(record)
        assert rollout is not None, (publisher, type_)
        rollouts.append(rollout)
    return rollouts


def profiled(enabled: bool, call: Callable[[], Any]) -> Any:
    if not enabled:
        return call()
    profile = cProfile.Profile()
    try:
        return profile.runcall(call)
    finally:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue())


def bench_rollout(data_dir: Path, args: argparse.Namespace) -> list[Figure]:
    layout = Layout(args.machines, args.extensions_per_machine, args.subscriptions, args.regions)
    jobs_expected = layout.machines * layout.per_machine
    print(
        f"rollout fleet: {layout.machines} machines x {layout.per_machine} extensions = {jobs_expected} extensions "
        f"({len(layout.types)} types, {layout.subscriptions} subscriptions, {layout.regions} regions); "
        f"host latency {args.latency_ms:g} ms, concurrency {args.concurrency}",
        flush=True,
    )
    services = reopened(data_dir, args, layout)
    try:
        started = time.perf_counter()
        rollouts = publish(services, layout)
        planned = time.perf_counter() - started
        waves = sum(len(r["waves"]) for r in rollouts)
        eligible = sum(int(r["eligible"]) for r in rollouts)
        print(f"  planned {len(rollouts)} rollouts, {eligible} eligible extensions, {waves} waves", flush=True)

        meter = meter_hosts(services)
        gc.collect()
        # flush what building the fleet (and any earlier run's deleted files) left for the disk, so that
        # writeback and discards of that data do not land in this run's figures; the run's own fsyncs count
        os.sync()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        summary = profiled(args.profile == "rollout", services.engine.run_until_idle)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)

        states = [r["state"] for r in services.store.list_rollouts()]
        new_versions = {(p.lower(), t.lower()): v for p, t, v in layout.types}
        upgraded = 0
        for doc in services.store.iter_machines():
            for record in doc["extensions"].values():
                props = record["resource"]["properties"]
                wanted = new_versions.get((props["publisher"].lower(), props["type"].lower()))
                upgraded += int(props.get("typeHandlerVersion") == wanted)
    finally:
        services.close()

    jobs = int(summary["succeeded"]) + int(summary["rolledBack"]) + int(summary["rollbackFailed"])
    jobs += int(summary["notRun"])
    ideal = meter.operations * args.latency_ms / 1000 / args.concurrency
    engine_cpu = cpu - meter.cpu
    per_job = max(jobs, 1)
    print(
        f"  ran {jobs} jobs ({summary['succeeded']} succeeded, {summary['rolledBack']} rolled back, "
        f"{summary['notRun']} not run), {meter.operations} host operations; "
        f"{upgraded} of {jobs_expected} extensions on the new version; rollouts {sorted(set(states))}"
    )
    return [
        Figure("planning the rollouts (information)", planned, "s"),
        Figure("rollout wall time", wall, "s"),
        Figure("ideal bound: host ops x latency / concurrency", ideal, "s"),
        Figure("wall / ideal", wall / ideal if ideal else float("nan"), "x", 1.25),
        Figure("engine CPU per job: (process CPU - host CPU) / jobs", engine_cpu / per_job * 1000, "ms", 0.5),
        Figure("process CPU per job (information)", cpu / per_job * 1000, "ms"),
        Figure("  of which user (information)", (usage1.ru_utime - usage0.ru_utime) / per_job * 1000, "ms"),
        Figure("  of which system (information)", (usage1.ru_stime - usage0.ru_stime) / per_job * 1000, "ms"),
        Figure("simulated-host CPU per job (information)", meter.cpu / per_job * 1000, "ms"),
        Figure(
            "context switches per job (information)",
            (usage1.ru_nvcsw - usage0.ru_nvcsw + usage1.ru_nivcsw - usage0.ru_nivcsw) / per_job,
            "",
        ),
        Figure(
            "wall overhead per job-slot: (wall-ideal) x conc / jobs",
            (wall - ideal) * args.concurrency / per_job * 1000,
            "ms",
        ),
    ]


def bench_planning(data_dir: Path, args: argparse.Namespace) -> list[Figure]:
    per_machine = args.plan_extensions_per_machine
    machines = -(-args.plan_extensions // per_machine)
    layout = Layout(machines, per_machine, args.subscriptions, args.regions, single_type=True)
    print(
        f"planning fleet: {machines} machines x {per_machine} extensions of one type = "
        f"{machines * per_machine} extensions",
        flush=True,
    )
    services = reopened(data_dir, args, layout)
    try:
        publisher, type_, version = layout.types[0]
        record, _created = services.catalog.publish_version(publisher, type_, version, False, services.clock.now())
        gc.collect()
        started = time.perf_counter()
        rollout = profiled(args.profile == "plan", lambda: services.engine.on_version_published(record))
        planned = time.perf_counter() - started
        assert rollout is not None
        print(f"  {rollout['eligible']} eligible extensions, {len(rollout['waves'])} waves")
    finally:
        services.close()
    return [Figure(f"planning time, {rollout['eligible']} extensions (on_version_published)", planned, "s", 2.0)]


def build_parser() -> argparse.ArgumentParser:
    """The options of this bench, and of scripts/bench_cluster.py (``--database``), which takes the same."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--extensions-per-machine", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50.0, help="per simulated host operation")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--subscriptions", type=int, default=4)
    parser.add_argument("--regions", type=int, default=3, choices=range(1, len(REGIONS) + 1))
    parser.add_argument("--plan-extensions", type=int, default=100_000, help="0 skips the planning measurement")
    parser.add_argument("--plan-extensions-per-machine", type=int, default=4)
    parser.add_argument("--build-threads", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, help="work here (kept) instead of a temporary directory")
    parser.add_argument("--profile", choices=["rollout", "plan"], help="cProfile one phase (main thread only)")
    parser.add_argument(
        "--no-fsync", action="store_true", help="diagnosis only: make os.fsync a no-op to see what durability costs"
    )
    parser.add_argument("--database", metavar="URL", help="PostgreSQL server (a role with CREATEDB): the cluster bench")
    parser.add_argument(
        "--nodes", type=int, default=2, help="with --database: node processes (scripts/bench_cluster.py)"
    )
    parser.add_argument(
        "--count-statements", action="store_true", help="with --database: count each node's SQL statements per job"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_gc_for_serving()  # the process settings of 'arcext serve', whose engine this measures
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.database:  # the cluster bench, a script of its own (it imports this one's fleet builders)
        return subprocess.call([sys.executable, str(Path(__file__).with_name("bench_cluster.py")), *argv])
    if args.no_fsync:
        os.fsync = lambda fd: None
        print("WARNING: --no-fsync: nothing is durable; figures are a what-if, not the measurement")

    root = args.data_dir or Path(tempfile.mkdtemp(prefix="arcext-bench-rollout-"))
    figures: list[Figure] = []
    try:
        if args.machines > 0:
            figures += bench_rollout(root / "rollout", args)
        if args.plan_extensions > 0:
            figures += bench_planning(root / "plan", args)
    finally:
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print("results")
    for figure in figures:
        print(figure.line())
    print(f"overall: {'PASS' if all(f.passed for f in figures) else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
