#!/usr/bin/env python
"""Benchmark the embedded store at fleet size (issue 2).

Builds a TinyDBStore in a temporary directory holding ``--extensions`` extensions spread over
``--machines`` machines, then measures, through ResourceService (the code the HTTP handlers call):

* PATCH of one extension: ``ResourceService.patch_extension`` = what the API does before it answers
  202 (read-modify-write of the machine document + the operation record, both fsync'd); the
  completion (``complete_operation``, another two durable writes) is timed separately and as a
  full round trip;
* GET of one extension (``get_extension``) and the list of one machine's extensions
  (``list_extensions``);
* the search for orphaned writes each node of a cluster runs once a minute
  (``resources.recovery.orphaned_writes``: only the documents naming an operation, which PostgreSQL filters
  itself), against the baseline of reading and projecting every document as it did before;
* the activity log's query for one machine and for one caller among ``--events`` events of a day, against the
  baseline of reading every event of the subscription's day (what it did before PostgreSQL narrowed it);
* cold start: opening a TinyDBStore on the directory in a fresh Python subprocess (and, for
  information, a whole ``create_app`` in another fresh subprocess).

With ``--database URL`` the same is measured on the PostgreSQL store (PostgresStore): a scratch
database is made on that server (the URL's role needs CREATEDB) and dropped at the end, so no
existing data is touched; the targets are issue 12's (PATCH p50 <= 3 ms, p99 <= 15 ms).

How the fleet is built: one machine with four realistic extensions is created through
ResourceService (put_machine, put_extension with settings and protectedSettings, every operation
completed), and its document becomes the template; every machine of the fleet is that document
with its own names and ids, written through ``store.mutate_machine`` (one durable write per
machine, from several threads). Operation records of the build are not copied.

Figures, not a test: prints PASS/FAIL per target and always exits 0.

    .venv/bin/python scripts/bench_store.py                       # 25,000 machines, 100,000 extensions
    .venv/bin/python scripts/bench_store.py --machines 50 --extensions 200 --samples 50
    .venv/bin/python scripts/bench_store.py --database "$(scripts/start-postgres)"   # PostgreSQL
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arcext.activity import ActivityLog, EventFilter
from arcext.clock import SystemClock
from arcext.crypto import SecretBox
from arcext.ids import MachineKey
from arcext.resources import ResourceService
from arcext.resources.recovery import orphaned_writes, writes_in_flight
from arcext.store import MachineDoc, Store, TinyDBStore
from arcext.store.base import Record
from arcext.store.factory import open_store

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
LOCATION = "westeurope"
PRINCIPAL = "bench@example.com"
_PLACEHOLDER_RG = "rg-placeholder-0"
_PLACEHOLDER_MACHINE = "machine-placeholder-0"

#: (name, properties) of the four extensions every machine gets, shaped like real Arc extensions.
EXTENSIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "AzureMonitorWindowsAgent",
        {
            "publisher": "Microsoft.Azure.Monitor",
            "type": "AzureMonitorWindowsAgent",
            "typeHandlerVersion": "1.22.0",
            "autoUpgradeMinorVersion": True,
            "enableAutomaticUpgrade": True,
            "settings": {"authentication": {"managedIdentity": {"identifier-name": "mi_res_id"}}},
        },
    ),
    (
        "CustomScriptExtension",
        {
            "publisher": "Microsoft.Compute",
            "type": "CustomScriptExtension",
            "typeHandlerVersion": "1.10.12",
            "settings": {
                "fileUris": ["https://example.blob.core.windows.net/scripts/configure-host.ps1"],
                "timestamp": 1718000000,
            },
            "protectedSettings": {
                "commandToExecute": "powershell -ExecutionPolicy Unrestricted -File configure-host.ps1",
                "storageAccountName": "examplestorage",
                "storageAccountKey": "c2VjcmV0LWtleS1mb3ItYmVuY2htYXJraW5nLW9ubHk=",
            },
        },
    ),
    (
        "MDE.Windows",
        {
            "publisher": "Microsoft.Azure.AzureDefenderForServers",
            "type": "MDE.Windows",
            "typeHandlerVersion": "1.0.9.2",
            "settings": {"azureResourceId": "placeholder", "forceReOnboarding": False, "vNextEnabled": True},
            "protectedSettings": {"defenderForEndpointOnboardingScript": "UEsDBBQAAAAIA" * 40},
        },
    ),
    (
        "AdminCenter",
        {
            "publisher": "Microsoft.AdminCenter",
            "type": "AdminCenter",
            "typeHandlerVersion": "0.38.0.0",
            "enableAutomaticUpgrade": False,
            "settings": {"port": "6516", "salt": "a1b2c3d4e5f6", "cspFrameAncestors": [], "corsOrigins": []},
        },
    ),
]

MACHINE_BODY: dict[str, Any] = {
    "location": LOCATION,
    "tags": {"env": "bench", "owner": "platform-team"},
    "kind": "HCI",
    "properties": {
        "osName": "windows",
        "osType": "windows",
        "osVersion": "10.0.20348.2340",
        "osSku": "Windows Server 2022 Datacenter",
        "domainName": "corp.example.com",
        "vmId": "b7a098cc-b0b8-46e8-a205-62f301a62a8f",
        "clientPublicKey": "MIIBCgKCAQEAqsR" + "A" * 340,
        "agentVersion": "1.41.02664.1629",
        "osProfile": {"computerName": "placeholder"},
        "cloudMetadata": {"provider": "N/A"},
        "agentConfiguration": {"incomingConnectionsPorts": ["22", "23"], "extensionsEnabled": "true"},
        "licenseProfile": {"esuProfile": {"licenseAssignmentState": "NotAssigned"}},
    },
}


def machine_key(i: int, resource_groups: int) -> MachineKey:
    return MachineKey(SUBSCRIPTION, f"rg-bench-{i % resource_groups}", f"machine-{i:06d}")


def template_document(box: SecretBox, ext_per_machine: int) -> str:
    """One realistic machine document, made by ResourceService in a scratch store, as JSON text."""
    scratch = Path(tempfile.mkdtemp(prefix="arcext-template-"))
    try:
        store = TinyDBStore(scratch)
        service = ResourceService(store, box, SystemClock())  # runner never started: we complete by hand
        key = MachineKey(SUBSCRIPTION, _PLACEHOLDER_RG, _PLACEHOLDER_MACHINE)
        service.put_machine(key, MACHINE_BODY, PRINCIPAL)
        for n in range(ext_per_machine):
            name, props = EXTENSIONS[n % len(EXTENSIONS)]
            if n >= len(EXTENSIONS):
                name = f"{name}-{n}"
            op = service.put_extension(key, name, {"location": LOCATION, "properties": dict(props)}, PRINCIPAL)
            service.complete_operation(op["id"])
        doc = store.get_machine(key)
        store.close()
        assert doc is not None
        return json.dumps(doc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def build_store(
    data_dir: Path,
    machines: int,
    extensions: int,
    *,
    threads: int = 8,
    resource_groups: int = 50,
    progress: Callable[[int], None] | None = None,
    database_url: str | None = None,
) -> list[tuple[MachineKey, list[str]]]:
    """Fill ``data_dir`` with ``machines`` machine documents holding ``extensions`` extensions in all.

    Returns every machine key with its extension names. ``secret.key`` of ``data_dir`` seals the
    protectedSettings, so a server opened on the directory can decrypt them."""
    per_machine = max(1, -(-extensions // machines))
    box = SecretBox.from_data_dir(data_dir)
    template = template_document(box, per_machine)
    store = open_store(data_dir, database_url)
    counts = [min(per_machine, max(0, extensions - i * per_machine)) for i in range(machines)]
    layout: list[tuple[MachineKey, list[str]]] = [(machine_key(i, resource_groups), []) for i in range(machines)]
    names_in_template = sorted(json.loads(template)["extensions"])
    done = 0
    done_lock = threading.Lock()

    def write(index: int) -> None:
        nonlocal done
        key, names = layout[index]
        text = template.replace(_PLACEHOLDER_MACHINE, key.name).replace(_PLACEHOLDER_RG, key.resource_group)
        doc: MachineDoc = json.loads(text)
        keep = names_in_template[: counts[index]]
        doc["extensions"] = {k: doc["extensions"][k] for k in keep}
        names.extend(doc["extensions"][k]["resource"]["name"] for k in keep)
        store.mutate_machine(key, lambda _current: (doc, None))
        if progress is not None:
            with done_lock:
                done += 1
                if done % 2500 == 0:
                    progress(done)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(write, range(machines)))
    store.close()
    return layout


# --- measurements ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Figure:
    label: str
    value: float
    unit: str
    target: float | None = None

    def line(self) -> str:
        text = f"  {self.label:<50} {self.value:>10.3f} {self.unit:<3}"
        if self.target is not None:
            verdict = "PASS" if self.value <= self.target else "FAIL"
            text += f"  target <= {self.target:g} {self.unit:<3} {verdict}"
        return text


def cold_start(data_dir: Path, what: str, database_url: str | None = None) -> tuple[float, float]:
    """(seconds inside the subprocess to open the store or app, wall seconds of the subprocess)."""
    if what == "store":
        body = (
            "from arcext.store.factory import open_store\n"
            "t = time.perf_counter()\n"
            "s = open_store(pathlib.Path(sys.argv[1]), sys.argv[2] or None)\n"
            "n = s.count_machines()\n"
        )
    else:
        body = (
            "import logging\n"
            "logging.disable(logging.CRITICAL)\n"
            "from arcext.app import create_app\n"
            "t = time.perf_counter()\n"
            "app = create_app({'ARCEXT_DATA_DIR': sys.argv[1], 'ARCEXT_DATABASE_URL': sys.argv[2]})\n"
            "n = app.extensions['arcext'].store.count_machines()\n"
            "app.extensions['arcext'].close()\n"
        )
    code = "import pathlib, sys, time\n" + body + "print(time.perf_counter() - t, n)\n"
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, str(data_dir), database_url or ""], check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    inner, _count = out.stdout.split()
    return float(inner), wall


def drop_page_cache() -> str:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        return f"warm (could not drop it: {exc})"
    return "dropped just before"


@dataclass
class Targets:
    """ms: PATCH p50 and p99 (acknowledged), GET p50, list p50; s: the store's cold start."""

    patch_p50: float
    patch_p99: float
    get_p50: float = 2
    list_p50: float = 3
    cold_start: float = 10


