#!/usr/bin/env python
"""Requests per second for GET of one extension through the real server vs a minimal Flask endpoint.

Both apps run in this process, each on arcext.serving.ServerThread (Werkzeug's threaded server):

* the real arcext app (``create_app``) on a store holding ``--extensions`` extensions (built with
  scripts/bench_store.py's builder), asked ``GET .../machines/{m}/extensions/{e}?api-version=...``
  with a valid Owner bearer token, for random extensions;
* a minimal Flask app with one route returning a constant JSON body of the same size as an
  extension (the body of one real GET), i.e. routing + JSON only.

The load comes from a separate client process (so the client's Python does not share the servers'
GIL): ``--connections`` threads, each with its own keep-alive requests.Session, for ``--seconds`` per
run. Runs alternate (minimal, real, minimal, real, ...) after a warm-up of both; the median rps
of each is reported with their ratio. Figures, not a test: always exits 0.

    .venv/bin/python scripts/bench_api.py                        # 100,000 extensions
    .venv/bin/python scripts/bench_api.py --extensions 400 --machines 100 --seconds 1 --rounds 1
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import requests

API_VERSION = "2024-07-10"
TARGET_RATIO = 0.6


def _bench_store() -> ModuleType:
    """scripts/bench_store.py (scripts/ is not a package)."""
    path = Path(__file__).with_name("bench_store.py")
    spec = importlib.util.spec_from_file_location("arcext_bench_store", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- client side (runs in a subprocess: `bench_api.py --client`) -------------------------------------------


def client_run(urls: list[str], token: str | None, connections: int, seconds: float) -> dict[str, Any]:
    """Hammer ``urls`` (round-robin from a random start) for ``seconds``; return counts."""
    deadline = time.perf_counter() + seconds
    counts = [0] * connections
    errors = [0] * connections
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start_barrier = threading.Barrier(connections)

    def worker(i: int) -> None:
        session = requests.Session()
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        rng = random.Random(i)
        n = rng.randrange(len(urls))
        start_barrier.wait()
        while time.perf_counter() < deadline:
            try:
                response = session.get(urls[n % len(urls)], timeout=10)
                response.content  # noqa: B018 - read the body, as a real client does
                if response.status_code == 200:
                    counts[i] += 1
                else:
                    errors[i] += 1
                    with lock:
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            except requests.RequestException:
                errors[i] += 1
            n += 1
        session.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"ok": sum(counts), "errors": sum(errors), "seconds": elapsed, "statuses": statuses}


def load(urls: list[str], token: str | None, connections: int, seconds: float) -> dict[str, Any]:
    """Run one load phase in a fresh client process and return its counts plus rps."""
    spec = {"urls": urls, "token": token, "connections": connections, "seconds": seconds}
    out = subprocess.run(
        [sys.executable, __file__, "--client"], input=json.dumps(spec), capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout)
    result["rps"] = result["ok"] / result["seconds"]
    return result


# --- servers ---------------------------------------------------------------------------------------------


def minimal_app(payload: dict[str, Any]) -> Any:
    from flask import Flask

    app = Flask("minimal")

    @app.get("/item")
    def item() -> dict[str, Any]:
        return payload

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extensions", type=int, default=100_000)
    parser.add_argument("--machines", type=int, help="default: extensions / 4")
    parser.add_argument("--connections", type=int, default=4, help="concurrent keep-alive client threads")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each server")
    parser.add_argument("--urls", type=int, default=2000, help="distinct extensions to GET")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="diagnostic: gc.freeze() after create_app, i.e. keep the loaded store out of the cyclic GC",
    )
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.client:
        spec = json.loads(sys.stdin.read())
        print(json.dumps(client_run(spec["urls"], spec["token"], spec["connections"], spec["seconds"])))
        return 0

    from arcext.app import create_app
    from arcext.auth import Role
    from arcext.serving import ServerThread

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    bench_store = _bench_store()
    machines = args.machines or max(1, args.extensions // 4)
    data_dir = Path(tempfile.mkdtemp(prefix="arcext-bench-api-"))
    servers: list[ServerThread] = []
    app: Any = None
    try:
        print(f"arcext API benchmark: {args.extensions:,} extensions on {machines:,} machines in {data_dir}")
        t0 = time.perf_counter()
        layout = bench_store.build_store(data_dir, machines, args.extensions)
        print(f"  store built in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        app = create_app({"ARCEXT_DATA_DIR": str(data_dir)})
        print(f"  create_app on that store: {time.perf_counter() - t0:.1f} s")
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
            print(f"  gc.freeze(): {gc.get_freeze_count():,} objects moved out of the cyclic GC")
        svc = app.extensions["arcext"]
        token, _record = svc.tokens.create(Role.READER, "/", "bench-reader", svc.clock.now())
        real = ServerThread(app).start()
        servers.append(real)

        rng = random.Random(7)
        picks = [(key, name) for key, names in layout for name in names]
        picks = rng.sample(picks, min(args.urls, len(picks)))
        real_urls = [f"{real.url}{key.extension_id(name)}?api-version={API_VERSION}" for key, name in picks]
        check = requests.get(real_urls[0], headers={"Authorization": f"Bearer {token}"}, timeout=10)
        check.raise_for_status()
        payload = check.json()
        print(
            f"  real GET: {check.status_code}, {len(check.content)} bytes; minimal endpoint returns the same JSON body"
        )

        minimal = ServerThread(minimal_app(payload)).start()
        servers.append(minimal)
        minimal_urls = [f"{minimal.url}/item"]
        assert requests.get(minimal_urls[0], timeout=10).json() == payload

        warm = min(1.0, args.seconds)
        load(minimal_urls, None, args.connections, warm)
        load(real_urls, token, args.connections, warm)

        results: dict[str, list[float]] = {"minimal": [], "real": []}
        errors = {"minimal": 0, "real": 0}
        for r in range(args.rounds):
            order = [("minimal", minimal_urls, None), ("real", real_urls, token)]
            if r % 2:
                order.reverse()
            for name, urls, tok in order:
                res = load(urls, tok, args.connections, args.seconds)
                results[name].append(res["rps"])
                errors[name] += res["errors"]
                print(
                    f"  round {r + 1} {name:<7} {res['rps']:>9.1f} req/s ({res['ok']:,} ok, "
                    f"{res['errors']} errors {res['statuses'] or ''})",
                    flush=True,
                )

        real_rps = statistics.median(results["real"])
        minimal_rps = statistics.median(results["minimal"])
        ratio = real_rps / minimal_rps if minimal_rps else float("nan")
        print(f"results ({args.connections} keep-alive connections, {args.rounds} x {args.seconds:g} s each, median):")
        print(f"  GET extension, real arcext server     {real_rps:>9.1f} req/s")
        print(f"  minimal Flask JSON endpoint           {minimal_rps:>9.1f} req/s")
        verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
        print(f"  ratio real / minimal                  {ratio:>9.3f}   target >= {TARGET_RATIO} {verdict}")
        if errors["real"] or errors["minimal"]:
            print(f"  non-200 answers or errors: {errors}")
    finally:
        for server in servers:
            server.stop()
        if app is not None:
            app.extensions["arcext"].close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
