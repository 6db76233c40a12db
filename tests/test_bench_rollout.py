"""Smoke test of scripts/bench_rollout.py at a tiny size: it runs, upgrades every extension and prints
every figure with its verdict (no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_rollout.py"
NUMBER = r"-?\d+(?:\.\d+)?"


def test_bench_rollout_prints_every_figure() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--machines",
            "12",
            "--extensions-per-machine",
            "2",
            "--latency-ms",
            "5",
            "--concurrency",
            "4",
            "--subscriptions",
            "2",
            "--regions",
            "2",
            "--plan-extensions",
            "40",
            "--build-threads",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "rollout fleet: 12 machines x 2 extensions = 24 extensions" in out, out
    assert re.search(r"ran 24 jobs \(24 succeeded, 0 rolled back, 0 not run\), 24 host operations", out), out
    assert "24 of 24 extensions on the new version; rollouts ['Completed']" in out, out
    assert "planning fleet: 10 machines x 4 extensions of one type = 40 extensions" in out, out
    results = out.split("results\n", 1)[1]
    for label, unit, target in [
        (r"rollout wall time", "s", None),
        (r"ideal bound: host ops x latency / concurrency", "s", None),
        (r"wall / ideal", "x", "1.25"),
        (r"engine CPU per job: \(process CPU - host CPU\) / jobs", "ms", "0.5"),
        (r"process CPU per job \(information\)", "ms", None),
        (r"simulated-host CPU per job \(information\)", "ms", None),
        (r"wall overhead per job-slot: \(wall-ideal\) x conc / jobs", "ms", None),
        (r"planning time, 40 extensions \(on_version_published\)", "s", "2"),
    ]:
        pattern = rf"^  {label}\s+{NUMBER} {unit}\s*"
        if target is not None:
            pattern += rf"target <= {target} {unit}\s+(PASS|FAIL)"
        assert re.search(pattern, results, re.MULTILINE), (label, results)
    assert re.search(r"^overall: (PASS|FAIL)$", out, re.MULTILINE), out
