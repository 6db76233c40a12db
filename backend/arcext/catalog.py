"""The extension catalog: which types exist, which support automatic upgrade, which versions are published."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import errors
from .clock import iso
from .store.base import Record, Store
from .versions import version_key

#: The extensions the Azure Arc documentation lists as supporting automatic extension upgrade
#: ("Automatic extension upgrade for Azure Arc-enabled servers", Supported extensions: see README.md,
#: ARCEXT_SEED_CATALOG), as (product, publisher, type).
SUPPORTED_SEED: tuple[tuple[str, str, str], ...] = (
    ("Azure Monitor agent", "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent"),
    ("Azure Monitor agent", "Microsoft.Azure.Monitor", "AzureMonitorLinuxAgent"),
    ("Log Analytics agent", "Microsoft.EnterpriseCloud.Monitoring", "OmsAgentForLinux"),
    ("Dependency agent", "Microsoft.Azure.Monitoring.DependencyAgent", "DependencyAgentWindows"),
    ("Dependency agent", "Microsoft.Azure.Monitoring.DependencyAgent", "DependencyAgentLinux"),
    ("Azure Security agent", "Microsoft.Azure.Security.Monitoring", "AzureSecurityWindowsAgent"),
    ("Azure Security agent", "Microsoft.Azure.Security.Monitoring", "AzureSecurityLinuxAgent"),
    ("Key Vault extension", "Microsoft.Azure.KeyVault", "KeyVaultForLinux"),
    ("Azure Update Manager", "Microsoft.CPlat.Core", "WindowsPatchExtension"),
    ("Azure Update Manager", "Microsoft.CPlat.Core", "LinuxPatchExtension"),
    ("Hybrid Runbook Worker", "Microsoft.Azure.Automation.HybridWorker", "HybridWorkerForWindows"),
    ("Hybrid Runbook Worker", "Microsoft.Azure.Automation.HybridWorker", "HybridWorkerForLinux"),
    ("Arc-enabled SQL Server agent", "Microsoft.AzureData", "WindowsAgent.SqlServer"),
    ("Arc-enabled SQL Server agent", "Microsoft.AzureData", "LinuxAgent.SqlServer"),
)


def os_of_type(publisher: str, type_: str) -> str | None:
    """ "linux" or "windows" for the seed's types (their names say which), None for any other type."""
    for _, seed_publisher, seed_type in SUPPORTED_SEED:
        if seed_publisher.lower() == publisher.lower() and seed_type.lower() == type_.lower():
            lowered = seed_type.lower()
            return "linux" if "linux" in lowered else "windows" if "windows" in lowered else None
    return None


def os_mismatch(os_type: str | None, publisher: str, type_: str) -> str | None:
    """Why a type cannot go on a machine of ``os_type`` (a Windows-only type on Linux, or the reverse)."""
    wanted = os_of_type(publisher, type_)
    have = (os_type or "").lower()
    if wanted is None or have not in ("linux", "windows") or wanted == have:
        return None
    return f"{publisher}.{type_} is a {wanted.capitalize()} extension; this machine's osType is {have}."


def validate_version(version: str) -> None:
    pieces = version.split(".")
    if not version or len(pieces) > 4 or not all(p.isdigit() for p in pieces):
        raise errors.invalid_parameter(
            f"The version '{version}' is not valid: use one to four dot-separated numbers, e.g. 1.10.3.",
            target="version",
        )


class Catalog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def seed(self, now: datetime) -> None:
        """Make sure the documented auto-upgrade types exist (never overrides an operator's change)."""
        for product, publisher, type_ in SUPPORTED_SEED:
            if self.store.get_extension_type(publisher, type_) is None:
                self.store.put_extension_type(
                    {
                        "publisher": publisher,
                        "type": type_,
                        "product": product,
                        "autoUpgradeSupported": True,
                        "updatedAt": iso(now),
                    }
                )

    def put_type(self, publisher: str, type_: str, auto_upgrade_supported: bool, now: datetime) -> Record:
        existing = self.store.get_extension_type(publisher, type_) or {}
        record = {
            **existing,
            "publisher": existing.get("publisher", publisher),
            "type": existing.get("type", type_),
            "autoUpgradeSupported": auto_upgrade_supported,
            "updatedAt": iso(now),
        }
        self.store.put_extension_type(record)
        return record

    def get_type(self, publisher: str, type_: str) -> Record | None:
        return self.store.get_extension_type(publisher, type_)

    def list_types(self) -> list[Record]:
        return sorted(self.store.list_extension_types(), key=lambda r: (r["publisher"].lower(), r["type"].lower()))

    def publish_version(
        self, publisher: str, type_: str, version: str, critical: bool, now: datetime
    ) -> tuple[Record, bool]:
        """Publish (or re-flag) a version; returns (record, created)."""
        validate_version(version)
        type_record = self.store.get_extension_type(publisher, type_)
        if type_record is None:
            type_record = self.put_type(publisher, type_, False, now)
        existing = {v["version"]: v for v in self.store.list_extension_versions(publisher, type_)}
        previous = existing.get(version)
        record: dict[str, Any] = {
            "publisher": type_record["publisher"],
            "type": type_record["type"],
            "version": version,
            "critical": critical,
            "publishedAt": previous["publishedAt"] if previous else iso(now),
        }
        self.store.put_extension_version(record)
        return record, previous is None

    def versions(self, publisher: str, type_: str) -> list[Record]:
        return sorted(self.store.list_extension_versions(publisher, type_), key=lambda r: version_key(r["version"]))

    def newest_of_minor(self, publisher: str, type_: str, version: str) -> str | None:
        """For a Major.Minor ``version`` ("1.10"): the newest published version of that Major.Minor
        ("1.10.3", or "1.10" itself when only that is published), which is what Azure installs; None for a
        version of any other length or when no such version is published."""
        wanted = version.split(".")
        if len(wanted) != 2 or not all(p.isdigit() for p in wanted):
            return None
        head = (int(wanted[0]), int(wanted[1]))
        matching = [
            r["version"] for r in self.store.list_extension_versions(publisher, type_) if _head(r["version"]) == head
        ]
        return max(matching, key=version_key) if matching else None

    def get_version(self, publisher: str, type_: str, version: str) -> Record | None:
        for record in self.store.list_extension_versions(publisher, type_):
            if record["version"].lower() == version.lower():
                return record
        return None


def _head(version: str) -> tuple[int, int] | None:
    """A version's Major.Minor as numbers (None for a one-part version)."""
    parts = version.split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])
