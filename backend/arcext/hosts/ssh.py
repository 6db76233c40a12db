"""The ``ssh`` driver: drives a Linux host over SSH with paramiko, as the Azure Linux guest agent would
(docs/hosts.md).

On the host it follows WALinuxAgent's handler layout (:mod:`arcext.hosts.ssh_steps`) and WALA's
upgrade order old.disable → new.update → old.uninstall → new.install (unless ``updateMode`` is
UpdateWithoutInstall) → new.enable, gated on the status file and the heartbeat. The last-known-good
package stays in a host cache until the new version is healthy; every handler command is journalled
on the host and runs detached from the SSH session, so after a dropped connection the driver
reconnects once and resumes from the journal (a command still running is waited for, one that
finished is not run again). Rollback uses the same primitives. The connection, the host-key check
and the agent calls are :mod:`arcext.hosts.ssh_channel`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from .agent import HandlerCommandFailed, PackageMissing
from .base import ExtensionSpec, InstalledExtension, UpgradeRefused
from .packages import PackageRef
from .ssh_channel import STATS, HostKeyMismatch, SshTuning, SudoRefused, agent_text, fingerprint
from .ssh_steps import SshSteps, agent_value, check_name, check_version

__all__ = [
    "STATS",
    "HostKeyMismatch",
    "SshDriver",
    "SshTuning",
    "SudoRefused",
    "agent_text",
    "fingerprint",
]

log = logging.getLogger(__name__)


class SshDriver(SshSteps):
    """HostDriver over one Linux host; one SSH connection per driver (= per host per job)."""

    # ============================================================================================
    # Journal
    # ============================================================================================
    def _start(self, handler: str, kind: str, state: dict[str, Any], **fields: Any) -> str:
        resumed = self._resumed(handler, kind, state, fields)
        if resumed is not None:
            return resumed
        op_id = str(uuid.uuid4())
        self.write_journal(
            handler,
            {
                "operationId": op_id,
                "kind": kind,
                **fields,
                "startedAt": self._stamp(),
                "finished": False,
            },
        )
        return op_id

    def _finish(
        self, handler: str, op_id: str, kind: str, outcome: str, purge: str | None = None, **fields: Any
    ) -> None:
        """Mark the operation finished (after removing ``purge``'s directory and cached package)."""
        self.write_journal(
            handler,
            {
                "operationId": op_id,
                "kind": kind,
                **fields,
                "finishedAt": self._stamp(),
                "finished": True,
                "outcome": outcome,
            },
            purge,
        )

    @staticmethod
    def _ran(state: dict[str, Any], op_id: str, step: str) -> bool:
        """Whether ``step`` of this operation started (it resumes rather than being skipped)."""
        journal = state.get("journal") or {}
        return journal.get("operationId") == op_id and step in (state.get("steps") or {})

    # ============================================================================================
    # HostDriver
    # ============================================================================================
    def _check(self, spec: ExtensionSpec, op: str, *versions: str) -> str:
        try:
            check_name(spec.publisher, "publisher")
            check_name(spec.type, "type")
            for v in versions:
                check_version(v)
        except UpgradeRefused as exc:
            raise UpgradeRefused(self.name, op, exc.message) from None
        self._check_policy(spec, op)
        return spec.handler

    def installed(self, name: str) -> InstalledExtension | None:
        handler = self._handler_of(name)
        if handler is None:
            return None
        return self._installed(name, self.host_state(handler)["versions"])

    # --- install -----------------------------------------------------------------------------------
    def install(self, spec: ExtensionSpec, version: str) -> None:
        handler = self._check(spec, "install", version)
        ref = self._package(spec, version)
        self._resumable("install", lambda: self._install_once(spec, handler, version, ref))

    def _install_once(self, spec: ExtensionSpec, handler: str, version: str, ref: PackageRef) -> None:
        self.handlers[spec.name.lower()] = handler
        state = self.host_state(handler)
        op_id = self._start(handler, "install", state, version=version)
        manifest, state = self.stage(handler, version, ref, state["cached"])
        current = state["versions"].get(version)
        seq = current.get("sequenceNumber") if current else None
        if current and current["state"] == "Enabled" and not self._ran(state, op_id, "install.enable"):
            seq = (seq or 0) + 1  # a new goal state for a running extension: the next sequence number
            self.write_settings(handler, version, seq, self._settings(spec))
        elif seq is None:
            seq = 0
            self.write_settings(handler, version, seq, self._settings(spec))
        if (current and current["state"] == "NotInstalled") or self._ran(state, op_id, "install.install"):
            self.handler_command(op_id, "install.install", handler, version, "install", manifest)
        self.handler_command(op_id, "install.enable", handler, version, "enable", manifest)
        self.health_gate(handler, version, int(seq), manifest)
        self._finish(handler, op_id, "install", "succeeded", version=version)

    # --- upgrade -----------------------------------------------------------------------------------
    def upgrade(self, spec: ExtensionSpec, from_version: str, to_version: str) -> None:
        handler = self._check(spec, "upgrade", from_version, to_version)
        ref = self._package(spec, to_version)
        self._resumable("upgrade", lambda: self._upgrade_once(spec, handler, from_version, to_version, ref))

    def _upgrade_once(self, spec: ExtensionSpec, handler: str, old: str, new: str, ref: PackageRef) -> None:
        self.handlers[spec.name.lower()] = handler
        state = self.host_state(handler)
        op_id = self._start(handler, "upgrade", state, fromVersion=old, toVersion=new)
        old_ref = self.packages.get(spec.publisher, spec.type, old)
        old_manifest = dict(old_ref.manifest) if old_ref else {}
        manifest, state = self.stage(handler, new, ref, state["cached"])
        versions = state["versions"]
        old_v, new_v = versions.get(old), versions.get(new) or {}
        seq = new_v.get("sequenceNumber")
        if old_v is not None and old_v["sequenceNumber"] is not None:
            copied = self.agent("settings-copy", [handler, old, new])  # byte for byte, same N
            seq = int(agent_value(copied, "copied") or seq or 0)
        elif seq is None:
            seq = 0
            self.write_settings(handler, new, seq, self._settings(spec))
        # WALA: with continueOnUpdateFailure a failing old.disable/old.uninstall is recorded, not fatal,
        # and its exit code is passed on to update (DISABLE_CMD_EXIT_CODE) and install/enable
        tolerant = manifest.get("continueOnUpdateFailure") in (True, "true", "True")
        disable_code = uninstall_code = "NOT_RUN"
        if (old_v is not None and old_v["state"] == "Enabled") or self._ran(state, op_id, "old.disable"):
            disable_code = self._exit_code(
                tolerant,
                partial(self.handler_command, op_id, "old.disable", handler, old, "disable", old_manifest or manifest),
            )
        env = {
            "AZURE_GUEST_AGENT_UPDATING_FROM_VERSION": old,
            "VERSION": new,
            "AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE": disable_code,
        }
        self.handler_command(op_id, "new.update", handler, new, "update", manifest, env)
        if old_v is not None or self._ran(state, op_id, "old.uninstall"):
            uninstall_code = self._exit_code(
                tolerant,
                partial(
                    self.handler_command, op_id, "old.uninstall", handler, old, "uninstall", old_manifest or manifest
                ),
            )
        after = {"AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE": uninstall_code}
        # WALA removes the old directory here; its package stays in the host cache (the LKG copy)
        self.agent("remove", [handler, old])
        # update leaves the new version NotInstalled; a resumed job finds install in the journal
        if manifest.get("updateMode", "UpdateWithInstall") != "UpdateWithoutInstall" and (
            new_v.get("state", "NotInstalled") == "NotInstalled" or self._ran(state, op_id, "new.install")
        ):
            self.handler_command(op_id, "new.install", handler, new, "install", manifest, after)
        self.handler_command(op_id, "new.enable", handler, new, "enable", manifest, after)
        self.health_gate(handler, new, int(seq) if seq is not None else 0, manifest)
        # healthy: the new version is the last known good now; the old cached package can go
        self._finish(handler, op_id, "upgrade", "succeeded", purge=old, fromVersion=old, toVersion=new)

    def _exit_code(self, tolerant: bool, step: Callable[[], None]) -> str:
        """Run a step of the old version; its exit code as text. Failures raise unless ``tolerant``."""
        try:
            step()
        except HandlerCommandFailed as exc:
            if not tolerant:
                raise
            log.warning("%s on %s: continuing (continueOnUpdateFailure): %s", exc.op, self.name, exc.message)
            return str(exc.exit_code if exc.exit_code is not None else exc.wala_code)
        return "0"

    # --- rollback ----------------------------------------------------------------------------------
    def rollback(self, spec: ExtensionSpec, failed_version: str, good_version: str) -> None:
        handler = self._check(spec, "rollback", failed_version, good_version)
        self._resumable("rollback", lambda: self._rollback_once(spec, handler, failed_version, good_version))

    def _rollback_once(self, spec: ExtensionSpec, handler: str, bad: str, good: str) -> None:
        state = self.host_state(handler)
        op_id = self._start(handler, "rollback", state, fromVersion=bad, toVersion=good)
        bad_ref = self.packages.get(spec.publisher, spec.type, bad)
        bad_manifest = dict(bad_ref.manifest) if bad_ref else {}
        bad_v = state["versions"].get(bad)
        if bad != good and bad_v is not None and bad_manifest:
            if bad_v["state"] == "Enabled" or self._ran(state, op_id, "rollback.new.disable"):
                self._ignore(
                    lambda: self.handler_command(op_id, "rollback.new.disable", handler, bad, "disable", bad_manifest)
                )
            state = self.host_state(handler)
            bad_v = state["versions"].get(bad) or {}
            if bad_v.get("state") in ("Installed", "FailedUpgrade") or self._ran(
                state, op_id, "rollback.new.uninstall"
            ):
                self._ignore(
                    lambda: self.handler_command(
                        op_id, "rollback.new.uninstall", handler, bad, "uninstall", bad_manifest
                    )
                )
        state = self.host_state(handler)
        ref = self.packages.get(spec.publisher, spec.type, good)
        if ref is None:
            raise PackageMissing(self.name, "rollback", f"no package is attached to {handler} {good}")
        manifest = dict(ref.manifest)
        if good not in state["versions"]:
            manifest, state = self.stage(handler, good, ref, state["cached"])  # from the host cache when there
        versions = state["versions"]
        good_v = versions.get(good) or {}
        seq = good_v.get("sequenceNumber")
        if seq is None:
            if bad in versions and versions[bad]["sequenceNumber"] is not None:
                copied = self.agent("settings-copy", [handler, bad, good])
                seq = int(agent_value(copied, "copied") or 0)
            else:
                seq = 0
                self.write_settings(handler, good, seq, self._settings(spec))
        if bad != good:
            self.agent("remove", [handler, bad, "purge"])
        if good_v.get("state", "NotInstalled") == "NotInstalled" or self._ran(state, op_id, "rollback.lkg.install"):
            self.handler_command(op_id, "rollback.lkg.install", handler, good, "install", manifest)
        if good_v.get("state") != "Enabled" or self._ran(state, op_id, "rollback.lkg.enable"):
            self.handler_command(op_id, "rollback.lkg.enable", handler, good, "enable", manifest)
        self.health_gate(handler, good, int(seq), manifest)
        self._finish(handler, op_id, "rollback", "succeeded", fromVersion=bad, toVersion=good)

    # --- remove ------------------------------------------------------------------------------------
    def remove(self, name: str) -> None:
        handler = self._handler_of(name)
        if handler is None:
            return
        self._resumable("remove", lambda: self._remove_once(handler))

    def _manifest_of(self, handler: str, version: str) -> dict[str, Any]:
        """The handlerManifest of a published version, from "Publisher.Type" (both may contain dots)."""
        pieces = handler.split(".")
        for cut in range(1, len(pieces)):
            ref = self.packages.get(".".join(pieces[:cut]), ".".join(pieces[cut:]), version)
            if ref is not None:
                return dict(ref.manifest)
        return {}

    def _remove_once(self, handler: str) -> None:
        state = self.host_state(handler)
        if not state["versions"] and not state["cached"]:
            return
        op_id = self._start(handler, "remove", state)
        for version, v in state["versions"].items():
            manifest = self._manifest_of(handler, version)
            if v["state"] == "Enabled" or self._ran(state, op_id, f"remove.{version}.disable"):
                step = f"remove.{version}.disable"
                self._ignore(partial(self.handler_command, op_id, step, handler, version, "disable", manifest))
            current = self.host_state(handler)["versions"].get(version) or {}
            if current.get("state") in ("Installed", "FailedUpgrade"):
                self.handler_command(op_id, f"remove.{version}.uninstall", handler, version, "uninstall", manifest)
            self.agent("remove", [handler, version, "purge"])
        for version in state["cached"]:
            self.agent("remove", [handler, version, "purge"])
        self._finish(handler, op_id, "remove", "succeeded")
