"""Signed webhooks: a registry, a durable outbox and one delivery worker per webhook, over a storage
(storage.py) that is either the data directory's files (the embedded store) or PostgreSQL tables every node
of a cluster shares (pg_outbox.py; docs/multinode.md, "Webhooks").

* **Registry** (registry.py) ``<data-dir>/webhooks/hooks.json`` (replaced atomically), or ``webhook_hooks``:
  name, url, events, the secret sealed with the key file's SecretBox (never returned, never logged), disabled
  state.
* **Outbox** (outbox.py) ``<data-dir>/webhooks/outbox.jsonl``: an append-only, fsynced log of messages (one
  per event and webhook: the CloudEvents 1.0 JSON body of payload.py, written once) and of delivery
  attempts. It is replayed at start and compacted (pending messages and recent history) with an atomic
  rewrite. On PostgreSQL: ``webhook_messages``, one row per message keyed by (webhook, CloudEvent id), so
  every node may put the same event in.
* **Crash window.** Events reach this package after they are durable in the activity log (the store's
  journal, or the database), and are written to the outbox by a background thread (service.py), so an
  upgrade never waits for a webhook. A kill -9 between the two is repaired at start: the outbox keeps a
  watermark (the newest activity-log timestamp it holds) and the rollout states it has announced;
  ``reconcile`` puts back every later activity-log event and every rollout state change the outbox lacks (by
  event id). On PostgreSQL the other nodes do the same as soon as the dead node's presence lock is gone.
* **Delivery** (delivery.py) is at least once, in outbox order per webhook (so per extension, too): each
  message is signed per Standard Webhooks (``webhook-id`` = the CloudEvent id, stable across retries,
  ``webhook-timestamp``, ``webhook-signature``) and POSTed without following redirects; any 2xx
  delivers it, 410 Gone disables the webhook, anything else is retried with exponential backoff
  (``base * 2**(attempt-1)``, capped) until the message is older than the maximum age (a day). On
  PostgreSQL one node at a time delivers a webhook: the one holding its advisory lock (pg_node.py).
"""

from __future__ import annotations

from .delivery import Settings
from .registry import EVENT_TYPES, WebhookError
from .service import WebhookService

__all__ = ["EVENT_TYPES", "Settings", "WebhookError", "WebhookService"]
