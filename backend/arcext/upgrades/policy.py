"""Who may be upgraded automatically to which version, and why not.

Pure functions over an extension record (store shape) and the catalog facts about its type.
"""

from __future__ import annotations

from typing import Any

from ..versions import major, newer

# Reasons an extension is not (or not yet) upgraded automatically, as shown in the pending view.
DISABLED = "AutomaticUpgradeDisabled"
NOT_SUPPORTED = "AutomaticUpgradeNotSupported"
MAJOR_CHANGE = "MajorVersionChange"
UP_TO_DATE = "UpToDate"
DROPPED_OUT = "DroppedOutAfterFailedRollback"
NO_VERSION = "NoVersionInstalled"


def auto_upgrade_view(record: dict[str, Any], supported: bool) -> str:
    """The portal's three values: Enabled, Disabled, Not supported."""
    if not supported:
        return "Not supported"
    return "Enabled" if record["resource"]["properties"].get("enableAutomaticUpgrade", True) else "Disabled"


def ineligibility(record: dict[str, Any], supported: bool, target: str) -> str | None:
    """None when the extension should move to ``target`` automatically, else the reason it should not."""
    props = record["resource"]["properties"]
    if not supported:
        return NOT_SUPPORTED
    if not props.get("enableAutomaticUpgrade", True):
        return DISABLED
    if record.get("droppedOut"):
        return DROPPED_OUT
    current = props.get("typeHandlerVersion")
    if not current:
        return NO_VERSION
    if major(current) != major(target):
        return MAJOR_CHANGE
    if not newer(target, current):
        return UP_TO_DATE
    return None


def handler_matches(record: dict[str, Any], publisher: str, type_: str) -> bool:
    props = record["resource"]["properties"]
    return bool(
        str(props.get("publisher", "")).lower() == publisher.lower()
        and str(props.get("type", "")).lower() == type_.lower()
    )
