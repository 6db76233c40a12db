"""scripts/bench_hosts.py at a tiny size: every host is upgraded, exactly one runspace pool is opened
per host per job (asserted on the fake hosts' own counters), and the script prints every figure."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_hosts.py"
NUMBER = r"\d+(?:\.\d+)?"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_hosts", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_hosts"] = module
    spec.loader.exec_module(module)
    return module


def test_one_pool_per_host_per_job_on_the_fake_hosts_own_counters(tmp_path: Path) -> None:
    bench = _load()
    result = bench.run_bench(hosts=3, concurrency=2, auth="basic", root=tmp_path)
    assert result.summary["succeeded"] == 3, result.summary
    assert len(result.fakes) == 3
    for fake, figures in zip(result.fakes, result.per_host, strict=True):
        # the host's own model: the new version alone, enabled; the handler commands of one upgrade
        assert fake.machine.versions(bench.HANDLER) == {"1.1.0": "Enabled"}
        assert fake.machine.commands(bench.HANDLER)[2:] == [
            ("1.0.0", "disable"),
            ("1.1.0", "update"),
            ("1.0.0", "uninstall"),
            ("1.1.0", "install"),
            ("1.1.0", "enable"),
        ]
        # the host's own counters, during the engine run: one shell (pool) created, one deleted
        assert figures.pools_opened == 1, (fake.name, figures)
        assert figures.actions["Create"] == 1 and figures.actions["Delete"] == 1, figures.actions
        assert fake.server.open_shells() == [], "the driver closed its pool"
        assert figures.round_trips > 0
    # install (1 pool) + upgrade (1 pool) over the host's whole life
    assert [f.server.pools_opened for f in result.fakes] == [2, 2, 2]

    report = bench.format_report(result)
    trips = re.search(rf"WS-Management round trips per upgrade\s+({NUMBER})", report)
    assert trips is not None, report
    expected = sum(len(f.server.actions) for f in result.fakes) / 3  # whole life, so >= the run's share
    assert 0 < float(trips.group(1)) <= expected, report
    assert re.search(r"runspace pools opened per host per job\s+min 1 max 1\s+PASS", report), report
    assert re.search(r"every host upgraded\s+3 of 3\s+PASS", report), report
    assert report.rstrip().endswith("overall: PASS"), report


def test_the_script_prints_every_figure_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--hosts", "2", "--concurrency", "2", "--auth", "ntlm"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "fleet: 2 fake hosts (NTLM + message encryption over http)" in out, out
    for pattern in [
        rf"total wall time \(engine/run\)\s+{NUMBER} s",
        rf"upgrades per second\s+{NUMBER} /s",
        rf"WS-Management round trips per upgrade\s+{NUMBER}",
        r"per action: .*Create 1\.0",
        r"runspace pools opened per host per job\s+min 1 max 1\s+PASS",
        r"every host upgraded\s+2 of 2\s+PASS",
        r"^overall: PASS$",
    ]:
        assert re.search(pattern, out, re.MULTILINE), (pattern, out)


@pytest.mark.parametrize("driver", ["psrp", "winrm"])
def test_an_upgrade_takes_at_most_25_round_trips_with_either_driver(tmp_path: Path, driver: str) -> None:
    """Issue 15 item 4, on the fake hosts' own request counters."""
    bench = _load()
    result = bench.run_bench(hosts=2, concurrency=2, auth="basic", root=tmp_path, driver=driver)
    assert result.summary["succeeded"] == 2 and result.upgraded == 2, result.summary
    per_upgrade = result.round_trips / 2
    assert per_upgrade <= 25, (per_upgrade, result.actions)
    assert result.actions["Command"] == 2 * 5, result.actions  # state, upload, three batches per upgrade
    if driver == "psrp":
        assert result.actions["Get"] == 2, "no liveness check before each pipeline (one Get: the max payload size)"
    report = bench.format_report(result)
    assert f"driver {driver}," in report and report.rstrip().endswith("overall: PASS"), report
