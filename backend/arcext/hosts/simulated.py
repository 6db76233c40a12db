"""The simulated driver: an in-process fleet of hosts for tests, demos and scale runs.

Each host keeps, per extension, the installed version, handler state, settings and a digest of the
protected settings (never the secret itself), plus the order of handler commands it ran. Hosts live
in ``<data-dir>/simhosts/`` (atomic renames, so they survive kill -9 of the server, like a real
machine would) and take faults set through the admin API: fail the next n upgrades, fail rollbacks,
hang past the deadline, be unreachable, answer slowly.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..ids import MachineKey
from .base import ExtensionSpec, HandlerFailed, HostTimeout, HostUnreachable, InstalledExtension

FAULT_FIELDS = ("failUpgrade", "failRollback", "hang", "unreachable", "latencyMs")


def protected_digest(protected: dict[str, Any] | None) -> str | None:
    if not protected:
        return None
    return hashlib.sha256(json.dumps(protected, sort_keys=True).encode()).hexdigest()


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
        for path in self.directory.glob("*.json"):
            data = json.loads(path.read_text())
            self._hosts[data["key"]] = data

    # --- state ----------------------------------------------------------------------------
    def _path(self, key_lower: str) -> Path:
        return self.directory / f"{hashlib.sha1(key_lower.encode()).hexdigest()}.json"

    def _lock(self, key_lower: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key_lower, threading.Lock())

    def _host(self, key: MachineKey) -> dict[str, Any]:
        host = self._hosts.get(key.lower)
        if host is None:
            host = {"key": key.lower, "machineId": key.id, "extensions": {}, "faults": {}, "commands": []}
            self._hosts[key.lower] = host
        return host

    def _save(self, key_lower: str) -> None:
        path = self._path(key_lower)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._hosts[key_lower]))
        os.replace(tmp, path)  # atomic; no fsync needed to survive the death of the server process

    def snapshot(self, key: MachineKey) -> dict[str, Any] | None:
        """The host's own model (for tests and the admin API)."""
        with self._lock(key.lower):
            host = self._hosts.get(key.lower)
            return copy.deepcopy(host) if host else None

    def hosts_named(self, name: str) -> list[MachineKey]:
        out = []
        for host in list(self._hosts.values()):
            sub, rg, machine = host["key"].split("/")
            if machine == name.lower():
                out.append(MachineKey(sub, rg, machine))
        return out

    def set_faults(self, key: MachineKey, faults: dict[str, Any]) -> dict[str, Any]:
        with self._lock(key.lower):
            host = self._host(key)
            host["faults"] = {k: v for k, v in faults.items() if k in FAULT_FIELDS and v not in (None, False, 0)}
            self._save(key.lower)
            return dict(host["faults"])

    def clear(self) -> None:
        with self._guard:
            for key_lower in list(self._hosts):
                self._path(key_lower).unlink(missing_ok=True)
            self._hosts.clear()

    def shutdown(self) -> None:
        """Wake any simulated hang so threads can exit."""
        self._stop.set()

    def driver(self, key: MachineKey) -> SimulatedDriver:
        return SimulatedDriver(self, key)


class SimulatedDriver:
    """HostDriver over one simulated host."""

    def __init__(self, fleet: SimulatedFleet, key: MachineKey) -> None:
        self.fleet = fleet
        self.key = key
        self.name = key.name

    # --- helpers ------------------------------------------------------------------------------
    def _enter(self, op: str) -> dict[str, Any]:
        """Latency and reachability, checked before anything runs on the host."""
        with self.fleet._lock(self.key.lower):
            faults = dict(self.fleet._host(self.key)["faults"])
        delay = (self.fleet.base_latency_ms + float(faults.get("latencyMs", 0))) / 1000.0
        if delay:
            time.sleep(delay)
        if faults.get("unreachable"):
            raise HostUnreachable(self.name, op, "connection refused (simulated: unreachable)")
        return faults

    def _record(self, ext: str, command: str, version: str) -> None:
        host = self.fleet._host(self.key)
        host["commands"].append({"extension": ext, "command": command, "version": version})
        del host["commands"][:-200]

    def _set(self, spec: ExtensionSpec, version: str, state: str) -> None:
        host = self.fleet._host(self.key)
        host["extensions"][spec.name.lower()] = {
            "name": spec.name,
            "handler": spec.handler,
            "version": version,
            "state": state,
            "settings": copy.deepcopy(spec.settings),
            "protectedSha256": protected_digest(spec.protected_settings),
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
            self.fleet._save(self.key.lower)

    def upgrade(self, spec: ExtensionSpec, from_version: str, to_version: str) -> None:
        faults = self._enter("upgrade")
        lock = self.fleet._lock(self.key.lower)
        with lock:
            self._record(spec.name, "disable", from_version)
            self._set(spec, to_version, "transitioning")
            self._record(spec.name, "update", to_version)
            self.fleet._save(self.key.lower)
        if faults.get("hang"):
            self.fleet._stop.wait(self.fleet.operation_timeout_s)
            raise HostTimeout(
                self.name, "upgrade", f"no answer within {self.fleet.operation_timeout_s:g}s (simulated hang)"
            )
        with lock:
            host = self.fleet._host(self.key)
            remaining = int(host["faults"].get("failUpgrade", 0))
            if remaining > 0:
                host["faults"]["failUpgrade"] = remaining - 1
                if remaining - 1 == 0:
                    del host["faults"]["failUpgrade"]
                self._record(spec.name, "enable", to_version)
                self._set(spec, to_version, "failed")
                self.fleet._save(self.key.lower)
                raise HandlerFailed(self.name, "upgrade", "enable exited with code 1009 (simulated)", exit_code=1009)
            for command in ("uninstall", "install", "enable"):
                self._record(spec.name, command, from_version if command == "uninstall" else to_version)
            self._set(spec, to_version, "enabled")
            self.fleet._save(self.key.lower)

    def rollback(self, spec: ExtensionSpec, failed_version: str, good_version: str) -> None:
        faults = self._enter("rollback")
        with self.fleet._lock(self.key.lower):
            self._record(spec.name, "uninstall", failed_version)
            if faults.get("failRollback"):
                self._set(spec, failed_version, "failed")
                self.fleet._save(self.key.lower)
                raise HandlerFailed(self.name, "rollback", f"reinstalling {good_version} failed (simulated)", 1)
            for command in ("install", "enable"):
                self._record(spec.name, command, good_version)
            self._set(spec, good_version, "enabled")
            self.fleet._save(self.key.lower)

    def remove(self, name: str) -> None:
        self._enter("remove")
        with self.fleet._lock(self.key.lower):
            host = self.fleet._host(self.key)
            ext = host["extensions"].pop(name.lower(), None)
            if ext:
                for command in ("disable", "uninstall"):
                    self._record(name, command, ext["version"])
            self.fleet._save(self.key.lower)

    def close(self) -> None:
        pass
