"""The VM-extension handler protocol's rules every host driver shares (docs/hosts.md).

Windows (:mod:`arcext.hosts.windows_driver`, over psrp or winrm) and Linux (:mod:`arcext.hosts.ssh`)
run the same protocol on the host: WALA's handler timeouts and error codes, the handler states the
API reports, the refusals before any host call (no package, blocked by the machine's allow/block
list), the settings document of a fresh install, the host journal that lets a job resume after a
dropped session (one reconnect, then resume), and which version ``installed`` reports. They live here
once; each driver keeps only how it talks to its host and the step order its agent needs.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from ..versions import version_key
from .base import ExtensionSpec, HandlerFailed, InstalledExtension, RemoteScriptError, SessionLost, UpgradeRefused
from .connections import HostConnection, extension_allowed
from .packages import PackageRef, PackageStore

log = logging.getLogger(__name__)

#: WALA's handler timeouts (seconds) and ExtensionErrorCodes per command.
DEFAULT_TIMEOUTS = {"install": 900, "update": 900, "disable": 900, "enable": 300, "uninstall": 300}
ERROR_CODES = {"install": 1007, "update": 1008, "enable": 1009, "disable": 1010, "uninstall": 1008}
TIMED_OUT_CODE = 1011
INVALID_STATUS_CODE = 1012
#: the code of a handler that reports error, or never becomes healthy
UNHEALTHY_CODE = ERROR_CODES["enable"]
#: the handler states on the host, as the API reports them
STATE_NAMES = {
    "Enabled": "enabled",
    "Installed": "disabled",
    "FailedUpgrade": "failed",
    "NotInstalled": "transitioning",
}


class PackageMissing(UpgradeRefused):
    """No package is published for the version the host needs."""

    code = "ExtensionPackageNotPublished"


class ExtensionBlocked(UpgradeRefused):
    """The machine's extensions allow/block list refuses this extension."""

    code = "ExtensionBlockedByHostPolicy"


class HandlerCommandFailed(HandlerFailed):
    """A handler command failed; ``wala_code`` is the VM-extension error code (1007-1012)."""

    def __init__(self, host: str, op: str, message: str, exit_code: int | None, wala_code: int) -> None:
        super().__init__(host, op, f"[{wala_code}] {message}", exit_code)
        self.wala_code = wala_code


@dataclass(frozen=True)
class DriverTuning:
    """Timing knobs of the Windows drivers (psrp and winrm); the defaults suit real hosts, tests shrink
    them. The ssh driver takes the three it shares (:class:`arcext.hosts.ssh_channel.SshTuning`)."""

    status_poll_s: float = 2.0
    deadline_margin_s: float = 15.0
    reconnection_backoff: float = 0.1
    reconnect_attempts: int = 1
    # check the pool with is_alive() before reuse only when it sat idle this long: a pipeline reveals a
    # broken pool anyway (SessionLost, and the operation resumes from the host journal), so a check
    # before every pipeline only costs a round trip
    alive_check_after_s: float = 60.0
    host_wait_s: float = 30.0  # how long Invoke-HandlerCommand waits on the host for a step's outcome
    status_settle_s: float = 10.0  # a status file unreadable for this long (by its age) is invalid (1012)


class RetryTuning(Protocol):
    """What the shared part reads of a driver's tuning."""

    @property
    def reconnect_attempts(self) -> int: ...


TuningT = TypeVar("TuningT", bound=RetryTuning)


def wall_clock() -> datetime:
    """The default ``now`` of a driver built without one (the engine passes its own clock's)."""
    return datetime.now(UTC)


def settings_document(spec: ExtensionSpec, certificate_pem: str | None) -> bytes:
    """``<N>.settings`` for a fresh install. protectedSettings are encrypted to the host's certificate
    (CMS EnvelopedData, DER, base64) when the connection names one, as Azure does; a Linux handler
    decrypts them with ``openssl smime -decrypt -inform DER -recip <thumb>.crt -inkey <thumb>.prv``."""
    handler_settings: dict[str, Any] = {"publicSettings": spec.settings or {}}
    protected = spec.protected()
    if protected:
        raw = json.dumps(protected, separators=(",", ":")).encode()
        if certificate_pem:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.serialization import pkcs7

            cert = x509.load_pem_x509_certificate(certificate_pem.encode())
            envelope = (
                pkcs7.PKCS7EnvelopeBuilder().set_data(raw).add_recipient(cert).encrypt(serialization.Encoding.DER, [])
            )
            handler_settings["protectedSettings"] = base64.b64encode(envelope).decode()
            handler_settings["protectedSettingsCertThumbprint"] = cert.fingerprint(hashes.SHA1()).hex().upper()
        else:
            handler_settings["protectedSettings"] = base64.b64encode(raw).decode()
            handler_settings["protectedSettingsCertThumbprint"] = None
    document = {"runtimeSettings": [{"handlerSettings": handler_settings}]}
    return json.dumps(document, separators=(",", ":")).encode()


