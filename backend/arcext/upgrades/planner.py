"""Availability-first rollout plans.

Phases are regions, smallest first (the least exposure goes first, like Azure's canary regions);
a phase starts only when the previous one has completed without tripping the circuit breaker.
Inside a phase each subscription's machines are shuffled (Arc picks at random, seeded by the
rollout id so a plan is reproducible) and cut into batches of at most ``batch_fraction`` of that
subscription's eligible machines in the phase, minimum one. The k-th batch of every subscription
in a phase forms wave k; waves are spread evenly over the rollout's window.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..clock import iso
from ..records import Batch, Wave

Target = list[str]  # [subscription, resource group, machine name, extension key]


@dataclass(frozen=True)
class Candidate:
    subscription: str
    resource_group: str
    machine: str
    extension: str
    region: str

    @property
    def target(self) -> Target:
        return [self.subscription, self.resource_group, self.machine, self.extension]


def batch_size(eligible: int, fraction: float) -> int:
    return max(1, math.floor(eligible * fraction))


def plan_waves(
    rollout_id: str, candidates: list[Candidate], fraction: float, window: timedelta, start: datetime
) -> list[Wave]:
    by_region: dict[str, dict[str, list[Candidate]]] = defaultdict(lambda: defaultdict(list))
    for c in candidates:
        by_region[c.region][c.subscription].append(c)
    rng = random.Random(rollout_id)
    phases = sorted(by_region, key=lambda r: (sum(len(v) for v in by_region[r].values()), r))
    raw: list[tuple[int, str, list[Batch]]] = []
    for phase_index, region in enumerate(phases):
        per_sub: dict[str, list[list[Candidate]]] = {}
        for sub in sorted(by_region[region]):
            # batches are of machines: all of one machine's targets travel together
            machines: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
            for c in sorted(
                by_region[region][sub], key=lambda c: (c.resource_group.lower(), c.machine.lower(), c.extension)
            ):
                machines[(c.resource_group.lower(), c.machine.lower())].append(c)
            order = list(machines)
            rng.shuffle(order)
            size = batch_size(len(order), fraction)
            per_sub[sub] = [[c for m in order[i : i + size] for c in machines[m]] for i in range(0, len(order), size)]
        depth = max(len(b) for b in per_sub.values())
        for k in range(depth):
            batches: list[Batch] = [
                {"subscription": sub, "targets": [c.target for c in batches_of_sub[k]]}
                for sub, batches_of_sub in per_sub.items()
                if k < len(batches_of_sub)
            ]
            raw.append((phase_index, region, batches))
    waves: list[Wave] = []
    total = len(raw)
    for index, (phase_index, region, batches) in enumerate(raw):
        not_before = start + window * (index / total) if total else start
        waves.append(
            {
                "index": index,
                "phase": phase_index,
                "region": region,
                "notBefore": iso(not_before),
                "state": "Pending",
                "batches": batches,
            }
        )
    return waves
