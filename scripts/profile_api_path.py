#!/usr/bin/env python
"""In-process cost of bench_api.py's GET: arcext's WSGI app (and the minimal Flask app) called directly.

No server, no sockets: each request is a call of the app with an environ like the one gunicorn builds for
``GET <extension id>?api-version=...`` with a bearer token (and ``GET /item`` for bench_api's minimal app),
its body read and closed, as a WSGI server does. The request log line goes to a regular file through
arcext.logging_setup (what ``arcext serve`` does when its stderr is redirected to a file, as bench_api does).
Reports microseconds per request: the minimum over ``--rounds`` rounds of ``--requests`` requests each, the two
apps alternating round by round. ``--profile cprofile|yappi`` then profiles ``--requests`` requests of the arcext
app and prints the top functions. Figures, not a test.

    .venv/bin/python scripts/profile_api_path.py
    .venv/bin/python scripts/profile_api_path.py --profile cprofile --sort tottime --top 40
    .venv/bin/python scripts/profile_api_path.py --no-log        # without the request's log line
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote

API_VERSION = "2024-07-10"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _script(name: str) -> ModuleType:
    """A sibling script as a module (scripts/ is not a package)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"arcext_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def environ_for(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """The environ gunicorn's gthread worker gives the app for a GET of ``url`` on a keep-alive connection."""
    path, _, query = url.partition("?")
    environ: dict[str, Any] = {
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": None,
        "wsgi.input_terminated": True,
        "SERVER_SOFTWARE": "gunicorn/23.0.0",
        "gunicorn.socket": None,
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": query,
        "RAW_URI": url,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "PATH_INFO": unquote(path),
        "SCRIPT_NAME": "",
        "wsgi.url_scheme": "http",
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


class Caller:
    """Calls a WSGI app as a server does (start_response, every chunk read, close), checking the status."""

    def __init__(self, app: WSGIApp, environs: list[dict[str, Any]]) -> None:
        self.app = app
        self.environs = environs
        self.status = ""
        self.size = 0

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status = status
        return None

    def one(self, template: dict[str, Any]) -> None:
        environ = dict(template)  # the app may write to its environ (PATH_INFO, werkzeug.request)
        environ["wsgi.input"] = io.BytesIO(b"")
        result = self.app(environ, self._start_response)
        try:
            size = 0
            for chunk in result:
                size += len(chunk)
            self.size = size
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not self.status.startswith("200"):
            raise RuntimeError(f"{environ['PATH_INFO']}: {self.status}")

    def run(self, n: int) -> float:
        """Seconds for ``n`` requests over the prepared environs (round-robin)."""
        environs = self.environs
        count = len(environs)
        one = self.one
        started = time.perf_counter()
        for i in range(n):
            one(environs[i % count])
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extensions", type=int, default=4000)
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--urls", type=int, default=500, help="distinct extensions the GETs walk")
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-log", action="store_true", help="requests log nothing (level WARNING)")
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    parser.add_argument("--profile", choices=["cprofile", "yappi"], help="then profile the arcext app")
    parser.add_argument("--sort", default="tottime", help="cProfile's sort key (tottime, cumulative, ...)")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--callers", help="cProfile: also print the callers of functions matching this regex")
    args = parser.parse_args(argv)
    if args.profile == "yappi" and importlib.util.find_spec("yappi") is None:
        parser.error("yappi is not installed (pip install yappi), or use --profile cprofile")

    import random

    from arcext.app import create_app
    from arcext.auth import Role
    from arcext.logging_setup import configure
    from arcext.serving import tune_gc_for_serving

    bench_store = _script("bench_store")
    bench_api = _script("bench_api")
    work = Path(tempfile.mkdtemp(prefix="arcext-profile-api-"))
    log_file = open(work / "server.log", "w")  # noqa: SIM115 - open for the run
    handler = configure(args.log_format, level=logging.WARNING if args.no_log else logging.INFO, stream=log_file)
    try:
        tune_gc_for_serving()
        layout = bench_store.build_store(work / "data", args.machines, args.extensions)
        picks = [(key, name) for key, names in layout for name in names]
        picks = random.Random(7).sample(picks, min(args.urls, len(picks)))
        urls = [f"{key.extension_id(name)}?api-version={API_VERSION}" for key, name in picks]
        app = create_app({"ARCEXT_DATA_DIR": str(work / "data"), "ARCEXT_SIMULATE": True})
        svc = app.extensions["arcext"]
        token, _record = svc.tokens.create(Role.OWNER, "/", "bench-owner", svc.clock.now())
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        arcext = Caller(app, [environ_for(u, headers) for u in urls])
        payload = app.test_client().get(urls[0], headers=headers).get_json()
        minimal = Caller(bench_api.minimal_app(payload), [environ_for("/item", {"Content-Type": "application/json"})])
        for caller in (arcext, minimal):
            caller.run(args.requests // 4)  # warm: caches, the allocator

        root = logging.getLogger()
        level = root.level
        variants = [("arcext", arcext, level), ("minimal", minimal, level)]
        if not args.no_log:
            variants.insert(1, ("arcext, no log line", arcext, logging.WARNING))
        best = {name: float("inf") for name, _caller, _level in variants}
        for _ in range(args.rounds):
            for name, caller, variant_level in variants:
                root.setLevel(variant_level)
                best[name] = min(best[name], caller.run(args.requests) / args.requests * 1e6)
        root.setLevel(level)
        log_note = "no log line" if args.no_log else f"{args.log_format} log line to a file"
        print(f"in-process GET ({log_note}; min of {args.rounds} rounds of {args.requests}, alternating):")
        for name, caller, _level in variants:
            print(f"  {name:<22} {best[name]:7.1f} us/request ({caller.size} bytes)")
        print(f"  arcext / minimal       {best['arcext'] / best['minimal']:7.2f}")

        if args.profile == "cprofile":
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            arcext.run(args.requests)
            profiler.disable()
            stats = pstats.Stats(profiler).sort_stats(args.sort)
            stats.print_stats(args.top)
            if args.callers:
                stats.print_callers(args.callers)
        elif args.profile == "yappi":
            import yappi  # type: ignore[import-untyped,import-not-found,unused-ignore]  # pip install yappi

            yappi.set_clock_type("cpu")
            yappi.start()
            arcext.run(args.requests)
            yappi.stop()
            yappi.get_func_stats().sort("tsub").print_all(
                columns={0: ("name", 80), 1: ("ncall", 10), 2: ("tsub", 10), 3: ("ttot", 10), 4: ("tavg", 10)}
            )
        svc.close()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()  # its queued lines go to the file before the file closes
        log_file.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