EMBEDDED = Targets(patch_p50=5, patch_p99=25)  # issue 2
POSTGRES = Targets(patch_p50=3, patch_p99=15)  # issue 12


def best_of(runs: int, call: Callable[[], object]) -> tuple[float, float]:
    """The shortest wall time of ``runs`` calls, and the CPU time of this process in that run (seconds)."""
    best = (float("inf"), float("inf"))
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        call()
        best = min(best, (time.perf_counter() - w0, time.process_time() - c0))
    return best


def measure(
    data_dir: Path,
    layout: list[tuple[MachineKey, list[str]]],
    samples: int,
    seed: int,
    database_url: str | None = None,
    targets: Targets = EMBEDDED,
    events: int = 0,
) -> list[Figure]:
    rng = random.Random(seed)
    store: Store = open_store(data_dir, database_url)
    service = ResourceService(store, SecretBox.from_data_dir(data_dir), SystemClock())
    # The runner is not started: each PATCH's operation is completed right here, so no background
    # thread competes with the timings and the next PATCH of the same extension is never a 409.
    populated = [(k, names) for k, names in layout if names]

    def pick() -> tuple[MachineKey, str]:
        key, names = rng.choice(populated)
        return key, rng.choice(names)

    for _ in range(min(50, samples)):  # warm-up
        k, n = pick()
        service.get_extension(k, n)
        service.list_extensions(k)

    patch_ack: list[float] = []
    patch_done: list[float] = []
    completion: list[float] = []
    for i in range(samples):
        key, name = pick()
        body = {"properties": {"settings": {"bench": i, "timestamp": time.time()}}, "tags": {"run": str(i)}}
        t0 = time.perf_counter()
        op = service.patch_extension(key, name, body, PRINCIPAL)
        t1 = time.perf_counter()
        service.complete_operation(op["id"])
        t2 = time.perf_counter()
        patch_ack.append(t1 - t0)
        completion.append(t2 - t1)
        patch_done.append(t2 - t0)

    gets: list[float] = []
    lists: list[float] = []
    for _ in range(samples):
        key, name = pick()
        t0 = time.perf_counter()
        service.get_extension(key, name)
        gets.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        service.list_extensions(key)
        lists.append(time.perf_counter() - t0)
    orphan_search, orphan_search_cpu = best_of(3, lambda: orphaned_writes(store))
    every_doc, every_doc_cpu = best_of(3, lambda: store.project_machines(writes_in_flight))
    activity = activity_figures(store, layout, events)
    store.close()

    ms = 1000.0
    return [
        Figure("PATCH extension p50 (patch_extension, ack'd)", percentile(patch_ack, 50) * ms, "ms", targets.patch_p50),
        Figure("PATCH extension p99 (patch_extension, ack'd)", percentile(patch_ack, 99) * ms, "ms", targets.patch_p99),
        Figure("  completion p50 (complete_operation)", percentile(completion, 50) * ms, "ms"),
        Figure("  PATCH + completion p50", percentile(patch_done, 50) * ms, "ms"),
        Figure("  PATCH + completion p99", percentile(patch_done, 99) * ms, "ms"),
        Figure("  PATCH max (ack'd)", max(patch_ack) * ms, "ms"),
        Figure("GET extension p50 (get_extension)", percentile(gets, 50) * ms, "ms", targets.get_p50),
        Figure("  GET extension p99", percentile(gets, 99) * ms, "ms"),
        Figure("list machine's extensions p50 (list_extensions)", percentile(lists, 50) * ms, "ms", targets.list_p50),
        Figure("  list p99", percentile(lists, 99) * ms, "ms"),
        Figure("  GET mean", statistics.fmean(gets) * ms, "ms"),
        Figure("  GET max", max(gets) * ms, "ms"),
        Figure("orphan search (each node, once a minute): wall", orphan_search * ms, "ms"),
        Figure("  its CPU in this process", orphan_search_cpu * ms, "ms"),
        Figure("  baseline, every document read and projected: wall", every_doc * ms, "ms"),
        Figure("  baseline CPU in this process", every_doc_cpu * ms, "ms"),
        Figure("  ratio baseline / orphan search (wall)", every_doc / max(orphan_search, 1e-9), "x"),
        *activity,
    ]


