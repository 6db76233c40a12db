"""Unit tests of the availability-first rollout planner (arcext.upgrades.planner.plan_waves)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from arcext.clock import iso, parse_iso
from arcext.records import Wave
from arcext.upgrades.planner import Candidate, batch_size, plan_waves

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _fleet(region: str, subscription: str, machines: int, extensions: int = 1, prefix: str = "m") -> list[Candidate]:
    return [
        Candidate(subscription, "rg", f"{prefix}{i:03d}", f"ext{e}", region)
        for i in range(machines)
        for e in range(extensions)
    ]


def _targets(waves: list[Wave]) -> list[tuple[str, ...]]:
    return [tuple(t) for w in waves for b in w["batches"] for t in b["targets"]]


def test_no_candidates_no_waves() -> None:
    assert plan_waves("r", [], 0.2, timedelta(hours=1), START) == []


@pytest.mark.parametrize(
    ("eligible", "fraction", "size"), [(10, 0.2, 2), (9, 0.2, 1), (3, 0.2, 1), (1, 1.0, 1), (100, 0.25, 25)]
)
def test_batch_size_is_a_fraction_of_the_eligible_machines_at_least_one(
    eligible: int, fraction: float, size: int
) -> None:
    assert batch_size(eligible, fraction) == size


def test_one_region_one_subscription_is_cut_into_batches_of_the_fraction() -> None:
    candidates = _fleet("westeurope", "sub-a", 10)
    waves = plan_waves("r1", candidates, 0.2, timedelta(hours=10), START)
    assert [w["index"] for w in waves] == [0, 1, 2, 3, 4]
    assert all(w["phase"] == 0 and w["region"] == "westeurope" and w["state"] == "Pending" for w in waves)
    assert [[len(b["targets"]) for b in w["batches"]] for w in waves] == [[2]] * 5
    # every candidate exactly once
    assert Counter(_targets(waves)) == Counter(tuple(c.target) for c in candidates)


def test_each_subscription_is_batched_by_its_own_size() -> None:
    candidates = _fleet("eastus", "sub-a", 10) + _fleet("eastus", "sub-b", 3)
    waves = plan_waves("r2", candidates, 0.5, timedelta(hours=3), START)
    # sub-a: batches of 5 (2 of them); sub-b: batches of 1 (3 of them): wave k holds the k-th batch of each
    assert len(waves) == 3
    sizes = [{b["subscription"]: len(b["targets"]) for b in w["batches"]} for w in waves]
    assert sizes == [{"sub-a": 5, "sub-b": 1}, {"sub-a": 5, "sub-b": 1}, {"sub-b": 1}]
    for wave in waves:
        for batch in wave["batches"]:
            assert all(t[0] == batch["subscription"] for t in batch["targets"])


def test_regions_are_phases_smallest_first_and_never_share_a_wave() -> None:
    candidates = _fleet("westus", "s", 6, prefix="w") + _fleet("eastus", "s", 2, prefix="e")
    candidates += _fleet("brazilsouth", "s", 2, prefix="b")
    region_of = {c.machine: c.region for c in candidates}
    waves = plan_waves("r3", candidates, 0.5, timedelta(hours=6), START)
    # 2 and 2 machines tie: by name; the 6-machine region last
    assert [(w["phase"], w["region"]) for w in waves] == [
        (0, "brazilsouth"),
        (0, "brazilsouth"),
        (1, "eastus"),
        (1, "eastus"),
        (2, "westus"),
        (2, "westus"),
    ]
    for wave in waves:
        assert {region_of[t[2]] for b in wave["batches"] for t in b["targets"]} == {wave["region"]}


def test_waves_are_spread_evenly_over_the_window() -> None:
    waves = plan_waves("r4", _fleet("westeurope", "s", 4), 0.25, timedelta(hours=8), START)
    assert [parse_iso(w["notBefore"]) - START for w in waves] == [timedelta(hours=h) for h in (0, 2, 4, 6)]
    assert waves[0]["notBefore"] == iso(START)


def test_a_zero_window_makes_every_wave_due_at_once() -> None:
    waves = plan_waves("r5", _fleet("westeurope", "s", 5), 0.2, timedelta(0), START)
    assert len(waves) == 5
    assert {w["notBefore"] for w in waves} == {iso(START)}


def test_a_machines_extensions_travel_in_one_batch() -> None:
    waves = plan_waves("r6", _fleet("westeurope", "s", 6, extensions=3), 0.34, timedelta(hours=1), START)
    assert len(waves) == 3  # batches of 2 machines (6 extensions)
    wave_of_machine: dict[str, set[int]] = {}
    for w in waves:
        assert [len(b["targets"]) for b in w["batches"]] == [6]
        for t in _targets([w]):
            wave_of_machine.setdefault(t[2], set()).add(w["index"])
    assert len(wave_of_machine) == 6
    assert all(len(indexes) == 1 for indexes in wave_of_machine.values())


def test_the_plan_is_reproducible_from_the_rollout_id_and_shuffled_by_it() -> None:
    candidates = _fleet("westeurope", "s", 40)
    first = plan_waves("rollout-a", candidates, 0.1, timedelta(hours=1), START)
    again = plan_waves("rollout-a", list(reversed(candidates)), 0.1, timedelta(hours=1), START)
    assert first == again  # the input order does not matter, the id seeds the shuffle
    other = plan_waves("rollout-b", candidates, 0.1, timedelta(hours=1), START)
    assert Counter(_targets(other)) == Counter(_targets(first))
    assert _targets(other) != _targets(first)
    in_order = [tuple(c.target) for c in sorted(candidates, key=lambda c: c.machine)]
    assert _targets(first) != in_order  # shuffled, not by name
