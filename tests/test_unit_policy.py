"""Unit tests of the one eligibility rule (arcext.upgrades.policy): every reason, in its order, and the
newest version of the same major."""

from __future__ import annotations

from typing import Any

import pytest

from arcext.records import ExtensionRecord, UpgradeJob
from arcext.upgrades import policy
from arcext.upgrades.policy import (
    DISABLED,
    DROPPED_OUT,
    MAJOR_CHANGE,
    NO_VERSION,
    NOT_SUPPORTED,
    REASON_TEXT,
    UP_TO_DATE,
    auto_upgrade_view,
    handler_matches,
    ineligibility,
    newest_of_major,
    run_ineligibility,
    supports_auto_upgrade,
    type_supports_auto_upgrade,
)


def _record(version: str | None = "1.2", enabled: bool | None = True, dropped: bool = False) -> ExtensionRecord:
    props: dict[str, Any] = {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent"}
    if version is not None:
        props["typeHandlerVersion"] = version
    if enabled is not None:
        props["enableAutomaticUpgrade"] = enabled
    record: ExtensionRecord = {
        "resource": {"id": "/x/extensions/ama", "name": "ama", "properties": props},
        "protected": None,
        "operation": None,
    }
    if dropped:
        record["droppedOut"] = True
    return record


class _Catalog:
    """Answers get_type from a table and counts the questions."""

    def __init__(self, supported: bool | None) -> None:
        self.supported = supported
        self.asked = 0

    def get_type(self, publisher: str, type_: str) -> dict[str, Any] | None:
        self.asked += 1
        if self.supported is None:
            return None
        return {"publisher": publisher, "type": type_, "autoUpgradeSupported": self.supported}


def test_an_opted_in_extension_behind_in_its_major_is_eligible() -> None:
    assert ineligibility(_record("1.2"), True, "1.3") is None
    assert ineligibility(_record("1.9"), True, "1.10") is None
    assert ineligibility(_record("1.2", enabled=None), True, "1.3") is None  # enabled by default


@pytest.mark.parametrize(
    ("record", "supported", "target", "reason"),
    [
        (_record("1.2"), False, "1.3", NOT_SUPPORTED),
        (_record("1.2", enabled=False), True, "1.3", DISABLED),
        (_record("1.2", dropped=True), True, "1.3", DROPPED_OUT),
        (_record(None), True, "1.3", NO_VERSION),
        (_record(""), True, "1.3", NO_VERSION),
        (_record("1.2"), True, "2.0", MAJOR_CHANGE),
        (_record("2.0"), True, "1.9", MAJOR_CHANGE),
        (_record("1.3"), True, "1.3", UP_TO_DATE),
        (_record("1.10"), True, "1.10.0", UP_TO_DATE),
        (_record("1.10"), True, "1.9", UP_TO_DATE),
    ],
)
def test_every_reason(record: ExtensionRecord, supported: bool, target: str, reason: str) -> None:
    assert ineligibility(record, supported, target) == reason


def test_reasons_come_in_order() -> None:
    # an unsupported type wins over everything; opting out wins over the version checks
    assert ineligibility(_record(None, enabled=False, dropped=True), False, "2.0") == NOT_SUPPORTED
    assert ineligibility(_record(None, enabled=False, dropped=True), True, "2.0") == DISABLED
    assert ineligibility(_record(None, dropped=True), True, "2.0") == DROPPED_OUT
    assert ineligibility(_record("1.0", dropped=True), True, "1.0") == DROPPED_OUT


def test_every_reason_has_words_for_the_pending_view() -> None:
    reasons = {DISABLED, NOT_SUPPORTED, MAJOR_CHANGE, UP_TO_DATE, DROPPED_OUT, NO_VERSION}
    assert set(REASON_TEXT) == reasons
    assert all(REASON_TEXT[r] and REASON_TEXT[r] != r for r in reasons)


def test_type_support_from_the_catalog_record() -> None:
    assert type_supports_auto_upgrade({"autoUpgradeSupported": True})
    assert not type_supports_auto_upgrade({"autoUpgradeSupported": False})
    assert not type_supports_auto_upgrade({})
    assert not type_supports_auto_upgrade(None)
    assert supports_auto_upgrade(_Catalog(True), _record())
    assert not supports_auto_upgrade(_Catalog(False), _record())
    assert not supports_auto_upgrade(_Catalog(None), _record())


def _job(manual: bool, attempt: int = 1) -> UpgradeJob:
    job: UpgradeJob = {"toVersion": "1.3", "state": "Queued", "attempt": attempt}
    if manual:
        job["manualOperation"] = "op-1"
    return job


def test_a_manual_first_attempt_always_runs_without_asking_the_catalog() -> None:
    catalog = _Catalog(False)
    for record in (_record(enabled=False), _record(dropped=True), _record()):
        assert run_ineligibility(record, _job(manual=True), catalog) is None
    assert catalog.asked == 0


def test_a_manual_retry_stops_when_the_extension_opted_out_but_not_for_the_type() -> None:
    catalog = _Catalog(False)
    assert run_ineligibility(_record(enabled=False), _job(True, 2), catalog) == DISABLED
    assert run_ineligibility(_record(dropped=True), _job(True, 2), catalog) == DROPPED_OUT
    assert run_ineligibility(_record(), _job(True, 2), catalog) is None


def test_an_automatic_job_stops_when_opted_out_or_the_type_no_longer_supports_it() -> None:
    assert run_ineligibility(_record(), _job(False), _Catalog(True)) is None
    assert run_ineligibility(_record(), _job(False), _Catalog(False)) == NOT_SUPPORTED
    assert run_ineligibility(_record(), _job(False), _Catalog(None)) == NOT_SUPPORTED
    assert run_ineligibility(_record(enabled=False), _job(False), _Catalog(True)) == DISABLED
    assert run_ineligibility(_record(dropped=True), _job(False), _Catalog(True)) == DROPPED_OUT


def test_newest_of_major() -> None:
    versions = ["1.2", "1.9", "1.10", "2.0", "2.1.1", "10.0"]
    assert newest_of_major(versions, "1.3") == "1.10"
    assert newest_of_major(versions, "1.10.0") == "1.10"  # may equal the current version
    assert newest_of_major(versions, "2.0") == "2.1.1"
    assert newest_of_major(list(reversed(versions)), "1.0") == "1.10"  # any input order
    assert newest_of_major(versions, "10.0") == "10.0"  # "1" is not a prefix match of "10"
    assert newest_of_major(versions, "3.0") is None
    assert newest_of_major(versions, "") is None
    assert newest_of_major([], "1.0") is None


def test_auto_upgrade_view_and_handler_match() -> None:
    assert auto_upgrade_view(_record(), True) == "Enabled"
    assert auto_upgrade_view(_record(enabled=False), True) == "Disabled"
    assert auto_upgrade_view(_record(), False) == "Not supported"
    assert handler_matches(_record(), "microsoft.azure.monitor", "AZUREMONITORLINUXAGENT")
    assert not handler_matches(_record(), "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent")
    assert policy.UP_TO_DATE == "UpToDate"
