"""The embedded store's webhooks: the registry ``<data-dir>/webhooks/hooks.json`` and the outbox
``<data-dir>/webhooks/outbox.jsonl``, held in memory by the one process that owns the data directory (the
package docstring has the design; outbox.py the file's format)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .delivery import PENDING, Settings
from .outbox import Message, OutboxFile, read_outbox, snapshot
from .registry import HISTORY, Hook, read_hooks, write_hooks
from .storage import Outgoing, RolloutChange


class FileStorage:
    shared = False

    def __init__(self, directory: Path, settings: Settings) -> None:
        self.directory = directory
        self.settings = settings
        self._lock = threading.RLock()
        self._hooks: dict[str, Hook] = {}
        self._pending: dict[str, deque[Message]] = {}
        self._history: dict[str, deque[Message]] = {}
        self._known: set[tuple[str, str]] = set()  # (hook, message id) in the outbox
        self._seq = 0
        self._watermark = ""
        self._rollout_states: dict[str, str] = {}
        self._hooks_path = directory / "hooks.json"
        self._outbox = OutboxFile(directory / "outbox.jsonl")
        self._load()
        if self._hooks or self._outbox.path.exists():
            self._compact()  # a server that never had a webhook writes nothing here

    # --- persistence ---------------------------------------------------------------------------
    def _load(self) -> None:
        for hook in read_hooks(self._hooks_path):
            self._adopt(hook)
        found = read_outbox(self._outbox.path)
        self._seq, self._watermark, self._rollout_states = found.seq, found.watermark, found.rollout_states
        for msg in found.messages:
            if msg.hook not in self._hooks:
                continue
            self._known.add((msg.hook, msg.id))
            (self._pending if msg.state == PENDING else self._history)[msg.hook].append(msg)

    def _adopt(self, hook: Hook) -> None:
        hook.uid = hook.name
        self._hooks[hook.name] = hook
        self._pending[hook.name] = deque()
        self._history[hook.name] = deque(maxlen=HISTORY)

    def _compact(self) -> None:
        """Rewrite the outbox with what it must keep (atomically), then append to it."""
        messages = [msg for name in self._hooks for msg in [*self._history[name], *self._pending[name]]]
        self._outbox.rewrite(snapshot(self._watermark, self._rollout_states, messages))

    def _append(self, records: list[dict[str, Any]]) -> None:
        if not self._outbox.is_open:
            self._compact()
        self._outbox.append(records)

    def _save_hooks(self) -> None:
        write_hooks(self._hooks_path, self._hooks.values())

    # --- the registry ----------------------------------------------------------------------------
    def hooks(self) -> list[Hook]:
        with self._lock:
            return list(self._hooks.values())

    def hook(self, name: str) -> Hook | None:
        with self._lock:
            return self._hooks.get(name)

    def put_hook(self, hook: Hook, rollout_states: dict[str, str]) -> tuple[Hook, bool]:
        with self._lock:
            existing = self._hooks.get(hook.name)
            if existing is None:
                self._adopt(hook)
                # events from now on: the watermark moves here so a restart does not look further back
                self._watermark = max(self._watermark, hook.created_at)
                for rollout_id, state in rollout_states.items():
                    self._rollout_states.setdefault(rollout_id, state)
                self._append([{"w": self._watermark}, {"r": self._rollout_states}])
            else:
                existing.url, existing.events, existing.sealed = hook.url, hook.events, hook.sealed
                existing.disabled, existing.disabled_reason = False, None
            self._save_hooks()
            return existing or hook, existing is None

    def delete_hook(self, name: str) -> bool:
        with self._lock:
            if self._hooks.pop(name, None) is None:
                return False
            del self._pending[name], self._history[name]
            self._known = {k for k in self._known if k[0] != name}
            self._append([{"d": name}])
            self._save_hooks()
            return True

    def disable_hook(self, hook: Hook, reason: str) -> None:
        with self._lock:
            if self._hooks.get(hook.name) is not hook:
                return
            hook.disabled, hook.disabled_reason = True, reason
            self._save_hooks()

    # --- the outbox ------------------------------------------------------------------------------
    def watermark(self) -> str:
        with self._lock:
            return self._watermark

    def rollout_states(self) -> dict[str, str]:
        with self._lock:
            return dict(self._rollout_states)

    def reset_rollout_states(self, states: dict[str, str]) -> None:
        with self._lock:
            self._rollout_states = dict(states)

    def add(
        self,
        events: list[Outgoing],
        watermark: str,
        rollouts: list[RolloutChange],
        wall: float,
        only: Hook | None = None,
    ) -> list[str]:
        with self._lock:
            records: list[dict[str, Any]] = []
            added: list[Message] = []
            for event in events:
                for name in event.hooks:
                    if (
                        (only is not None and name != only.name)
                        or name not in self._hooks
                        or (name, event.id) in self._known
                    ):
                        continue
                    self._seq += 1
                    msg = Message(event.id, name, event.type, event.subject, event.time, event.body, wall, self._seq)
                    records.append({"m": msg.record()})
                    added.append(msg)
            if watermark > self._watermark:
                records.append({"w": watermark})
            states = {change.rollout_id: change.state for change in rollouts}
            if states:
                records.append({"r": states})
            if not records:
                return []
            self._append(records)
            self._watermark = max(self._watermark, watermark)
            self._rollout_states.update(states)
            for msg in added:
                self._known.add((msg.hook, msg.id))
                self._pending[msg.hook].append(msg)
            return [msg.type for msg in added]

    def next_pending(self, hook: Hook) -> Message | None:
        with self._lock:
            pending = self._pending.get(hook.name)
            return pending[0] if pending else None

    def record_attempt(self, hook: Hook, msg: Message, attempt: dict[str, Any]) -> None:
        with self._lock:
            if self._hooks.get(hook.name) is not hook:
                return  # deleted meanwhile
            self._append([{"a": attempt}])
            msg.apply_attempt(attempt)
            pending = self._pending[hook.name]
            if msg.state != PENDING and pending and pending[0] is msg:
                pending.popleft()
                self._history[hook.name].append(msg)
            if not any(self._pending.values()) and self._outbox.size > self.settings.compact_bytes:
                self._compact()

    def deliveries(self, hook: Hook) -> list[Message]:
        with self._lock:
            if hook.name not in self._hooks:
                return []
            return list(reversed([*self._history[hook.name], *self._pending[hook.name]]))

    def pending_counts(self) -> dict[str, int]:
        with self._lock:
            return {name: len(pending) for name, pending in self._pending.items()}

    # --- who delivers: this process, always ------------------------------------------------------------
    def claim(self, hook: Hook) -> bool:
        return True

    def release(self, hook: Hook) -> None:
        pass

    def watch(
        self, on_hooks: Callable[[], None], on_messages: Callable[[], None], on_peer_gone: Callable[[], None]
    ) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            self._outbox.close()
