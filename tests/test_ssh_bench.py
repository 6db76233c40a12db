"""scripts/bench_hosts.py --driver ssh at a tiny size against the real loopback sshd: every host is
upgraded (read from the files on each handler root) and the figures are printed."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sshd import skip_reason

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_hosts_driver_ssh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    bench = _load("bench_hosts_ssh")
    result = bench.run_bench(hosts=2, concurrency=2, root=tmp_path)
    assert result["summary"]["succeeded"] == 2 and result["upgraded"] == 2, result
    assert result["stats"]["connections"] == 2, "one SSH connection per host per job"
    report = bench.format_report(result)
    channels = re.search(r"SSH channels per upgrade\s+(\d+(?:\.\d+)?)", report)
    assert channels is not None and 5 <= float(channels.group(1)) <= 20, report
    assert "every host upgraded                       2 of 2    PASS" in report
    assert re.search(r"upgrades per second\s+\d+\.\d+ /s", report)
    # the --driver switch of scripts/bench_hosts.py routes to it (and keeps psrp as the default)
    main = _load("bench_hosts")
    assert main.main(["--driver", "ssh", "--hosts", "1", "--concurrency", "1", "--root", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "fleet: 1 Linux hosts" in out and "overall: PASS" in out