def activity_figures(store: Store, layout: list[tuple[MachineKey, list[str]]], count: int) -> list[Figure]:
    """``count`` activity-log events of one day in the fleet's subscription (each about 1.5 KB, half of them on
    a machine, half on one of its extensions, 50 callers), then the API's query (``ActivityLog.query``) for one
    machine and for one caller, against the baseline: every event of the subscription's day read and filtered
    by the node, as the query did before the store narrowed it. Best of 3 each."""
    if count <= 0:
        return []
    keys = [key for key, _names in layout]
    padding = "x" * 1200
    for first in range(0, count, 5000):
        store.append_events(
            [
                {
                    "eventDataId": f"bench-{n}",
                    "eventTimestamp": f"2026-11-25T{n % 24:02d}:00:00.000000Z",
                    "subscriptionId": SUBSCRIPTION,
                    "resourceId": keys[n % len(keys)].id + ("/extensions/CustomScriptExtension" if n % 2 else ""),
                    "caller": f"user{n % 50}@example.com",
                    "padding": padding,
                }
                for n in range(first, min(count, first + 5000))
            ]
        )
    log = ActivityLog(store)
    window = {"start": "2026-11-25T00:00:00.000000Z", "end": "2026-11-25T23:59:59.999999Z"}
    by_machine = EventFilter(**window, resource_uri=keys[7].id)
    by_caller = EventFilter(**window, caller="user7@example.com")

    def baseline(flt: EventFilter) -> list[Record]:
        return [
            e for e in store.iter_events("2026-11-25", "2026-11-25", ("subscriptionId", SUBSCRIPTION)) if flt.matches(e)
        ]

    machine_wall, _ = best_of(3, lambda: log.query(SUBSCRIPTION, by_machine))
    machine_before, _ = best_of(3, lambda: baseline(by_machine))
    caller_wall, _ = best_of(3, lambda: log.query(SUBSCRIPTION, by_caller))
    caller_before, _ = best_of(3, lambda: baseline(by_caller))
    ms = 1000.0
    return [
        Figure(f"activity log, {count:,} events in a day: one machine's", machine_wall * ms, "ms"),
        Figure("  baseline, the day's events filtered by the node", machine_before * ms, "ms"),
        Figure("  one caller's", caller_wall * ms, "ms"),
        Figure("  baseline, the day's events filtered by the node", caller_before * ms, "ms"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=25_000)
    parser.add_argument("--extensions", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=2_000, help="timed operations per figure")
    parser.add_argument("--threads", type=int, default=8, help="writer threads for the build")
    parser.add_argument("--data-dir", type=Path, help="build here (must be empty or absent; kept afterwards)")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--events", type=int, default=100_000, help="activity-log events for the query figures")
    parser.add_argument(
        "--database",
        metavar="URL",
        help="measure the PostgreSQL store: a scratch database is made on this server and dropped afterwards",
    )
    parser.add_argument(
        "--drop-caches",
        action="store_true",
        help="before the cold start, sync and drop the OS page cache (root only; affects the whole machine)",
    )
    args = parser.parse_args(argv)

    own_dir = args.data_dir is None
    data_dir: Path = args.data_dir or Path(tempfile.mkdtemp(prefix="arcext-bench-store-"))
    database_url: str | None = None
    if args.database:
        from arcext.store.postgres import provision
        from arcext.store.postgres.db import redacted

        database_url = provision.create("arcext_bench", admin=args.database)
        where = f"PostgreSQL {redacted(database_url)} (secret.key in {data_dir})"
    else:
        where = str(data_dir)
    targets = POSTGRES if database_url else EMBEDDED
    store_label = "PostgresStore(url)" if database_url else "TinyDBStore(dir)"
    try:
        print(f"arcext store benchmark: {args.extensions:,} extensions on {args.machines:,} machines in {where}")
        t0 = time.perf_counter()
        layout = build_store(
            data_dir,
            args.machines,
            args.extensions,
            threads=args.threads,
            progress=lambda n: print(f"  built {n:,} machines ({time.perf_counter() - t0:.1f} s)", flush=True),
            database_url=database_url,
        )
        build = time.perf_counter() - t0
        total = sum(len(names) for _key, names in layout)
        print(
            f"  build: {build:.1f} s for {len(layout):,} machines / {total:,} extensions "
            f"({build / max(1, len(layout)) * 1000:.2f} ms per machine document, {args.threads} threads)"
        )

        figures = measure(data_dir, layout, args.samples, args.seed, database_url, targets, args.events)
        page_cache = "warm (the files had just been written)"
        if args.drop_caches:
            page_cache = drop_page_cache()
        store_open, store_wall = cold_start(data_dir, "store", database_url)
        app_open, app_wall = cold_start(data_dir, "app", database_url)
        figures += [
            Figure(f"cold start: {store_label} in a new process", store_open, "s", targets.cold_start),
            Figure("  same, whole subprocess wall time", store_wall, "s"),
            Figure("  create_app(dir) in a new process (info)", app_open, "s"),
            Figure("  same, whole subprocess wall time", app_wall, "s"),
        ]
        print(
            f"results ({args.samples:,} samples each; PATCH = ResourceService.patch_extension, i.e. the "
            "read-modify-write the API acknowledges with 202, completion timed apart):"
        )
        for figure in figures:
            print(figure.line())
        failed = [f.label.strip() for f in figures if f.target is not None and f.value > f.target]
        print("overall:", "PASS" if not failed else f"FAIL ({'; '.join(failed)})")
        print(f"(OS page cache for the store cold start: {page_cache}; the create_app run came after it.)")
    finally:
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        if database_url:
            from arcext.store.postgres import provision

            provision.drop(database_url, admin=args.database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
