"""The Linux handler steps, each one call of ``hosts/sh/agent.sh``: read the host state, stage a
package (a deterministic tar of the zip, SHA-256 verified, kept in the host cache as the
last-known-good copy), write settings and the journal, run one handler command to its outcome
(detached from the SSH session, with WALA's timeouts), and gate on the status file and the heartbeat,
in WALinuxAgent's layout: ``<root>/var/lib/waagent/<Publisher>.<Type>-<version>/``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import stat
import tarfile
import time
import zipfile
from collections.abc import Callable
from typing import Any

from .agent import DEFAULT_TIMEOUTS, INVALID_STATUS_CODE, HandlerCommandFailed
from .base import IntegrityError, RemoteScriptError, UpgradeRefused
from .packages import PackageRef
from .ssh_channel import SshAgentChannel

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")  # no leading "." or "-"
VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,3}$")
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value) or ".." in value:
        raise UpgradeRefused("", "validate", f"invalid {what} '{value}': letters, digits, '.', '-', '_' only")
    return value


def check_version(value: str) -> str:
    if not VERSION_RE.match(value):
        raise UpgradeRefused("", "validate", f"invalid version '{value}': dotted numbers only")
    return value


def package_tar(ref: PackageRef) -> bytes:
    """The package zip as a deterministic tar for ``tar -x`` on the host (minimal hosts have no unzip).
    Refuses members that would leave the handler directory (absolute, '..', links, devices)."""
    out = io.BytesIO()
    total = 0
    with zipfile.ZipFile(ref.path) as zf, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            name = info.filename
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if name.startswith("/") or "\\" in name or ".." in parts or not parts:
                raise UpgradeRefused("", "stage", f"the package has an unsafe member name '{name}'")
            mode = (info.external_attr >> 16) & 0o177777
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # symlinks, devices, fifos
                raise UpgradeRefused("", "stage", f"the package member '{name}' is not a plain file or folder")
            ti = tarfile.TarInfo("/".join(parts))
            ti.mtime = 0
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if info.is_dir():
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
                continue
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise UpgradeRefused("", "stage", "the package unpacks to more than 1 GiB")
            data = zf.read(info)
            ti.size = len(data)
            ti.mode = (stat.S_IMODE(mode) | 0o644) & 0o755 if mode else 0o755
            tf.addfile(ti, io.BytesIO(data))
    return out.getvalue()


class SshSteps(SshAgentChannel):
    """The handler steps on one Linux host (the operations that order them: :class:`arcext.hosts.ssh.SshDriver`)."""

    # ============================================================================================
    # Primitives
    # ============================================================================================
    @staticmethod
    def _b64(value: str) -> str:
        return base64.b64decode(value).decode("utf-8", "replace") if value else ""

    def host_state(self, handler: str) -> dict[str, Any]:
        return self._parse_state(self.agent("state", [handler]))

    def _parse_state(self, raw: dict[str, Any]) -> dict[str, Any]:
        versions = {
            v: {"version": v, "state": st, "sequenceNumber": None if seq == "-" else int(seq)}
            for v, st, seq in raw.get("version", [])
        }
        journal = None
        if raw.get("journal"):
            try:
                journal = json.loads(self._b64(agent_value(raw, "journal")))
            except ValueError:
                journal = None
        steps = {s[0]: s[1] for s in raw.get("step", [])}
        return {
            "versions": versions,
            "cached": [c[0] for c in raw.get("cached", [])],
            "journal": journal,
            "steps": steps,
        }

    def stage(
        self, handler: str, version: str, ref: PackageRef, cached: list[str]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Upload (unless cached on the host) and extract one version; returns its handlerManifest and
        the host state after staging (the agent reports it in the same call)."""
        try:
            data = package_tar(ref)
        except UpgradeRefused as exc:
            raise UpgradeRefused(self.name, "stage", exc.message) from None
        sha = hashlib.sha256(data).hexdigest()
        if version in cached:
            try:
                raw = self.agent("stage", [handler, version, sha, "cached"])
                return dict(ref.manifest), self._parse_state(raw)
            except RemoteScriptError as exc:
                log.info(
                    "Cached package of %s %s on %s unusable (%s); uploading", handler, version, self.name, exc.message
                )
        for attempt in (1, 2):
            result = self.agent(
                "stage",
                [handler, version, sha, "upload"],
                stdin=data,
                deadline_s=2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s + len(data) / 50_000,
            )
            if result.get("verified") == [["1"]]:
                return dict(ref.manifest), self._parse_state(result)
            if attempt == 2:
                got = agent_value(result, "sha256") or "?"
                raise IntegrityError(self.name, "upload", f"{handler} {version}: the host computed SHA-256 {got}")
        raise AssertionError("unreachable")

    def write_settings(self, handler: str, version: str, seq: int, content: bytes) -> None:
        self.agent("settings-write", [handler, version, str(seq)], stdin=content)

    def write_journal(self, handler: str, journal: dict[str, Any], purge: str | None = None) -> None:
        self.agent("journal", [handler, *([purge] if purge else [])], stdin=json.dumps(journal).encode())

    def handler_command(
        self,
        op_id: str,
        step: str,
        handler: str,
        version: str,
        command: str,
        manifest: dict[str, Any],
        env: dict[str, str] | None = None,
    ) -> None:
        timeout = self.conn.handler_timeouts.get(command, DEFAULT_TIMEOUTS[command])
        cmd = str(manifest.get(f"{command}Command") or "")
        if not cmd:
            if command in ("install", "enable"):
                raise HandlerCommandFailed(self.name, step, f"the manifest has no {command}Command", None, 1003)
            return  # WALA: a missing optional command is a no-op
        if cmd.startswith("/") or ".." in cmd:
            raise HandlerCommandFailed(self.name, step, f"{command}Command leaves the handler folder", None, 1003)
        args = [handler, version, command, cmd, str(timeout), op_id, step]
        args += [f"{k}={v}" for k, v in (env or {}).items()]
        result = self.agent(
            "run", args, deadline_s=timeout + 2 * self.conn.operation_timeout_s + self.tuning.deadline_margin_s
        )
        if result.get("resumed"):
            log.info("%s on %s: step %s %s", handler, self.name, step, agent_value(result, "resumed"))
        code = agent_value(result, "exit") or "?"
        timed_out = bool(result.get("timedout")) or code == "timeout"
        stderr = self._b64(agent_value(result, "stderr"))
        self._command_outcome(step, handler, version, command, timeout, timed_out, code, stderr)

    def health_gate(self, handler: str, version: str, seq: int, manifest: dict[str, Any]) -> None:
        """Wait for a terminal status (and a fresh ready heartbeat when the handler reports one)."""
        wants_heartbeat = self._wants_heartbeat(manifest)
        deadline = time.monotonic() + self.conn.status_deadline_s
        last = "no status file yet"
        while True:
            raw = self.agent("status", [handler, version, str(seq)])
            status = _first_status(self._b64(agent_value(raw, "status"))) if raw.get("status") else None
            if status == "invalid":
                raise HandlerCommandFailed(
                    self.name, "health", "the status file is not valid JSON", None, INVALID_STATUS_CODE
                )
            if isinstance(status, dict):
                message = (status.get("formattedMessage") or {}).get("message")
                beat = _heartbeat(raw.get("heartbeat"), self._b64) if wants_heartbeat else None
                not_yet = self._not_yet_healthy(handler, version, status, message, beat, wants_heartbeat)
                if not_yet is None:
                    return
                last = not_yet
            if time.monotonic() >= deadline:
                raise self._unhealthy(handler, version, last)
            time.sleep(self.tuning.status_poll_s)


def agent_value(result: dict[str, Any], key: str, index: int = 0) -> str:
    """The ``index``-th word of the first ``key`` line of an agent answer ("" when absent or empty)."""
    lines = result.get(key) or []
    return str(lines[0][index]) if lines and len(lines[0]) > index else ""


def _first_status(text: str) -> dict[str, Any] | str | None:
    """The ``status`` object of a WALA status file (a one-element list), "invalid", or None when empty."""
    if not text.strip():
        return None
    try:
        doc = json.loads(text)
        entry = doc[0] if isinstance(doc, list) else doc
        status = entry["status"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "invalid"
    return status if isinstance(status, dict) else "invalid"


def _heartbeat(raw: list[list[str]] | None, decode: Callable[[str], str]) -> tuple[int, str] | None:
    """(age in seconds, status) of the heartbeat file, or None."""
    if not raw:
        return None
    age, content = int(raw[0][0]), decode(raw[0][1] if len(raw[0]) > 1 else "")
    try:
        doc = json.loads(content)
        entry = doc[0] if isinstance(doc, list) else doc
        status = str(entry["heartbeat"]["status"]).lower()
    except (ValueError, KeyError, IndexError, TypeError):
        status = "unreadable"
    return age, status
