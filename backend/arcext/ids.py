"""Resource identifiers: building full ARM ids, store keys and the name rules of the spec."""

from __future__ import annotations

import os
import re
import threading
import uuid
from dataclasses import dataclass, field

from . import errors

PROVIDER = "Microsoft.HybridCompute"
MACHINE_TYPE = f"{PROVIDER}/machines"
EXTENSION_TYPE = f"{PROVIDER}/machines/extensions"

MACHINE_NAME_RE = re.compile(r"^[a-zA-Z0-9-_\.]{1,54}$")
RESOURCE_GROUP_RE = re.compile(r"^[-\w\._\(\)]{1,90}$")
EXTENSION_NAME_MAX = 260


@dataclass(frozen=True, slots=True)
class MachineKey:
    """Identifies one machine; comparison is case-insensitive, display keeps the caller's case."""

    subscription: str
    resource_group: str
    name: str

    lower: str = field(init=False, repr=False, compare=False)  # the store's key, made once

    def __post_init__(self) -> None:
        object.__setattr__(self, "lower", f"{self.subscription}/{self.resource_group}/{self.name}".lower())

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{MACHINE_TYPE}/{self.name}"
        )

    def with_name(self, name: str) -> MachineKey:
        """The same machine with the display case of its name."""
        return MachineKey(self.subscription, self.resource_group, name)

    def extension_id(self, extension_name: str) -> str:
        return f"{self.id}/extensions/{extension_name}"


class _RandomPool:
    """Random bytes for version-4 UUIDs, read from the OS 4 KiB at a time.

    ``uuid.uuid4()`` makes one getrandom call per id, and each call releases and retakes the GIL: with
    dozens of upgrade workers (three ids per job) that was a measurable share of the engine's system
    time. The bytes are the same kind (os.urandom); a forked child starts a fresh pool."""

    size = 4096

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # a new lock too: a fork while another thread held the old one leaves it held in the child forever
        self._lock = threading.Lock()
        self._buffer = b""
        self._pos = 0

    def take16(self) -> bytes:
        with self._lock:
            if self._pos + 16 > len(self._buffer):
                self._buffer = os.urandom(self.size)
                self._pos = 0
            chunk = self._buffer[self._pos : self._pos + 16]
            self._pos += 16
            return chunk


_random_pool = _RandomPool()
os.register_at_fork(after_in_child=_random_pool._reset)


def new_uuid() -> str:
    """A random (version-4) UUID string, as ``str(uuid.uuid4())`` but with one syscall per 256 ids."""
    return str(uuid.UUID(bytes=_random_pool.take16(), version=4))


def validate_subscription(subscription: str) -> None:
    try:
        uuid.UUID(subscription)
    except ValueError:
        raise errors.ArmError(
            400,
            "InvalidSubscriptionId",
            f"The provided subscription identifier '{subscription}' is malformed or invalid; "
            "it must be a GUID such as 00000000-0000-0000-0000-000000000000.",
            target="subscriptionId",
        ) from None


def validate_resource_group(name: str) -> None:
    if not RESOURCE_GROUP_RE.match(name) or name.endswith("."):
        raise errors.invalid_resource_name(
            "resource group",
            name,
            "use 1-90 letters, digits, underscores, hyphens, periods or parentheses, not ending in a period.",
            "resourceGroupName",
        )


def validate_machine_name(name: str) -> None:
    if not MACHINE_NAME_RE.match(name):
        raise errors.invalid_resource_name(
            "machine",
            name,
            "use 1-54 letters, digits, hyphens, underscores or periods (pattern ^[a-zA-Z0-9-_\\.]{1,54}$).",
            "machineName",
        )


def validate_extension_name(name: str) -> None:
    if not name or len(name) > EXTENSION_NAME_MAX or any(c in name for c in "/\\?#%&<>*:"):
        raise errors.invalid_resource_name(
            "extension",
            name,
            f"use 1-{EXTENSION_NAME_MAX} characters without / \\ ? # % & < > * or :.",
            "extensionName",
        )


def machine_key(subscription: str, resource_group: str, machine: str) -> MachineKey:
    validate_subscription(subscription)
    validate_resource_group(resource_group)
    validate_machine_name(machine)
    return MachineKey(subscription.lower(), resource_group, machine)


_ID_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.HybridCompute"
    r"/machines/(?P<machine>[^/]+)(?:/extensions/(?P<ext>[^/]+))?$",
    re.IGNORECASE,
)


def parse_resource_id(resource_id: str) -> tuple[MachineKey, str | None] | None:
    """Split a machine or extension id; None when it is not one of ours."""
    m = _ID_RE.match(resource_id)
    if not m:
        return None
    return MachineKey(m["sub"].lower(), m["rg"], m["machine"]), m["ext"]
