"""Smoke test of scripts/bench_harness.py at tiny sizes: it runs and prints every figure (no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_harness.py"
MS = r"median\s+\d+\.\d+ ms\s+max\s+\d+\.\d+ ms"


@pytest.mark.slow
def test_bench_harness_prints_every_figure() -> None:
    args = ["--fleet", "50", "--requests", "5", "--operations", "3", "--before", "1"]
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for label in (
        r"fixture \(loopback HTTP\): one request",
        r"fixture \(loopback HTTP\): one LRO",
        r"mock_arc \(in-process, default polling_interval\): one request",
        r"mock_arc \(in-process, default polling_interval\): one LRO",
        r"fixture, data on disk instead of tmpfs: one LRO",
        r"before \(data on disk, Retry-After: 1, not settled\): one LRO",
        r"ArcextServer\(\) start \+ stop",
        r"mock_arc\(\) enter \+ exit",
        r"after a test that made 10 machines",
        r"holding 50 machines with one extension each",
    ):
        assert re.search(rf"{label}[^\n]*{MS}", done.stdout), (label, done.stdout)
