"""The VM-extension handler protocol on one Windows host (docs/hosts.md): install, upgrade, rollback
and remove, in WALA's order, over the agent scripts of :mod:`arcext.hosts.windows_steps`.

An upgrade stages the package (the old one stays in the host cache as the last-known-good copy),
copies the settings byte for byte, then old.disable → new.update → old.uninstall → new.install →
new.enable with per-command timeouts, and gates on the status file and the heartbeat. Each handler
step is journalled on the host, so after a dropped connection the driver reconnects once and resumes
from the journal. Rollback uses the same primitives to bring the last-known-good version back.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

from .agent import HandlerCommandFailed, PackageMissing
from .base import ExtensionSpec, InstalledExtension
from .packages import PackageRef
from .windows_steps import AgentSteps, check_handler, check_names


class AgentScriptDriver(AgentSteps):
    """HostDriver for one Windows host; a transport subclass (psrp or winrm) supplies the session."""

    def installed(self, name: str) -> InstalledExtension | None:
        handler = self._handler_of(name)
        if handler is None:
            return None
        check_handler(self.name, "installed", handler)
        return self._installed(name, self._versions(self.host_state(handler)))

    def _start(self, handler: str, kind: str, state: dict[str, Any], **fields: Any) -> str:
        op_id, call = self._start_call(handler, kind, state, **fields)
        if call is not None:
            self._script(*call)
        return op_id

    def _start_call(
        self, handler: str, kind: str, state: dict[str, Any], **fields: Any
    ) -> tuple[str, tuple[str, dict[str, Any]] | None]:
        """The operation id, and the Write-Journal call that starts it (None when it resumes the
        unfinished operation the host journal records)."""
        resumed = self._resumed(handler, kind, state, fields)
        if resumed is not None:
            return resumed, None
        op_id = str(uuid.uuid4())
        document = {
            "operationId": op_id,
            "kind": kind,
            **fields,
            "startedAt": self._stamp(),
            "finished": False,
            "steps": {},
        }
        return op_id, ("Write-Journal", {"Handler": handler, "ContentJson": json.dumps(document)})

    def _finish(self, handler: str, op_id: str, kind: str, outcome: str, **fields: Any) -> None:
        self._script(*self._finish_call(handler, op_id, kind, outcome, **fields))

    @staticmethod
    def _finish_call(handler: str, op_id: str, kind: str, outcome: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        document = {"operationId": op_id, "kind": kind, **fields, "finished": True, "outcome": outcome, "steps": {}}
        return "Write-Journal", {"Handler": handler, "ContentJson": json.dumps(document)}

    @staticmethod
    def _done(state: dict[str, Any], op_id: str, step: str) -> bool:
        journal = state.get("journal") or {}
        return journal.get("operationId") == op_id and step in (journal.get("steps") or {})

    @staticmethod
    def _settings_call(handler: str, version: str, seq: int, content: bytes) -> tuple[str, dict[str, Any]]:
        """The Write-RuntimeSettings call that writes ``<seq>.settings`` of one version."""
        return (
            "Write-RuntimeSettings",
            {
                "Handler": handler,
                "Version": version,
                "SequenceNumber": seq,
                "ContentBase64": base64.b64encode(content).decode(),
            },
        )

    def _settings_seq(self, handler: str, version: str) -> int:
        versions = self._versions(self.host_state(handler))
        seq = versions.get(version, {}).get("sequenceNumber")
        if seq is None:
            raise HandlerCommandFailed(self.name, "settings", f"{handler} {version} has no settings file", None, 1009)
        return int(seq)

    # --- install (extension create / reconfigure) ----------------------------------------------
    def install(self, spec: ExtensionSpec, version: str) -> None:
        check_names(self.name, "install", spec.publisher, spec.type, version)
        self._check_policy(spec, "install")
        self._ensure_session()
        self._resumable("install", lambda: self._install_once(spec, version))

    def _install_once(self, spec: ExtensionSpec, version: str) -> None:
        handler = spec.handler
        self.handlers[spec.name.lower()] = handler
        state = self.host_state(handler)
        settings = self._settings(spec)
        op_id = self._start(handler, "install", state, version=version)
        ref = self._package(spec, version)
        manifest = self.stage(handler, version, ref, state.get("cached") or [])
        state = self.host_state(handler)
        current = self._versions(state).get(version)
        seq = current.get("sequenceNumber") if current else None
        if current and current["state"] == "Enabled" and not self._done(state, op_id, "install.enable"):
            seq = (seq or 0) + 1  # a new goal state for a running extension: next sequence number
            self._script(*self._settings_call(handler, version, seq, settings))
        elif seq is None:
            seq = 0
            self._script(*self._settings_call(handler, version, seq, settings))
        if (current and current["state"] == "NotInstalled") or self._done(state, op_id, "install.install"):
            self.handler_command(op_id, "install.install", handler, version, "install")
        self.handler_command(op_id, "install.enable", handler, version, "enable")
        self.health_gate(handler, version, int(seq), manifest)
        self._finish(handler, op_id, "install", "succeeded", version=version)

    # --- upgrade -----------------------------------------------------------------------------------
    def upgrade(self, spec: ExtensionSpec, from_version: str, to_version: str) -> None:
        check_names(self.name, "upgrade", spec.publisher, spec.type, from_version, to_version)
        self._check_policy(spec, "upgrade")
        ref = self._package(spec, to_version)
        self._ensure_session()
        self._resumable("upgrade", lambda: self._upgrade_once(spec, from_version, to_version, ref))

    def _upgrade_once(self, spec: ExtensionSpec, old: str, new: str, ref: PackageRef) -> None:
        """The upgrade in four pipelines (plus the upload when the host does not cache the package):
        the host state; [start the journal, extract, settings, old.disable → new.update →
        old.uninstall]; [remove the old folder, new.install → new.enable, the first status look];
        [purge the old package, finish the journal]. The handler steps of one pipeline are chained on
        the host (each starts only after the one before succeeded, each journalled before it is
        taken, each waited for on the host); the driver reads every answer in order and stops at the
        first failure, so nothing after a failed step runs."""
        handler = spec.handler
        self.handlers[spec.name.lower()] = handler
        state = self.host_state(handler)
        versions = self._versions(state)
        old_v, new_v = versions.get(old), versions.get(new)
        op_id, start = self._start_call(handler, "upgrade", state, fromVersion=old, toVersion=new)
        if new not in (state.get("cached") or []):
            self.upload(handler, new, ref)
        calls: list[tuple[str, dict[str, Any]]] = [start] if start is not None else []
        expand = len(calls)
        calls.append(self._expand_call(handler, new, ref))
        # settings: the old version's files, byte for byte (same N); a fresh file only if the old is gone
        # (staging does not touch either version's settings, so the state read before it decides)
        seqs = [int(v["sequenceNumber"]) for v in (old_v, new_v) if v and v.get("sequenceNumber") is not None]
        if old_v is not None and old_v.get("sequenceNumber") is not None:
            calls.append(("Copy-RuntimeSettings", {"Handler": handler, "FromVersion": old, "ToVersion": new}))
        elif new_v is None or new_v.get("sequenceNumber") is None:
            calls.append(self._settings_call(handler, new, 0, self._settings(spec)))
            seqs.append(0)
        seq = max(seqs)
        env = {"AZURE_GUEST_AGENT_UPDATING_FROM_VERSION": old, "VERSION": new}
        steps: list[tuple[str, str, str, dict[str, Any]]] = []  # (step, version, command, params)

        def chain(step: str, version: str, command: str, **kw: Any) -> None:
            after = steps[-1][0] if steps else None
            steps.append(
                (step, version, command, self.step_params(op_id, step, handler, version, command, after=after, **kw))
            )

        if (old_v is not None and old_v["state"] == "Enabled") or self._done(state, op_id, "old.disable"):
            chain("old.disable", old, "disable")
        chain("new.update", new, "update", env=env)
        if old_v is not None or self._done(state, op_id, "old.uninstall"):
            chain("old.uninstall", old, "uninstall")
        results = self._scripts(
            calls + [("Invoke-HandlerCommand", p) for *_, p in steps],
            deadline_s=self._batch_deadline([p for *_, p in steps]),
        )
        manifest: dict[str, Any] = results[expand].get("handlerManifest") or {}
        self._outcomes(op_id, handler, steps, results[len(calls) :])

        # WALA removes the old directory here; its package stays in the host cache (the LKG copy)
        calls = [("Remove-HandlerVersion", {"Handler": handler, "Version": old})]
        steps = []
        if manifest.get("updateMode", "UpdateWithInstall") != "UpdateWithoutInstall":
            # the host decides: only a version update left NotInstalled (or a journalled step) is installed
            chain("new.install", new, "install", only_in_state="NotInstalled")
        chain("new.enable", new, "enable")
        status_call = ("Get-HandlerStatus", {"Handler": handler, "Version": new, "SequenceNumber": seq})
        results = self._scripts(
            calls + [("Invoke-HandlerCommand", p) for *_, p in steps] + [status_call],
            deadline_s=self._batch_deadline([p for *_, p in steps]),
        )
        self._outcomes(op_id, handler, steps, results[1:-1])
        # the status look in the batch counts only if enable had finished when it was taken
        enable = results[-2]
        enabled_in_batch = not enable.get("pending") and not enable.get("blocked")
        self.health_gate(handler, new, seq, manifest, first=results[-1] if enabled_in_batch else None)
        # healthy: the new version is now the last known good; the old cached package can go
        self._scripts(
            [
                ("Remove-HandlerVersion", {"Handler": handler, "Version": old, "PurgeCache": True}),
                self._finish_call(handler, op_id, "upgrade", "succeeded", fromVersion=old, toVersion=new),
            ]
        )

    def _batch_deadline(self, steps: list[dict[str, Any]]) -> float:
        waits = sum(float(p.get("WaitSeconds") or 0) for p in steps)
        return waits + 2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s

    def _outcomes(
        self, op_id: str, handler: str, steps: list[tuple[str, str, str, dict[str, Any]]], results: list[dict[str, Any]]
    ) -> None:
        """The answers of chained steps, in order: each polled to its outcome (a step the host
        blocked because the one before was still pending is asked again), the first failure raised."""
        for (step, version, command, params), result in zip(steps, results, strict=True):
            self.handler_command(op_id, step, handler, version, command, params=params, first=result)

    # --- rollback ----------------------------------------------------------------------------------
    def rollback(self, spec: ExtensionSpec, failed_version: str, good_version: str) -> None:
        check_names(self.name, "rollback", spec.publisher, spec.type, failed_version, good_version)
        self._ensure_session()
        self._resumable("rollback", lambda: self._rollback_once(spec, failed_version, good_version))

    def _step_fn(self, op_id: str, step: str, handler: str, version: str, command: str) -> Callable[[], Any]:
        return lambda: self.handler_command(op_id, step, handler, version, command)

    def _rollback_once(self, spec: ExtensionSpec, bad: str, good: str) -> None:
        handler = spec.handler
        state = self.host_state(handler)
        op_id = self._start(handler, "rollback", state, fromVersion=bad, toVersion=good)
        versions = self._versions(state)
        bad_v = versions.get(bad)
        if bad != good and bad_v is not None:
            if bad_v["state"] == "Enabled" or self._done(state, op_id, "rollback.new.disable"):
                self._ignore(lambda: self.handler_command(op_id, "rollback.new.disable", handler, bad, "disable"))
            state = self.host_state(handler)
            bad_v = self._versions(state).get(bad) or {}
            if bad_v.get("state") in ("Installed", "FailedUpgrade") or self._done(
                state, op_id, "rollback.new.uninstall"
            ):
                self._ignore(lambda: self.handler_command(op_id, "rollback.new.uninstall", handler, bad, "uninstall"))
        state = self.host_state(handler)
        good_v = self._versions(state).get(good)
        ref = self.packages.get(spec.publisher, spec.type, good)
        manifest: dict[str, Any] = dict(ref.manifest) if ref is not None else {}
        if good_v is None:
            if ref is None:
                raise PackageMissing(self.name, "rollback", f"no package is attached to {handler} {good}")
            manifest = self.stage(handler, good, ref, state.get("cached") or [])  # from the host cache if there
        state = self.host_state(handler)
        versions = self._versions(state)
        good_v = versions.get(good) or {}
        if good_v.get("sequenceNumber") is None:
            if bad in versions and versions[bad].get("sequenceNumber") is not None:
                self._script("Copy-RuntimeSettings", {"Handler": handler, "FromVersion": bad, "ToVersion": good})
            else:
                self._script(*self._settings_call(handler, good, 0, self._settings(spec)))
        if bad != good:
            self._script("Remove-HandlerVersion", {"Handler": handler, "Version": bad, "PurgeCache": True})
        if good_v.get("state") == "NotInstalled" or self._done(state, op_id, "rollback.lkg.install"):
            self.handler_command(op_id, "rollback.lkg.install", handler, good, "install")
        if good_v.get("state") != "Enabled" or self._done(state, op_id, "rollback.lkg.enable"):
            self.handler_command(op_id, "rollback.lkg.enable", handler, good, "enable")
        self.health_gate(handler, good, self._settings_seq(handler, good), manifest)
        self._finish(handler, op_id, "rollback", "succeeded", fromVersion=bad, toVersion=good)

    # --- remove ------------------------------------------------------------------------------------
    def remove(self, name: str) -> None:
        handler = self._handler_of(name)
        if handler is None:
            return
        check_handler(self.name, "remove", handler)
        self._ensure_session()
        self._resumable("remove", lambda: self._remove_once(handler))

    def _remove_once(self, handler: str) -> None:
        state = self.host_state(handler)
        versions = self._versions(state)
        if not versions and not state.get("cached"):
            return
        op_id = self._start(handler, "remove", state)
        for version, v in versions.items():
            if v["state"] == "Enabled" or self._done(state, op_id, f"remove.{version}.disable"):
                self._ignore(self._step_fn(op_id, f"remove.{version}.disable", handler, version, "disable"))
            state = self.host_state(handler)
            current = self._versions(state).get(version) or {}
            if current.get("state") in ("Installed", "FailedUpgrade") or self._done(
                state, op_id, f"remove.{version}.uninstall"
            ):
                self.handler_command(op_id, f"remove.{version}.uninstall", handler, version, "uninstall")
            self._script("Remove-HandlerVersion", {"Handler": handler, "Version": version, "PurgeCache": True})
        for version in state.get("cached") or []:
            self._script("Remove-HandlerVersion", {"Handler": handler, "Version": version, "PurgeCache": True})
        self._finish(handler, op_id, "remove", "succeeded")
