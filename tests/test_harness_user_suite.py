"""The harness as a user drops it in: ten user tests through the fixtures, in a pytest run of their own, pass.

How long that run takes is a figure of scripts/bench_harness.py (``--user-suite``), not a test's budget.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness_user_suite import SUITES, run_inner


@pytest.mark.parametrize("label", sorted(SUITES))
def test_ten_user_tests_pass_through_the_fixtures(tmp_path: Path, label: str) -> None:
    _wall, costs = run_inner(tmp_path, SUITES[label])
    assert sorted(costs) == [
        "create extension (LRO)",
        "create machine (1 request)",
        "turn automatic upgrade off (LRO)",
    ]
    assert all(len(values) == 10 for values in costs.values())
