#!/usr/bin/env python
"""Requests per second and latency of arcext's API on its production server vs a minimal app and vs Werkzeug.

Three servers, each its own process, started once:

* ``arcext serve`` (gunicorn, serving_gunicorn.py, ``--simulate``) on a store holding ``--extensions``
  extensions (built with scripts/bench_store.py's builder);
* a minimal Flask app under the same server (``serving_gunicorn.serve``, same options): ``GET /item`` returns a
  constant JSON body the size of one extension, ``PATCH /item`` parses the JSON body and returns that body, i.e.
  routing + JSON only;
* the same arcext app (on a copy of the store) on Werkzeug's threaded server (arcext.serving.ServerThread, what
  ``arcext serve`` ran before), for the same requests.

Requests: ``GET`` of a random extension, and ``PATCH`` of an extension's settings and tags (a 202 that starts an
upgrade operation the simulated host finishes; each client connection PATCHes its own extensions). The load
comes from ``--connections`` keep-alive connections for ``--seconds`` per run, sent by ``wrk`` (a load generator
written in C: ``apt-get install wrk``; one thread per connection, each walking its own share of the URLs) when it
is on the PATH, else by a Python client process (one http.client connection per thread). The Python client
spends 100-250 us of CPU per request on the same cores and adds its own GIL waits to every request's latency, so
it can understate the fastest servers (the minimal app most); ``--load-generator python`` forces it. Each run
also reports the server's CPU per request (user + system time of the server's processes from the run's start
until the server has gone quiet after it, from /proc: a PATCH's upgrade, which runs after its 202, is billed to
that PATCH's run), which does not depend on the client. Each run starts once every server has gone quiet, so no
run shares the cores with the work another run left behind. Runs alternate over the scenarios for ``--rounds``
rounds after a warm-up; the median of the runs is reported: requests/s, p50 and p99 latency, the ratio arcext/minimal
(target >= 0.7) and gunicorn/Werkzeug (target >= 1.5). Figures, not a test: always exits 0.

    apt-get install wrk                                          # the load generator (else the Python client)
    .venv/bin/python scripts/bench_api.py                        # 100,000 extensions, 16 connections
    .venv/bin/python scripts/bench_api.py --extensions 400 --machines 100 --seconds 1 --rounds 1
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

API_VERSION = "2024-07-10"
TARGET_ARCEXT_VS_MINIMAL = 0.7
TARGET_PRODUCTION_VS_WERKZEUG = 1.5
LISTENING = re.compile(r"listening on (https?://\S+)")


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] if ordered else float("nan")


def client_run(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec["connections"]`` threads send ``spec["method"]`` to their share of ``spec["paths"]`` (round-robin)
    on one keep-alive connection each, for ``spec["seconds"]``; counts and latencies of 2xx answers."""
    parts = urlsplit(spec["base"])
    connections: int = spec["connections"]
    paths: list[str] = spec["paths"]
    method: str = spec["method"]
    headers = {"Content-Type": "application/json"}
    if spec["token"]:
        headers["Authorization"] = f"Bearer {spec['token']}"
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(connections + 1)  # and this thread, once it set the deadline
    deadline = [0.0]

    def worker(i: int) -> None:
        own = paths[i::connections] or paths  # PATCH: a thread's extensions are its own (no 409 from a sibling)
        rng = random.Random(i)
        n = rng.randrange(len(own))
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        barrier.wait()
        sent = 0
        while time.perf_counter() < deadline[0]:
            body = json.dumps(spec["body"] | {"tags": {"run": str(sent)}}).encode() if spec["body"] else None
            started = time.perf_counter()
            try:
                conn.request(method, own[n % len(own)], body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
                status = 0
            elapsed = time.perf_counter() - started
            if 200 <= status < 300:
                latencies[i].append(elapsed)
            else:
                errors[i] += 1
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
            n += 1
            sent += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + spec["seconds"]
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    done = [x for per in latencies for x in per]
    return {
        "ok": len(done),
        "errors": sum(errors),
        "statuses": statuses,
        "seconds": seconds,
        "rps": len(done) / seconds,
        "p50": percentile(done, 50) * 1000,
        "p99": percentile(done, 99) * 1000,
    }


# --- client side, wrk (a C load generator; its Lua script walks this run's URLs) -------------------------------

WRK_SCRIPT = """
local count, threads = 0, {}
function setup(thread)
  count = count + 1
  thread:set("id", count)
  table.insert(threads, thread)
end
function init(args)
  local all = {}
  for line in io.lines(PATHS) do all[#all + 1] = line end
  own = {}
  for k = id, #all, CONNECTIONS do own[#own + 1] = all[k] end  -- PATCH: a connection's extensions are its own
  if #own == 0 then own = all end
  n, sent, statuses = math.random(#own), 0, {}
end
function request()
  n = n % #own + 1
  sent = sent + 1
  local body = nil
  if BODY ~= "" then body = string.format(BODY, sent) end
  return wrk.format(METHOD, own[n], HEADERS, body)
end
function response(status, headers, body)
  if status < 200 or status >= 300 then statuses[status] = (statuses[status] or 0) + 1 end
end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do io.write(string.format("STATUS %d %d\\n", status, n)) end
  end
  io.write(string.format("TOTAL %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for this text (ASCII, escapes)


def wrk_run(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """The same load as :func:`client_run`, sent by wrk: one thread per connection."""
    connections: int = spec["connections"]
    paths_file = work / "wrk-paths.txt"
    paths_file.write_text("\n".join(spec["paths"]) + "\n")
    headers = {"Content-Type": "application/json"}
    if spec["token"]:
        headers["Authorization"] = f"Bearer {spec['token']}"
    body = ""
    if spec["body"]:  # each request's tags differ ("run": its number on its connection), as client_run's do
        body = json.dumps(spec["body"] | {"tags": {"run": "RUN"}}).replace("%", "%%").replace('"RUN"', '"%d"')
    lua_headers = "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()) + "}"
    script = work / "wrk-load.lua"
    script.write_text(
        f"PATHS = {_lua_string(str(paths_file))}\nCONNECTIONS = {connections}\nMETHOD = {_lua_string(spec['method'])}\n"
        f"HEADERS = {lua_headers}\nBODY = {_lua_string(body)}\n" + WRK_SCRIPT
    )
    seconds = max(1, round(spec["seconds"]))
    command = ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{seconds}s", "-s", str(script)]
    out = subprocess.run([*command, spec["base"]], capture_output=True, text=True, check=True).stdout
    statuses: dict[int, int] = {}
    total = duration_us = p50_us = p99_us = 0
    for line in out.splitlines():
        words = line.split()
        if words[:1] == ["STATUS"]:
            statuses[int(words[1])] = statuses.get(int(words[1]), 0) + int(words[2])
        elif words[:1] == ["TOTAL"]:
            total, duration_us, p50_us, p99_us = (int(w) for w in words[1:5])
    errors = sum(statuses.values()) + (1 if "Socket errors" in out else 0)
    ok = total - sum(statuses.values())
    elapsed = duration_us / 1e6 if duration_us else float(seconds)
    return {
        "ok": ok,
        "errors": errors,
        "statuses": statuses,
        "seconds": elapsed,
        "rps": ok / elapsed,
        "p50": p50_us / 1000,
        "p99": p99_us / 1000,
    }


# --- servers (each `bench_api.py --serve-...` in a subprocess, or `arcext serve`) ---------------------------


def minimal_app(payload: dict[str, Any]) -> Any:
    from flask import Flask, request

    app = Flask("minimal")

    @app.get("/item")
    def item() -> dict[str, Any]:
        return payload

    @app.patch("/item")
    def patch_item() -> dict[str, Any]:
        changes = request.get_json()
        return payload | {"tags": changes.get("tags", {})}

    return app


def serve_minimal(payload_file: Path, threads: int) -> None:
    """The minimal app on the production server, with `arcext serve`'s options."""
    from arcext.serving_gunicorn import ServeOptions, WorkerApp, WorkerContext, serve

    payload = json.loads(payload_file.read_text())

    def factory(context: WorkerContext) -> WorkerApp:
        if context.first:
            print(f"minimal listening on {context.url}", flush=True)
        return WorkerApp(minimal_app(payload))

    serve(factory, ServeOptions(port=0, threads=threads))


def serve_werkzeug(data_dir: Path) -> None:
    """arcext on Werkzeug's threaded server, as `arcext serve` ran before; stops on SIGTERM."""
    from arcext.app import create_app
    from arcext.logging_setup import configure
    from arcext.serving import ServerThread, tune_gc_for_serving

    configure("text")
    tune_gc_for_serving()
    app = create_app({"ARCEXT_DATA_DIR": str(data_dir), "ARCEXT_SIMULATE": True})
    server = ServerThread(app).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print(f"werkzeug listening on {server.url}", flush=True)
    stopped.wait()
    server.stop()
    app.extensions["arcext"].close()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(name: str, command: list[str], log_dir: Path) -> Server:
    out_path = log_dir / f"{name}.out"
    with open(out_path, "wb") as out, open(log_dir / f"{name}.err", "wb") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = LISTENING.search(out_path.read_text())
        if found:
            return Server(name, proc, found.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{name} did not start: {(log_dir / f'{name}.err').read_text()[-2000:]}")


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a server process and its children (gunicorn's workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return float("nan")
    total = 0
    for p in pids:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def settled_cpu(pid: int, limit: float = 60.0) -> float:
    """The server's CPU seconds once it has gone quiet (under 2% of a core for half a second, at most ``limit``
    seconds of waiting): a PATCH's upgrade runs after its 202, and its CPU belongs to that PATCH's run, not to
    whichever run comes next."""
    deadline = time.monotonic() + limit
    before = server_cpu(pid)
    while True:
        time.sleep(0.5)
        now = server_cpu(pid)
        if now - before < 0.01 or time.monotonic() > deadline:
            return now
        before = now


def load(spec: dict[str, Any], generator: str = "python", work: Path | None = None) -> dict[str, Any]:
    """One load phase: by wrk, or in a fresh Python client process."""
    if generator == "wrk":
        assert work is not None
        return wrk_run(spec, work)
    out = subprocess.run(
        [sys.executable, __file__, "--client"], input=json.dumps(spec), capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@dataclass
class Scenario:
    label: str
    server: Server
    paths: list[str]
    method: str
    token: str | None
    body: dict[str, Any] | None

    def spec(self, connections: int, seconds: float) -> dict[str, Any]:
        return {
            "base": self.server.url,
            "paths": self.paths,
            "method": self.method,
            "token": self.token,
            "body": self.body,
            "connections": connections,
            "seconds": seconds,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extensions", type=int, default=100_000)
    parser.add_argument("--machines", type=int, help="default: extensions / 4")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive client threads")
    parser.add_argument("--threads", type=int, default=16, help="the production server's threads per worker")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each scenario")
    parser.add_argument("--urls", type=int, default=2000, help="distinct extensions to GET and PATCH")
    parser.add_argument(
        "--load-generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk when it is on the PATH, else the Python client",
    )
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-minimal", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-werkzeug", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.client:
        print(json.dumps(client_run(json.loads(sys.stdin.read()))))
        return 0
    if args.serve_minimal:
        serve_minimal(args.serve_minimal, args.threads)
        return 0
    if args.serve_werkzeug:
        serve_werkzeug(args.serve_werkzeug)
        return 0

    from arcext.app import create_app
    from arcext.auth import Role

    generator = args.load_generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    elif generator == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not on the PATH (apt-get install wrk)")
    bench_store = _bench_store()
    machines = args.machines or max(1, args.extensions // 4)
    work = Path(tempfile.mkdtemp(prefix="arcext-bench-api-"))
    production_dir, werkzeug_dir = work / "production", work / "werkzeug"
    servers: list[Server] = []
    try:
        print(f"arcext API benchmark: {args.extensions:,} extensions on {machines:,} machines in {work}")
        t0 = time.perf_counter()
        layout = bench_store.build_store(production_dir, machines, args.extensions)
        print(f"  store built in {time.perf_counter() - t0:.1f} s")
        rng = random.Random(7)
        picks = [(key, name) for key, names in layout for name in names]
        picks = rng.sample(picks, min(args.urls, len(picks)))
        paths = [f"{key.extension_id(name)}?api-version={API_VERSION}" for key, name in picks]

        app = create_app({"ARCEXT_DATA_DIR": str(production_dir)})
        svc = app.extensions["arcext"]
        token, _record = svc.tokens.create(Role.OWNER, "/", "bench-owner", svc.clock.now())
        check = app.test_client().get(paths[0], headers={"Authorization": f"Bearer {token}"})
        assert check.status_code == 200, check.get_data(as_text=True)
        payload = check.get_json()
        svc.close()
        shutil.copytree(production_dir, werkzeug_dir)
        (work / "payload.json").write_text(json.dumps(payload))
        print(f"  GET of one extension: {len(check.get_data())} bytes; the minimal endpoint returns the same JSON")

        t0 = time.perf_counter()
        me = [sys.executable, __file__]
        threads = ["--threads", str(args.threads)]
        arcext_cli = [sys.executable, "-m", "arcext.cli", "serve", "--port", "0", "--simulate", *threads]
        production = start("production", [*arcext_cli, "--data-dir", str(production_dir)], work)
        servers.append(production)
        minimal = start("minimal", [*me, "--serve-minimal", str(work / "payload.json"), *threads], work)
        servers.append(minimal)
        werkzeug = start("werkzeug", [*me, "--serve-werkzeug", str(werkzeug_dir)], work)
        servers.append(werkzeug)
        print(f"  servers started in {time.perf_counter() - t0:.1f} s (production: {args.threads} threads)")

        patch = {"properties": {"settings": {"bench": True}}}
        scenarios = [
            Scenario("GET extension, arcext on gunicorn", production, paths, "GET", token, None),
            Scenario("GET extension, arcext on Werkzeug", werkzeug, paths, "GET", token, None),
            Scenario("GET minimal Flask app on gunicorn", minimal, ["/item"], "GET", None, None),
            Scenario("PATCH extension, arcext on gunicorn", production, paths, "PATCH", token, patch),
            Scenario("PATCH extension, arcext on Werkzeug", werkzeug, paths, "PATCH", token, patch),
            Scenario("PATCH minimal Flask app on gunicorn", minimal, ["/item"], "PATCH", None, patch),
        ]
        warm = min(1.0, args.seconds)
        print(
            f"  load generator: {generator}" + ("" if generator == "wrk" else " (wrk not found: apt-get install wrk)")
        )
        for scenario in scenarios:
            load(scenario.spec(args.connections, warm), generator, work)

        runs: dict[str, list[dict[str, Any]]] = {s.label: [] for s in scenarios}
        for r in range(args.rounds):
            order = scenarios if r % 2 == 0 else list(reversed(scenarios))
            for scenario in order:
                for server in servers:  # no run shares the cores with another server's leftover work
                    settled_cpu(server.proc.pid)
                cpu0 = server_cpu(scenario.server.proc.pid)
                res = load(scenario.spec(args.connections, args.seconds), generator, work)
                res["cpu_us"] = (settled_cpu(scenario.server.proc.pid) - cpu0) / max(res["ok"], 1) * 1e6
                runs[scenario.label].append(res)
                print(
                    f"  round {r + 1} {scenario.label:<38} {res['rps']:>8.1f} req/s  p50 {res['p50']:>6.1f} ms  "
                    f"p99 {res['p99']:>6.1f} ms  server CPU {res['cpu_us']:>6.1f} us/req  "
                    f"({res['ok']:,} ok, {res['errors']} errors {res['statuses'] or ''})",
                    flush=True,
                )

        median = {
            label: {k: statistics.median(run[k] for run in results) for k in ("rps", "p50", "p99", "cpu_us")}
            for label, results in runs.items()
        }
        errors = {label: sum(run["errors"] for run in results) for label, results in runs.items()}
        print(
            f"results ({args.connections} keep-alive connections, {args.rounds} x {args.seconds:g} s each, "
            f"median of the runs):"
        )
        print(f"  {'':<38} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server CPU us/req':>18}")
        for label, figures in median.items():
            print(
                f"  {label:<38} {figures['rps']:>9.1f} {figures['p50']:>8.2f} {figures['p99']:>8.2f}"
                f" {figures['cpu_us']:>18.1f}"
            )

        def ratio(a: str, b: str) -> float:
            return median[a]["rps"] / median[b]["rps"] if median[b]["rps"] else float("nan")

        for verb in ("GET", "PATCH"):
            arcext_vs_minimal = ratio(f"{verb} extension, arcext on gunicorn", f"{verb} minimal Flask app on gunicorn")
            verdict = "PASS" if arcext_vs_minimal >= TARGET_ARCEXT_VS_MINIMAL else "FAIL"
            target = f"target >= {TARGET_ARCEXT_VS_MINIMAL} {verdict}" if verb == "GET" else "(information)"
            print(f"  ratio arcext / minimal ({verb}, gunicorn)       {arcext_vs_minimal:>7.3f}   {target}")
            cpu = (
                median[f"{verb} minimal Flask app on gunicorn"]["cpu_us"]
                / median[f"{verb} extension, arcext on gunicorn"]["cpu_us"]
            )
            print(f"    the same by server CPU per request                {cpu:>7.3f}   (information)")
        for verb in ("GET", "PATCH"):
            speedup = ratio(f"{verb} extension, arcext on gunicorn", f"{verb} extension, arcext on Werkzeug")
            verdict = "PASS" if speedup >= TARGET_PRODUCTION_VS_WERKZEUG else "FAIL"
            print(
                f"  ratio gunicorn / Werkzeug ({verb} extension)     {speedup:>7.3f}   "
                f"target >= {TARGET_PRODUCTION_VS_WERKZEUG} {verdict}"
            )
            cpu = (
                median[f"{verb} extension, arcext on Werkzeug"]["cpu_us"]
                / median[f"{verb} extension, arcext on gunicorn"]["cpu_us"]
            )
            print(f"    the same by server CPU per request                {cpu:>7.3f}   (information)")
        if any(errors.values()):
            print(f"  non-2xx answers or errors: {errors}")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
