"""Manual upgrades (upgradeExtensions): validate the targets, queue one job per extension under one
operation, and finish that operation from the extension records once every job has ended."""

from __future__ import annotations

import logging
from typing import Any

from .. import errors
from ..clock import iso
from ..ids import MachineKey
from ..operations import FAILED as OP_FAILED
from ..operations import IN_PROGRESS, SUCCEEDED, new_operation
from ..records import ExtensionRecord, OperationRecord, UpgradeJob
from ..store.base import MachineDoc
from ..versions import newer
from . import job_state as J
from .base import EngineBase

log = logging.getLogger(__name__)


def _handler(record: ExtensionRecord) -> str:
    props = record["resource"]["properties"]
    return f"{props.get('publisher', '')}.{props.get('type', '')}".lower()


class ManualUpgrades(EngineBase):
    def manual_upgrade(self, key: MachineKey, targets: dict[str, Any], principal: str) -> OperationRecord:
        doc = self.store.get_machine(key)
        if doc is None:
            raise errors.resource_not_found("Microsoft.HybridCompute/machines", key.name, key.resource_group)
        if not targets:
            raise errors.invalid_parameter("extensionTargets must name at least one extension.", "extensionTargets")
        plan: list[tuple[str, str, str]] = []  # (extension key, from, to)
        for handler, target in targets.items():
            ext = self._resolve_target(doc, handler)
            record = doc["extensions"][ext]
            props = record["resource"]["properties"]
            version = (target or {}).get("targetVersion")
            if not version:
                raise errors.invalid_parameter(
                    f"extensionTargets['{handler}'].targetVersion is required.", f"extensionTargets.{handler}"
                )
            if self.catalog.get_version(props["publisher"], props["type"], version) is None:
                known = [v["version"] for v in self.catalog.versions(props["publisher"], props["type"])]
                raise errors.invalid_parameter(
                    f"Version '{version}' of {props['publisher']}.{props['type']} is not published"
                    + (f"; published versions: {', '.join(known)}." if known else "; no version is published."),
                    f"extensionTargets.{handler}.targetVersion",
                )
            current = props.get("typeHandlerVersion") or ""
            if current and newer(current, version):
                raise errors.invalid_parameter(
                    f"Extension '{record['resource']['name']}' runs {current}; upgrading to the older {version} is "
                    "a downgrade, which upgradeExtensions does not do. Remove and reinstall the extension instead.",
                    f"extensionTargets.{handler}.targetVersion",
                )
            if record.get("operation"):
                raise errors.extension_busy(record)
            if current != version:
                plan.append((ext, current, version))
        now = self.clock.now()
        op = new_operation(
            "extension.upgrade",
            key,
            doc["machine"]["id"],
            doc["machine"]["location"],
            principal,
            now,
            targets=[{"extension": e, "fromVersion": f, "toVersion": t} for e, f, t in plan],
        )
        with self._lock:
            for ext, _from, _to in plan:
                if (key.lower, ext) in self._inflight:
                    # one upgrade at a time: an automatic one was handed to a worker (or runs)
                    raise errors.another_operation_in_progress(
                        doc["extensions"][ext]["resource"]["id"], "an automatic upgrade"
                    )
            queued: set[tuple[str, str]] = set()
            for ext, _from, to in plan:
                job: UpgradeJob = {
                    "toVersion": to,
                    "correlationId": op["id"],
                    "manualOperation": op["id"],
                    "caller": principal,
                    "retry": True,
                }
                if not self._queue_job(key, ext, job, now, automatic=False):
                    raise errors.another_operation_in_progress(
                        doc["extensions"][ext]["resource"]["id"], "an automatic upgrade"
                    )
                queued.add((key.lower, ext))
                self._push(iso(now), key, ext)
                self._manual_queue.append(
                    (iso(now), next(self._seq), (key.subscription, key.resource_group, key.name), ext, "")
                )
            if not queued:
                op["status"], op["endTime"], op["result"] = SUCCEEDED, iso(now), []
            self.store.put_operation(op)
            if queued:
                self._manual[op["id"]] = queued
        self.kick()
        return op

    @staticmethod
    def _resolve_target(doc: MachineDoc, handler: str) -> str:
        wanted = handler.lower()
        exact: list[str] = [ext for ext, r in doc["extensions"].items() if _handler(r) == wanted]
        if len(exact) == 1:
            return exact[0]
        by_publisher: list[str] = [
            ext
            for ext, r in doc["extensions"].items()
            if str(r["resource"]["properties"].get("publisher", "")).lower() == wanted
        ]
        if not exact and len(by_publisher) == 1:
            return by_publisher[0]
        installed = (
            ", ".join(
                f"{r['resource']['properties'].get('publisher')}.{r['resource']['properties'].get('type')}"
                for r in doc["extensions"].values()
            )
            or "none"
        )
        if len(by_publisher) > 1 or len(exact) > 1:
            raise errors.invalid_parameter(
                f"'{handler}' matches several extensions on machine '{doc['machine']['name']}'; name one as "
                f"'<publisher>.<type>' (installed: {installed}).",
                f"extensionTargets.{handler}",
            )
        raise errors.invalid_parameter(
            f"Machine '{doc['machine']['name']}' has no extension '{handler}'; keys are '<publisher>.<type>' "
            f"(installed: {installed}).",
            f"extensionTargets.{handler}",
        )

    def _finish_manual(self, operation_id: str) -> None:
        op = self.store.get_operation(operation_id)
        self._manual.pop(operation_id, None)
        if op is None or op["status"] != IN_PROGRESS:
            return
        key = MachineKey(*op["machine"])
        doc = self.store.get_machine(key)
        failures = []
        for target in op["targets"]:
            record = doc["extensions"].get(target["extension"]) if doc else None
            outcome = (record.get("outcomes") or {}).get(operation_id) if record else None
            if outcome != J.SUCCEEDED:
                name = record["resource"]["name"] if record else target["extension"]
                message = {
                    J.ROLLED_BACK: f"upgrade to {target['toVersion']} failed; {target['fromVersion']} was reinstalled",
                    J.DROPPED: f"upgrade to {target['toVersion']} failed and the reinstall of the previous version "
                    "failed; remove and reinstall the extension, or update it",
                    J.NOT_RUN: "the host could not be reached; nothing was changed",
                }.get(outcome or "", f"the upgrade did not run ({outcome or 'removed'})")
                failures.append({"code": "ExtensionUpgradeFailed", "target": name, "message": message})
        op["endTime"] = iso(self.clock.now())
        if failures:
            op["status"] = OP_FAILED
            op["error"] = {
                "code": "ExtensionUpgradeFailed",
                "message": f"{len(failures)} of {len(op['targets'])} extension upgrades failed: "
                + "; ".join(f"{f['target']}: {f['message']}" for f in failures),
                "details": failures,
            }
            op["httpStatus"] = 409
        else:
            op["status"] = SUCCEEDED
            op["result"] = []
        self.store.put_operation(op)

    def _refresh_manual_operations(self) -> None:
        """After recovery: finish manual operations whose jobs all ended before the crash."""
        with self._lock:
            for operation_id in list(self._manual):
                op = self.store.get_operation(operation_id)
                if op is None:
                    self._manual.pop(operation_id)
                    continue
                key = MachineKey(*op["machine"])
                doc = self.store.get_machine(key)
                still = set()
                for target in op["targets"]:
                    record = doc["extensions"].get(target["extension"]) if doc else None
                    if record and operation_id not in (record.get("outcomes") or {}) and record.get("upgrade"):
                        still.add((key.lower, target["extension"]))
                self._manual[operation_id] = still
                if not still:
                    self._finish_manual(operation_id)
