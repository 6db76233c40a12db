"""The simulated driver: an in-process fleet of hosts for tests, demos and scale runs.

Each host keeps, per extension, the installed version, handler state, settings and a keyed digest of the
protected settings (``protectedSha256``: HMAC-SHA256 under the fleet's own random key in
``simhosts/digest.key``, never the secret itself nor a plain hash a short secret could be guessed from), plus
the order of handler commands it ran. The fleet's files are private to the server's user (mode 0600). Hosts live
in ``<data-dir>/simhosts/hosts.jsonl``, an append-only log of their changes (written before the
driver call returns, so they survive kill -9 of the server, like a real machine would; compacted at
start), and take faults set through the admin API: fail the next n upgrades, fail rollbacks, hang
past the deadline, be unreachable, answer slowly.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from ..ids import MachineKey
from .base import ExtensionSpec, HandlerFailed, HostTimeout, HostUnreachable, InstalledExtension

FAULT_FIELDS = ("failUpgrade", "failRollback", "hang", "unreachable", "latencyMs")


DIGEST_KEY_FILE = "digest.key"


def _private_file(path: Path) -> None:
    """Make sure a file of the fleet is readable by the server's user only."""
    if path.exists() and path.stat().st_mode & 0o077:
        path.chmod(0o600)


def load_digest_key(directory: Path) -> bytes:
    """The fleet's HMAC key for protected-settings digests, created (mode 0600) on first use."""
    path = directory / DIGEST_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _private_file(path)
        key = bytes.fromhex(path.read_text().strip() or "00")
        if len(key) >= 32:
            return key
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key


