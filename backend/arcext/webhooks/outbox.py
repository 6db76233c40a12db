"""The durable outbox ``<data-dir>/webhooks/outbox.jsonl``: an append-only, fsynced log of messages (one
per event and webhook, the CloudEvents body written once), delivery attempts, deleted webhooks, the
activity-log watermark and the announced rollout states. Replayed at start (:func:`read_outbox`) and
compacted with an atomic rewrite (:meth:`OutboxFile.rewrite`); the package docstring says why."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..store.atomic_storage import atomic_write_bytes, fsync_dir
from ..store.groupcommit import GroupCommitFile

_PROGRESS = ("attempts", "state", "last_status", "last_error", "last_at", "delivered_at")


def wall_stamp(t: float | None) -> str | None:
    """A wall-clock time (seconds since the epoch) as the deliveries list shows it; None stays None."""
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z") if t else None


@dataclass
class Message:
    """One event for one webhook, and how far its delivery got."""

    id: str
    hook: str
    type: str
    subject: str
    time: str
    body: str
    created: float  # wall clock (seconds since the epoch)
    seq: int
    attempts: int = 0
    next_at: float = 0.0
    state: str = "Pending"
    last_status: int | None = None
    last_error: str | None = None
    last_at: float | None = None
    delivered_at: float | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "subject": self.subject,
            "eventTime": self.time,
            "state": self.state,
            "attempts": self.attempts,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "lastAttemptAt": wall_stamp(self.last_at),
            "nextAttemptAt": wall_stamp(self.next_at) if self.state == "Pending" and self.attempts else None,
            "deliveredAt": wall_stamp(self.delivered_at),
            "createdAt": wall_stamp(self.created),
        }

    def record(self) -> dict[str, Any]:
        """The message as the outbox first writes it (its delivery progress follows as attempt records)."""
        return {
            "id": self.id,
            "hook": self.hook,
            "type": self.type,
            "subject": self.subject,
            "time": self.time,
            "body": self.body,
            "created": self.created,
            "seq": self.seq,
        }

    def compacted(self) -> dict[str, Any]:
        """The message with its delivery progress folded in (what a compaction keeps)."""
        return {**self.record(), **{k: getattr(self, k) for k in _PROGRESS}}

    def apply_attempt(self, a: dict[str, Any]) -> None:
        """Fold in an attempt record (``{"a": ...}`` in the outbox)."""
        self.attempts, self.state = a["attempts"], a["state"]
        self.last_status, self.last_error, self.last_at = a.get("status"), a.get("error"), a["at"]
        self.next_at = a.get("next", 0.0)
        self.delivered_at = a.get("delivered")


@dataclass
class OutboxContents:
    """What a replay of the outbox found."""

    messages: list[Message] = field(default_factory=list)  # in outbox order (by seq)
    watermark: str = ""
    rollout_states: dict[str, str] = field(default_factory=dict)
    seq: int = 0


def read_outbox(path: Path) -> OutboxContents:
    """Replay the outbox (a torn final line was never acknowledged, and is ignored)."""
    found = OutboxContents()
    messages: dict[tuple[str, str], Message] = {}
    if path.exists():
        with open(path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                rec = orjson.loads(line)
                if "m" in rec:
                    m = rec["m"]
                    msg = Message(
                        m["id"], m["hook"], m["type"], m["subject"], m["time"], m["body"], m["created"], m["seq"]
                    )
                    for k in _PROGRESS:
                        if k in m:
                            setattr(msg, k, m[k])
                    messages[(msg.hook, msg.id)] = msg
                    found.seq = max(found.seq, msg.seq)
                elif "a" in rec:
                    known = messages.get((rec["a"]["hook"], rec["a"]["id"]))
                    if known is not None:
                        known.apply_attempt(rec["a"])
                elif "w" in rec:
                    found.watermark = max(found.watermark, rec["w"])
                elif "r" in rec:
                    found.rollout_states.update(rec["r"])
                elif "d" in rec:
                    for key in [k for k in messages if k[0] == rec["d"]]:
                        del messages[key]
    found.messages = sorted(messages.values(), key=lambda m: m.seq)
    return found


def snapshot(watermark: str, rollout_states: dict[str, str], messages: Iterable[Message]) -> list[dict[str, Any]]:
    """The records a compacted outbox starts with."""
    return [{"w": watermark}, {"r": rollout_states}, *({"m": msg.compacted()} for msg in messages)]


class OutboxFile:
    """The outbox file: rewritten atomically, then appended to with group commits (fsynced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._file: GroupCommitFile | None = None

    @property
    def is_open(self) -> bool:
        return self._file is not None

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the file with ``records`` (atomically), and append to the new file from now on."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, b"".join(orjson.dumps(r) + b"\n" for r in records))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)
        fsync_dir(self.path.parent)
        if self._file is None:
            self._file = GroupCommitFile(fd)
        else:
            os.close(self._file.swap(fd))
        self.size = self.path.stat().st_size

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append durably (the file must be open: :meth:`rewrite` opens it)."""
        assert self._file is not None
        payload = b"".join(orjson.dumps(r) + b"\n" for r in records)
        self._file.append(payload)
        self.size += len(payload)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            os.close(self._file.swap(-1))
            self._file = None
