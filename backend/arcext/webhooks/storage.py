"""Where the registry and the outbox live: the interface the service works through, with two implementations.

* :class:`~arcext.webhooks.file_storage.FileStorage` (the embedded store): ``hooks.json`` and
  ``outbox.jsonl`` in the data directory, held in memory by the one process that owns them.
* :class:`~arcext.webhooks.pg_outbox.PgStorage` (PostgreSQL): tables every node shares; ``shared`` is True,
  so the service re-reads the registry when told (LISTEN/NOTIFY and a short poll) and delivers a webhook
  only while it holds that webhook's claim (a session-level advisory lock).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .outbox import Message
from .registry import Hook


@dataclass(frozen=True)
class Outgoing:
    """An event on its way into the outbox: its CloudEvents body, once, for every webhook that wants it."""

    id: str  # the event's id (eventDataId), the messages' id
    type: str  # the webhook event type (payload.event_type)
    subject: str
    time: str  # eventTimestamp
    body: str  # the CloudEvents JSON document
    #: the webhooks this process's registry says want it (the embedded store files a message for each; the
    #: PostgreSQL storage matches the event with the registry's rows instead, which every node shares)
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class RolloutChange:
    """A rollout event on its way into the outbox: which rollout, and the state it announces."""

    event_id: str
    rollout_id: str
    action: str  # planned, frozen, paused, resumed, completed
    state: str  # the rollout's state the event carries


class WebhookStorage(Protocol):
    #: several nodes share this storage: the registry may change under this node, and a webhook's messages
    #: are delivered only by the node holding its claim
    shared: bool

    # --- the registry ----------------------------------------------------------------------------
    def hooks(self) -> list[Hook]:
        """Every webhook as stored now (fresh objects on PostgreSQL; the service keeps its own)."""
        ...

    def hook(self, name: str) -> Hook | None: ...

    def put_hook(self, hook: Hook, rollout_states: dict[str, str]) -> tuple[Hook, bool]:
        """Create ``hook``, or replace the url, events and secret of the one of that name (enabling it again);
        a new one moves the watermark to its creation and records ``rollout_states`` of rollouts not yet
        known. Returns (the webhook as stored, created)."""
        ...

    def delete_hook(self, name: str) -> bool:
        """Delete the webhook and its messages; False if there was none."""
        ...

    def disable_hook(self, hook: Hook, reason: str) -> None:
        """Disable this incarnation of the webhook (a 410 Gone); a PUT enables it again."""
        ...

    # --- the outbox ------------------------------------------------------------------------------
    def watermark(self) -> str:
        """The newest activity-log timestamp the outbox took in ('' before the first)."""
        ...

    def rollout_states(self) -> dict[str, str]:
        """The rollout states the outbox has announced (what a reconcile compares with the rollouts)."""
        ...

    def reset_rollout_states(self, states: dict[str, str]) -> None:
        """Take ``states`` as announced (a start without webhooks: nothing is owed for earlier changes)."""
        ...

    def add(
        self,
        events: list[Outgoing],
        watermark: str,
        rollouts: list[RolloutChange],
        wall: float,
        only: Hook | None = None,
    ) -> list[str]:
        """Put a message per event and interested webhook (``only`` that one, if given) in the outbox durably
        (created at ``wall``), move the watermark up to ``watermark`` and record the rollout changes; a message
        already there (same webhook, same event) or announcing a rollout change already announced is left
        out. Returns the event type of every message added."""
        ...

    def next_pending(self, hook: Hook) -> Message | None:
        """The oldest message not yet delivered, expired or gone (delivery is in outbox order)."""
        ...

    def record_attempt(self, hook: Hook, msg: Message, attempt: dict[str, Any]) -> None:
        """Record an attempt (delivery.attempt_record) and fold it into ``msg``."""
        ...

    def deliveries(self, hook: Hook) -> list[Message]:
        """Newest first: pending messages, then the last finished ones."""
        ...

    def pending_counts(self) -> dict[str, int]:
        """Messages waiting, per webhook name."""
        ...

    # --- who delivers --------------------------------------------------------------------------------
    def claim(self, hook: Hook) -> bool:
        """Whether this node delivers ``hook`` now (taking its claim if it is free)."""
        ...

    def release(self, hook: Hook) -> None:
        """Give up the claim (the webhook was deleted)."""
        ...

    def watch(
        self, on_hooks: Callable[[], None], on_messages: Callable[[], None], on_peer_gone: Callable[[], None]
    ) -> None:
        """Call ``on_hooks`` when another node may have changed the registry, ``on_messages`` when another
        node put messages in the outbox, and ``on_peer_gone`` when another node went away (from a thread of
        the storage's own); no-op for one process."""
        ...

    def close(self) -> None: ...