class SimulatedFleet:
    def __init__(self, directory: Path, base_latency_ms: float = 0.0, operation_timeout_s: float = 600.0) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.base_latency_ms = base_latency_ms
        self.operation_timeout_s = operation_timeout_s
        self._hosts: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._log_path = self.directory / "hosts.jsonl"
        self._log_lock = threading.Lock()
        self._digest_key = load_digest_key(self.directory)
        self._load()

    def protected_digest(self, protected: dict[str, Any] | None) -> str | None:
        """A keyed digest of protected settings: shows whether they changed, gives nothing of them away."""
        if not protected:
            return None
        payload = json.dumps(protected, sort_keys=True).encode()
        return hmac.new(self._digest_key, payload, hashlib.sha256).hexdigest()

    # --- state ----------------------------------------------------------------------------
    def _load(self) -> None:
        if self._log_path.exists():
            with open(self._log_path, "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # torn by a crash
                    self._apply(orjson.loads(line))
        # compact: one record per host
        tmp = self._log_path.with_suffix(".tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            for host in self._hosts.values():
                fh.write(orjson.dumps(self._record_of(host, set(host["extensions"]), host["commands"])) + b"\n")
        _private_file(tmp)  # a .tmp left by a crash keeps its old mode
        os.replace(tmp, self._log_path)
        self._log_fd = os.open(self._log_path, os.O_WRONLY | os.O_APPEND)

    def _apply(self, record: dict[str, Any]) -> None:
        host = self._hosts.setdefault(
            record["k"], {"key": record["k"], "machineId": record["m"], "extensions": {}, "faults": {}, "commands": []}
        )
        host["faults"] = record["f"]
        host["commands"].extend(record["c"])
        del host["commands"][:-200]
        for name, entry in record["x"].items():
            if entry is None:
                host["extensions"].pop(name, None)
            else:
                host["extensions"][name] = entry

    @staticmethod
    def _record_of(host: dict[str, Any], changed: set[str], commands: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "k": host["key"],
            "m": host["machineId"],
            "f": host["faults"],
            "c": commands,
            "x": {name: host["extensions"].get(name) for name in changed},
        }

    def _lock(self, key_lower: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key_lower, threading.Lock())

    def _host(self, key: MachineKey) -> dict[str, Any]:
        host = self._hosts.get(key.lower)
        if host is None:
            host = {"key": key.lower, "machineId": key.id, "extensions": {}, "faults": {}, "commands": []}
            self._hosts[key.lower] = host
        return host

    def _save(
        self, key_lower: str, changed: set[str] | None = None, commands: list[dict[str, Any]] | None = None
    ) -> None:
        """Append what changed; no fsync needed to survive the death of the server process."""
        line = orjson.dumps(self._record_of(self._hosts[key_lower], changed or set(), commands or []))
        with self._log_lock:
            os.write(self._log_fd, line + b"\n")

    def snapshot(self, key: MachineKey) -> dict[str, Any] | None:
        """The host's own model (for tests and the admin API)."""
        with self._lock(key.lower):
            host = self._hosts.get(key.lower)
            return copy.deepcopy(host) if host else None

    def set_faults(self, key: MachineKey, faults: dict[str, Any]) -> dict[str, Any]:
        with self._lock(key.lower):
            host = self._host(key)
            host["faults"] = {k: v for k, v in faults.items() if k in FAULT_FIELDS and v not in (None, False, 0)}
            self._save(key.lower)
            return dict(host["faults"])

    def clear(self) -> None:
        with self._guard, self._log_lock:
            os.ftruncate(self._log_fd, 0)
            self._hosts.clear()

    def shutdown(self) -> None:
        """Wake any simulated hang so threads can exit."""
        self._stop.set()

    def driver(self, key: MachineKey) -> SimulatedDriver:
        return SimulatedDriver(self, key)


class SimulatedDriver:
    """HostDriver over one simulated host."""

    #: metrics and logs call every simulated driver "simulated" (the cluster's database-backed one too)
    driver_label = "simulated"

    def __init__(self, fleet: SimulatedFleet, key: MachineKey) -> None:
        self.fleet = fleet
        self.key = key
        self.name = key.name
        self._commands: list[dict[str, Any]] = []
        self._changed: set[str] = set()

    # --- helpers ------------------------------------------------------------------------------
    def _faults(self) -> dict[str, Any]:
        """The host's injected faults (a copy)."""
        with self.fleet._lock(self.key.lower):
            return dict(self.fleet._host(self.key)["faults"])

    def _enter(self, op: str) -> dict[str, Any]:
        """Latency and reachability, checked before anything runs on the host."""
        faults = self._faults()
        delay = (self.fleet.base_latency_ms + float(faults.get("latencyMs", 0))) / 1000.0
        if delay:
            time.sleep(delay)
        if faults.get("unreachable"):
            raise HostUnreachable(self.name, op, "connection refused (simulated: unreachable)")
        return faults

    def _record(self, ext: str, command: str, version: str) -> None:
        host = self.fleet._host(self.key)
        entry = {"extension": ext, "command": command, "version": version}
        host["commands"].append(entry)
        del host["commands"][:-200]
        self._commands.append(entry)

    def _flush(self) -> None:
        self.fleet._save(self.key.lower, self._changed, self._commands)
        self._commands, self._changed = [], set()

    def _set(self, spec: ExtensionSpec, version: str, state: str, carry: bool = False) -> None:
        """Record the extension's version and state. An install writes the settings from the spec; an
        upgrade or a rollback (``carry``) keeps the ones on the host, as the handler protocol copies the
        old version's settings files (only a host that lost them gets the spec's)."""
        host = self.fleet._host(self.key)
        self._changed.add(spec.name.lower())
        old = host["extensions"].get(spec.name.lower()) if carry else None
        host["extensions"][spec.name.lower()] = {
            "name": spec.name,
            "handler": spec.handler,
            "version": version,
            "state": state,
            "settings": old["settings"] if old else copy.deepcopy(spec.settings),
            "protectedSha256": old["protectedSha256"] if old else self.fleet.protected_digest(spec.protected()),
        }

    # --- HostDriver ------------------------------------------------------------------------------
    def installed(self, name: str) -> InstalledExtension | None:
        self._enter("installed")
        with self.fleet._lock(self.key.lower):
            ext = self.fleet._host(self.key)["extensions"].get(name.lower())
            return InstalledExtension(ext["name"], ext["version"], ext["state"]) if ext else None

    def install(self, spec: ExtensionSpec, version: str) -> None:
        self._enter("install")
        with self.fleet._lock(self.key.lower):
            for command in ("install", "enable"):
                self._record(spec.name, command, version)
            self._set(spec, version, "enabled")
            self._flush()

    def upgrade(self, spec: ExtensionSpec, from_version: str, to_version: str) -> None:
        faults = self._enter("upgrade")
        lock = self.fleet._lock(self.key.lower)
        hang = bool(faults.get("hang"))
        with lock:
            self._record(spec.name, "disable", from_version)
            self._set(spec, to_version, "transitioning", carry=True)
            self._record(spec.name, "update", to_version)
            if hang:  # the host stays half way (transitioning), as a real one that stopped answering
                self._flush()
            else:  # nothing happens on the host in between: one change of its state, not two
                self._enable_upgraded(spec, from_version, to_version)
        if hang:
            self.fleet._stop.wait(self.fleet.operation_timeout_s)
            raise HostTimeout(
                self.name, "upgrade", f"no answer within {self.fleet.operation_timeout_s:g}s (simulated hang)"
            )

    def _enable_upgraded(self, spec: ExtensionSpec, from_version: str, to_version: str) -> None:
        """The second half of an upgrade (the fleet's host lock held): the new version enabled, or the
        ``failUpgrade`` fault's failed enable."""
        host = self.fleet._host(self.key)
        remaining = int(host["faults"].get("failUpgrade", 0))
        if remaining > 0:
            host["faults"]["failUpgrade"] = remaining - 1
            if remaining - 1 == 0:
                del host["faults"]["failUpgrade"]
            self._record(spec.name, "enable", to_version)
            self._set(spec, to_version, "failed", carry=True)
            self._flush()
            raise HandlerFailed(self.name, "upgrade", "enable exited with code 1009 (simulated)", exit_code=1009)
        for command in ("uninstall", "install", "enable"):
            self._record(spec.name, command, from_version if command == "uninstall" else to_version)
        self._set(spec, to_version, "enabled", carry=True)
        self._flush()

    def rollback(self, spec: ExtensionSpec, failed_version: str, good_version: str) -> None:
        faults = self._enter("rollback")
        with self.fleet._lock(self.key.lower):
            self._record(spec.name, "uninstall", failed_version)
            if faults.get("failRollback"):
                self._set(spec, failed_version, "failed", carry=True)
                self._flush()
                raise HandlerFailed(self.name, "rollback", f"reinstalling {good_version} failed (simulated)", 1)
            for command in ("install", "enable"):
                self._record(spec.name, command, good_version)
            self._set(spec, good_version, "enabled", carry=True)
            self._flush()

    def remove(self, name: str) -> None:
        self._enter("remove")
        with self.fleet._lock(self.key.lower):
            host = self.fleet._host(self.key)
            ext = host["extensions"].pop(name.lower(), None)
            self._changed.add(name.lower())
            if ext:
                for command in ("disable", "uninstall"):
                    self._record(name, command, ext["version"])
            self._flush()

    def close(self) -> None:
        pass
