"""One delivery attempt: sign the message per Standard Webhooks (``webhook-id`` = the CloudEvent id, stable
across retries, ``webhook-timestamp``, ``webhook-signature``), POST it without following redirects, and
decide what follows: any 2xx delivers it, 410 Gone disables the webhook, anything else is retried with
exponential backoff (``retry_base * 2**(attempt-1)``, capped at ``retry_max``) until the message is older
than ``max_age``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from .outbox import Message

DELIVERED, GONE, EXPIRED, PENDING = "Delivered", "Gone", "Expired", "Pending"


@dataclass
class Settings:
    retry_base: float = 5.0  # seconds before the first retry; doubles each time
    retry_max: float = 3600.0  # the longest wait between two attempts
    max_age: float = 86400.0  # a message not delivered within this many seconds expires
    timeout: float = 10.0  # seconds per attempt
    compact_bytes: int = 8 * 1024 * 1024  # outbox size that triggers a compaction once nothing is pending
    #: several nodes on PostgreSQL: a node not delivering a webhook tries to take it over this often (so the
    #: longest a webhook goes undelivered after its node died), and re-reads the registry this often besides
    #: the notifications of every change
    claim_poll: float = 1.0
    refresh: float = 5.0


def post_signed(
    http: requests.Session, url: str, msg: Message, secret: str, timeout: float
) -> tuple[int | None, str | None]:
    """POST the signed message once; (the HTTP status, or None and the error's kind)."""
    from standardwebhooks import Webhook  # on first use: a server without webhooks never imports it

    stamp = datetime.now(UTC)
    headers = {
        "content-type": "application/cloudevents+json",
        "webhook-id": msg.id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg.id, stamp, msg.body),
        "user-agent": "arcext-webhooks",
    }
    try:
        response = http.post(url, data=msg.body.encode(), headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return None, type(exc).__name__  # never the receiver's text: deliveries are listed through the API
    status = response.status_code
    response.close()
    return status, None if 200 <= status < 300 else f"HTTP {status}"


def attempt_record(
    msg: Message, status: int | None, error: str | None, now: float, settings: Settings
) -> tuple[str, dict[str, Any]]:
    """(the metrics outcome, the outbox's attempt record) for an attempt that ended with ``status``."""
    attempts = msg.attempts + 1
    if status is not None and 200 <= status < 300:
        outcome, state = "delivered", DELIVERED
    elif status == 410:
        outcome, state = "gone", GONE
    elif now - msg.created >= settings.max_age:
        outcome, state = "expired", EXPIRED
    else:
        outcome, state = "retrying", PENDING
    next_at = now + min(settings.retry_max, settings.retry_base * 2 ** (attempts - 1)) if state == PENDING else 0.0
    return outcome, {
        "id": msg.id,
        "hook": msg.hook,
        "attempts": attempts,
        "state": state,
        "status": status,
        "error": error,
        "at": now,
        "next": next_at,
        "delivered": now if state == DELIVERED else None,
    }
