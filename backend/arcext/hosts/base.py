"""The HostDriver protocol and its error taxonomy (docs/hosts.md).

The engine calls a driver for one host and one job at a time. Every failure a driver reports is a
HostDriverError subclass, mapped from the transport library at one boundary, carrying whether a
retry can help and whether the outcome on the host is known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from ..records import ExtensionRecord


@dataclass(frozen=True)
class ExtensionSpec:
    """What the host needs to install or upgrade one extension."""

    name: str
    publisher: str
    type: str
    settings: dict[str, Any] = field(default_factory=dict)
    protected_settings: dict[str, Any] | None = field(default=None, repr=False)  # never logged
    #: decrypts the stored protectedSettings when a driver asks (``protected()``); an upgrade copies the
    #: host's own settings files and never needs them, so most jobs never hold the plaintext at all
    unseal: Callable[[], dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def handler(self) -> str:
        return f"{self.publisher}.{self.type}"

    def protected(self) -> dict[str, Any] | None:
        """The protected settings in clear, decrypted now if they are sealed."""
        if self.protected_settings is not None:
            return self.protected_settings
        return self.unseal() if self.unseal is not None else None


def spec_of(record: ExtensionRecord, unseal: Callable[[str], dict[str, Any]]) -> ExtensionSpec:
    """The spec of a stored extension record; ``unseal`` decrypts its sealed protectedSettings."""
    resource = record["resource"]
    props = resource["properties"]
    return ExtensionSpec(
        name=resource["name"],
        publisher=props.get("publisher", ""),
        type=props.get("type", ""),
        settings=props.get("settings") or {},
        unseal=partial(unseal, sealed) if (sealed := record.get("protected")) else None,
    )


@dataclass(frozen=True)
class InstalledExtension:
    name: str
    version: str
    state: str  # enabled | disabled | failed | transitioning


class HostDriverError(Exception):
    retryable: bool = False
    outcome_known: bool = True
    nothing_ran: bool = False  # True: the host was not changed, so there is nothing to roll back
    code: str = "HostError"

    def __init__(self, host: str, op: str, message: str) -> None:
        super().__init__(f"{op} on {host}: {message}")
        self.host = host
        self.op = op
        self.message = message


class HostUnreachable(HostDriverError):
    """Nothing ran: the host could not be reached."""

    retryable = True
    nothing_ran = True
    code = "HostUnreachable"


class HostAuthError(HostDriverError):
    """Credentials were refused; an operator must act, retrying will not help."""

    nothing_ran = True
    code = "HostAuthenticationFailed"


class UpgradeRefused(HostDriverError):
    """The host (or the driver) refused before changing anything: no package, blocked by policy."""

    nothing_ran = True
    code = "UpgradeRefused"


class HostTimeout(HostDriverError):
    """The operation outlived its deadline; what happened on the host is unknown."""

    retryable = True
    outcome_known = False
    code = "HostOperationTimedOut"


class SessionLost(HostDriverError):
    retryable = True
    outcome_known = False
    code = "HostSessionLost"


class RemoteScriptError(HostDriverError):
    code = "RemoteScriptError"


class ProtocolError(HostDriverError):
    code = "HostProtocolError"


class IntegrityError(HostDriverError):
    retryable = True
    code = "PackageIntegrityError"


class HandlerFailed(HostDriverError):
    """The extension handler ran and failed (non-zero exit code, bad status, stale heartbeat)."""

    code = "ExtensionHandlerFailed"

    def __init__(self, host: str, op: str, message: str, exit_code: int | None = None) -> None:
        super().__init__(host, op, message)
        self.exit_code = exit_code


class HostDriver(Protocol):
    """One instance per host per job; not shared between threads."""

    def installed(self, name: str) -> InstalledExtension | None: ...

    def install(self, spec: ExtensionSpec, version: str) -> None: ...

    def upgrade(self, spec: ExtensionSpec, from_version: str, to_version: str) -> None:
        """Install ``to_version`` in place of ``from_version``, keeping settings; raise on failure."""
        ...

    def rollback(self, spec: ExtensionSpec, failed_version: str, good_version: str) -> None:
        """Reinstall ``good_version`` after ``failed_version`` failed; raise if that fails too."""
        ...

    def remove(self, name: str) -> None: ...

    def close(self) -> None: ...
