"""Who may be upgraded automatically to which version, and why not: the one eligibility rule.

Pure functions over an extension record (store shape) and the catalog facts about its type. The engine
asks ``ineligibility`` when it plans a rollout, queues a job or lets a late joiner in, and
``run_ineligibility`` at the last moment before a worker runs a job; the pending view shows the same
reasons, worded by ``REASON_TEXT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..records import ExtensionRecord, UpgradeJob
from ..versions import major, newer, newest

# Reasons an extension is not (or not yet) upgraded automatically, as shown in the pending view.
DISABLED = "AutomaticUpgradeDisabled"
NOT_SUPPORTED = "AutomaticUpgradeNotSupported"
MAJOR_CHANGE = "MajorVersionChange"
UP_TO_DATE = "UpToDate"
DROPPED_OUT = "DroppedOutAfterFailedRollback"
NO_VERSION = "NoVersionInstalled"

#: How the pending view words each reason.
REASON_TEXT = {
    DISABLED: "automatic upgrade is disabled for this extension",
    NOT_SUPPORTED: "this extension type does not support automatic upgrade",
    MAJOR_CHANGE: "the newer version is a new major version, which is only applied manually",
    UP_TO_DATE: "the newest published version is installed",
    DROPPED_OUT: "an upgrade failed and reinstalling the previous version failed too; "
    "remove and reinstall the extension, or update it",
    NO_VERSION: "no typeHandlerVersion is recorded",
}


class TypeCatalog(Protocol):
    """What the rule asks of the catalog (``arcext.catalog.Catalog``): a type's record, None if unknown."""

    def get_type(self, publisher: str, type_: str) -> Mapping[str, Any] | None: ...


def type_supports_auto_upgrade(type_record: Mapping[str, Any] | None) -> bool:
    """Whether a catalog type record (``Catalog.get_type``; None for an unknown type) allows automatic upgrades."""
    return bool(type_record and type_record.get("autoUpgradeSupported"))


def supports_auto_upgrade(catalog: TypeCatalog, record: ExtensionRecord) -> bool:
    """Whether the extension's type allows automatic upgrades, per the catalog."""
    props = record["resource"]["properties"]
    return type_supports_auto_upgrade(catalog.get_type(props.get("publisher", ""), props.get("type", "")))


def auto_upgrade_view(record: ExtensionRecord, supported: bool) -> str:
    """The portal's three values: Enabled, Disabled, Not supported."""
    if not supported:
        return "Not supported"
    return "Enabled" if record["resource"]["properties"].get("enableAutomaticUpgrade", True) else "Disabled"


def _opted_out(record: ExtensionRecord) -> str | None:
    """The extension itself is out of automatic upgrades: disabled by its owner, or dropped out after a failed
    rollback."""
    if not record["resource"]["properties"].get("enableAutomaticUpgrade", True):
        return DISABLED
    if record.get("droppedOut"):
        return DROPPED_OUT
    return None


def ineligibility(record: ExtensionRecord, supported: bool, target: str) -> str | None:
    """None when the extension should move to ``target`` automatically, else the reason it should not."""
    if not supported:
        return NOT_SUPPORTED
    opted_out = _opted_out(record)
    if opted_out is not None:
        return opted_out
    current = record["resource"]["properties"].get("typeHandlerVersion")
    if not current:
        return NO_VERSION
    if major(current) != major(target):
        return MAJOR_CHANGE
    if not newer(target, current):
        return UP_TO_DATE
    return None


def run_ineligibility(record: ExtensionRecord, job: UpgradeJob, catalog: TypeCatalog) -> str | None:
    """The last-moment check before a job runs: None if it may run now, else why not.

    A manual upgrade's first attempt always runs (the user asked for it now); its retries stop if the
    extension opted out meanwhile. An automatic job also stops if its type no longer supports automatic
    upgrade (the catalog is asked only then)."""
    manual = bool(job.get("manualOperation"))
    if manual and job.get("attempt", 1) == 1:
        return None
    opted_out = _opted_out(record)
    if opted_out is not None:
        return opted_out
    if not manual and not supports_auto_upgrade(catalog, record):
        return NOT_SUPPORTED
    return None


def newest_of_major(versions: list[str], current: str) -> str | None:
    """The newest of ``versions`` with the same major version as ``current`` (None if ``current`` is empty or
    none shares its major): what an automatic upgrade may reach, a new major being applied only manually."""
    if not current:
        return None
    return newest([v for v in versions if major(v) == major(current)])


def handler_matches(record: ExtensionRecord, publisher: str, type_: str) -> bool:
    props = record["resource"]["properties"]
    return bool(
        str(props.get("publisher", "")).lower() == publisher.lower()
        and str(props.get("type", "")).lower() == type_.lower()
    )
