"""The operation runner's rules about claims (arcext.operations), on a store that answers as a cluster's may:
an operation another holder claims is not resumed at start; a take-over reads the record again under the claim
and leaves an operation that ended meanwhile; every operation run is released, the upgrade engine's are never
touched. The cluster's claims themselves: tests/test_operations_multinode.py."""

from __future__ import annotations

import threading
from typing import Any, cast

from arcext.operations import FAILED, IN_PROGRESS, SUCCEEDED, LocalClaims, OperationRunner
from arcext.records import OperationRecord
from arcext.store.base import Store


def record(op_id: str, status: str = IN_PROGRESS, kind: str = "extension.create") -> OperationRecord:
    return cast(
        OperationRecord, {"id": op_id, "kind": kind, "status": status, "startTime": f"2026-01-01T00:00:0{op_id[-1]}Z"}
    )


class Records:
    """The operations' part of a store: ``listed`` is what a look at the InProgress ones answers (possibly stale),
    ``current`` what reading one record answers."""

    def __init__(self, listed: list[OperationRecord], current: dict[str, OperationRecord]) -> None:
        self.listed = listed
        self.current = current

    def list_operations(self, status: str | None = None) -> list[OperationRecord]:
        return [o for o in self.listed if status is None or o["status"] == status]

    def get_operation(self, op_id: str) -> OperationRecord | None:
        return self.current.get(op_id)


class Takeable(LocalClaims):
    """One process's claims, with ``others`` held by another node and ``free`` reported as takeable."""

    def __init__(self, others: set[str], free: list[str]) -> None:
        super().__init__()
        self.others = others
        self.free = free
        self.released: list[str] = []

    def claim(self, op_id: str) -> bool:
        return op_id not in self.others and super().claim(op_id)

    def release(self, op_id: str) -> None:
        self.released.append(op_id)
        super().release(op_id)

    def takeable(self, op_ids: list[str]) -> list[str]:
        return [o for o in op_ids if o in self.free]


def runner(records: Records, claims: Takeable) -> tuple[OperationRunner, list[str]]:
    ran: list[str] = []
    lock = threading.Lock()

    def complete(op_id: str) -> None:
        with lock:
            ran.append(op_id)

    return OperationRunner(cast(Store, cast(Any, records)), complete, claims), ran


def test_start_resumes_only_what_it_can_claim_and_never_the_engine_s_upgrades() -> None:
    ops = [record("op1"), record("op2"), record("op3", kind="extension.upgrade")]
    records = Records(ops, {o["id"]: o for o in ops})
    claims = Takeable(others={"op2"}, free=[])
    run, ran = runner(records, claims)
    run.start()
    try:
        assert run.wait_idle(5)
        assert ran == ["op1"]  # op2 is another node's; op3 belongs to the upgrade engine
        assert claims.released == ["op1"]  # released once it ran
    finally:
        run.stop()


def test_a_take_over_reads_the_record_again_under_the_claim() -> None:
    # the look listed both InProgress; op5 ended (its holder finished it) before this node claimed it
    listed = [record("op4"), record("op5")]
    records = Records(listed, {"op4": record("op4"), "op5": record("op5", status=SUCCEEDED)})
    claims = Takeable(others=set(), free=["op4", "op5"])
    run, ran = runner(records, claims)
    claims.others = {"op4", "op5"}  # held by their node at start: not resumed
    run.start()
    try:
        assert run.wait_idle(5) and ran == []
        claims.others = set()  # that node is gone
        assert run.take_over() == ["op4"]
        assert run.wait_idle(5)
        assert ran == ["op4"]
        assert sorted(claims.released) == ["op4", "op5"]  # op5 given back unrun, op4 once it ran
        records.current["op4"] = record("op4", status=FAILED)
        assert run.take_over() == []  # listed again (stale), ended: nothing to run
        assert ran == ["op4"]
    finally:
        run.stop()