class HandlerProtocol(Generic[TuningT]):
    """The part of a host driver that does not depend on the host's OS or transport: its identity,
    the refusals before any host call, the journal's resume rule, the health verdict and the
    reconnect-once loop. A driver subclass supplies ``_default_tuning`` and ``_discard`` (drop the
    session)."""

    kind = "agent"  # the hostConnection driver name; also names the drivers' threads

    def __init__(
        self,
        host: str,
        conn: HostConnection,
        packages: PackageStore,
        handlers: dict[str, str] | None = None,
        tuning: TuningT | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.name = host
        self.conn = conn
        self.packages = packages
        self.handlers = {k.lower(): v for k, v in (handlers or {}).items()}
        self.tuning: TuningT = tuning or self._default_tuning()
        #: the time written into the host journal (the engine's clock, so a manual clock shows there too)
        self.now = now or wall_clock
        #: the agent calls sent to the host, in order (Windows: script names; Linux: agent operations)
        self.calls: list[str] = []

    def _default_tuning(self) -> TuningT:
        raise NotImplementedError

    def _discard(self) -> None:
        """Forget the session to the host (the next call opens a new one)."""
        raise NotImplementedError

    def close(self) -> None:
        self._discard()

    def _handler_of(self, name: str) -> str | None:
        return self.handlers.get(name.lower())

    def _check_policy(self, spec: ExtensionSpec, op: str) -> None:
        reason = extension_allowed(self.conn, spec.publisher, spec.type)
        if reason is not None:
            raise ExtensionBlocked(self.name, op, reason)

    def _package(self, spec: ExtensionSpec, version: str) -> PackageRef:
        ref = self.packages.get(spec.publisher, spec.type, version)
        if ref is None:
            raise PackageMissing(
                self.name, "stage", f"no package is attached to {spec.publisher}/{spec.type} {version}"
            )
        return ref

    def _settings(self, spec: ExtensionSpec) -> bytes:
        """The settings document of a fresh install of ``spec`` on this host."""
        return settings_document(spec, self.conn.protected_settings_certificate_pem)

    def _installed(self, name: str, versions: dict[str, dict[str, Any]]) -> InstalledExtension | None:
        """What ``installed`` reports of the versions on the host: the enabled one, else the newest."""
        if not versions:
            return None
        enabled = [v for v in versions.values() if v["state"] == "Enabled"]
        chosen = enabled[0] if enabled else max(versions.values(), key=lambda v: version_key(str(v["version"])))
        return InstalledExtension(name, chosen["version"], STATE_NAMES.get(chosen["state"], "transitioning"))

    def _resumed(self, handler: str, kind: str, state: dict[str, Any], fields: dict[str, Any]) -> str | None:
        """The id of the unfinished operation of this kind (and these fields) the host journal
        records, which a new attempt resumes; None when there is none."""
        journal = state.get("journal")
        if (
            journal
            and not journal.get("finished")
            and journal.get("kind") == kind
            and all(journal.get(k) == v for k, v in fields.items())
        ):
            log.info(
                "Resuming %s of %s on %s from the host journal %s", kind, handler, self.name, journal["operationId"]
            )
            return str(journal["operationId"])
        return None

    def _stamp(self) -> str:
        """The journal's timestamp for now."""
        return self.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _command_outcome(
        self, step: str, handler: str, version: str, command: str, timeout: int, timed_out: bool, code: str, stderr: str
    ) -> None:
        """Raise the failure of a handler command that timed out (1011) or exited with a code other
        than 0 (the command's WALA code, with the last line of its stderr)."""
        if timed_out:
            raise HandlerCommandFailed(
                self.name, step, f"{command} of {handler} {version} timed out after {timeout} s", None, TIMED_OUT_CODE
            )
        if code != "0":
            tail = stderr.strip().splitlines()
            raise HandlerCommandFailed(
                self.name,
                step,
                f"{command} of {handler} {version} exited with {code}" + (f": {tail[-1]}" if tail else ""),
                int(code) if re.fullmatch(r"-?[0-9]+", code) else None,
                ERROR_CODES[command],
            )

    @staticmethod
    def _wants_heartbeat(manifest: dict[str, Any]) -> bool:
        return manifest.get("reportHeartbeat") in (True, "true", "True")

    def _not_yet_healthy(
        self,
        handler: str,
        version: str,
        status: dict[str, Any],
        message: object,
        beat: tuple[int, str] | None,
        wants_heartbeat: bool,
    ) -> str | None:
        """What the handler still lacks to be healthy (None when it is): a ``success``/``warning``
        status object, and with ``wants_heartbeat`` a fresh ``ready`` heartbeat (``beat``: its age in
        seconds and status). Raises when the status says error (``message`` is its text)."""
        value = str(status.get("status", "")).lower()
        if value == "error":
            raise HandlerCommandFailed(
                self.name, "health", f"{handler} {version} reports error: {message}", None, UNHEALTHY_CODE
            )
        if value not in ("success", "warning"):
            return f"status is {value or 'empty'}"
        if not wants_heartbeat:
            return None
        if beat is None:
            return "status success but no heartbeat yet"
        age, said = beat
        if age > self.conn.heartbeat_max_age_s:
            return f"heartbeat is stale ({age} s old; the handler is unresponsive)"
        if said.lower() != "ready":
            return f"heartbeat says {said}"
        return None

    def _unhealthy(self, handler: str, version: str, last: str) -> HandlerCommandFailed:
        """The failure of a handler that did not become healthy within the status deadline."""
        return HandlerCommandFailed(
            self.name,
            "health",
            f"{handler} {version} not healthy after {self.conn.status_deadline_s} s: {last}",
            None,
            UNHEALTHY_CODE,
        )

    def _resumable(self, op: str, fn: Callable[[], None]) -> None:
        """Run a journalled operation; after a dropped session reconnect and resume from the journal."""
        attempts = 0
        while True:
            try:
                fn()
                return
            except SessionLost as exc:
                attempts += 1
                if attempts > self.tuning.reconnect_attempts:
                    raise
                log.warning(
                    "%s on %s lost its session (%s); reconnecting to resume from the journal",
                    op,
                    self.name,
                    exc.message,
                )
                self._discard()

    def _ignore(self, fn: Callable[[], Any]) -> None:
        """Run a rollback or removal step whose failure does not stop the rest."""
        try:
            fn()
        except (HandlerFailed, RemoteScriptError) as exc:
            log.info("Rollback on %s: ignoring %s", self.name, exc.message)
