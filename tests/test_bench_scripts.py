"""Smoke test of the benchmark scripts at tiny sizes: they run and print every figure (no timing asserted)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
NUMBER = r"\d+(?:\.\d+)?"


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_bench_store_prints_every_figure() -> None:
    out = run("bench_store.py", "--machines", "12", "--extensions", "40", "--samples", "20")
    assert "40 extensions on 12 machines" in out
    assert re.search(rf"build: {NUMBER} s for 12 machines / 40 extensions", out), out
    for label, unit in [
        (r"PATCH extension p50", "ms"),
        (r"PATCH extension p99", "ms"),
        (r"GET extension p50", "ms"),
        (r"list machine's extensions p50", "ms"),
        (r"cold start: TinyDBStore\(dir\) in a new process", "s"),
    ]:
        assert re.search(rf"{label}.*?\s{NUMBER} {unit}\s+target <= {NUMBER} {unit}\s+(PASS|FAIL)", out), (label, out)
    assert re.search(r"^overall: (PASS|FAIL)", out, re.MULTILINE), out


@pytest.mark.slow
@pytest.mark.parametrize(
    "generator",
    [
        "python",
        pytest.param(
            "wrk",
            marks=pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"),
        ),
    ],
)
def test_bench_api_prints_both_rates_and_ratio(generator: str) -> None:
    out = run(
        "bench_api.py",
        "--load-generator",
        generator,
        # enough extensions that no client thread PATCHes one again while its last PATCH's operation runs
        # (a 409 AnotherOperationInProgress is then an error of the bench, as it would be of a client)
        "--extensions",
        "400",
        "--machines",
        "10",
        "--seconds",
        "0.3",
        "--rounds",
        "1",
        "--connections",
        "2",
        "--threads",
        "2",
        "--urls",
        "400",
    )
    assert re.search(r"GET of one extension: \d+ bytes", out), out
    for verb in ("GET", "PATCH"):
        for label in (
            f"{verb} extension, arcext on gunicorn",
            f"{verb} extension, arcext on Werkzeug",
            f"{verb} minimal Flask app on gunicorn",
        ):
            # req/s, p50, p99, server CPU per request
            assert re.search(rf"{label}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\n", out), (label, out)
    assert re.search(rf"ratio arcext / minimal \(GET, gunicorn\)\s+{NUMBER}\s+target >= 0.7 (PASS|FAIL)", out), out
    assert re.search(rf"ratio gunicorn / Werkzeug \(GET extension\)\s+{NUMBER}\s+target >= 1.5 (PASS|FAIL)", out), out
    assert f"load generator: {generator}" in out, out
    assert "errors" not in out.split("results")[1], out
