"""The webhook registry: the rules of a definition (event types, names, URLs, Standard Webhooks secrets),
one webhook as the service holds it (:class:`Hook`: its definition, sealed secret and delivery worker), and
the embedded store's file ``<data-dir>/webhooks/hooks.json`` (replaced atomically; the secret sealed with
the data directory's SecretBox, never returned, never logged). On PostgreSQL the same records are rows of
``webhook_hooks`` (pg_outbox.py)."""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..store.atomic_storage import atomic_write_bytes

#: the event types a webhook can ask for (``["*"]`` = all)
EVENT_TYPES = (
    "upgrade.started",
    "upgrade.succeeded",
    "upgrade.rolledBack",
    "upgrade.failed",
    "rollout.planned",
    "rollout.frozen",
    "rollout.paused",
    "rollout.resumed",
    "rollout.completed",
    "maintenanceWindow.opened",  # a machine's window opened with automatic upgrades waiting (one per opening)
)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
HISTORY = 500  # finished deliveries kept (and listed) per webhook
SECRET_PREFIX = "whsec_"


class WebhookError(ValueError):
    """A webhook definition the API refuses (400), with the field it is about."""

    def __init__(self, message: str, target: str) -> None:
        super().__init__(message)
        self.target = target


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise WebhookError("A webhook name is 1-63 letters, digits, '.', '_' or '-'.", "name")
    return name


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str) -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 24 to 64 random bytes."""
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(raw + "==", validate=False)
    except ValueError:
        key = b""
    if not 24 <= len(key) <= 64 or not re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", raw):
        raise WebhookError(
            "The secret must be a Standard Webhooks secret: 'whsec_' followed by base64 of 24 to 64 random bytes "
            "(leave it out and the server makes one and returns it once).",
            "secret",
        )
    return SECRET_PREFIX + raw


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("The url must be an absolute http:// or https:// URL.", "url")
    if parts.username or parts.password:
        raise WebhookError("The url must not carry credentials; sign with the secret instead.", "url")
    return url


def check_events(events: Iterable[str]) -> list[str]:
    wanted = list(events)
    if not wanted:
        raise WebhookError('events must list at least one event type, or be ["*"].', "events")
    if wanted == ["*"]:
        return wanted
    unknown = [e for e in wanted if e not in EVENT_TYPES]
    if unknown:
        raise WebhookError(f"Unknown event types {unknown}; use '*' or some of {list(EVENT_TYPES)}.", "events")
    return sorted(set(wanted), key=EVENT_TYPES.index)


@dataclass
class Hook:
    name: str
    url: str
    events: list[str]
    sealed: str
    created_at: str
    disabled: bool = False
    disabled_reason: str | None = None
    #: activity-log events stamped with the creation time itself that were there before the webhook (a
    #: manual clock stamps many events alike): never delivered to it, also not by a reconcile after a restart
    before: frozenset[str] = frozenset()
    #: this incarnation of the name (PostgreSQL: a webhook deleted and made again is another one, whose
    #: messages are not the old one's); the embedded store uses the name
    uid: str = ""
    wake: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)
    worker: threading.Thread | None = field(default=None, compare=False, repr=False)
    gone: bool = field(default=False, compare=False)  # deleted (its worker ends)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Hook:
        """A webhook as ``hooks.json`` keeps it (see :meth:`record`)."""
        return cls(
            rec["name"],
            rec["url"],
            rec["events"],
            rec["secret"],
            rec["createdAt"],
            rec.get("disabled", False),
            rec.get("disabledReason"),
            frozenset(rec.get("before", ())),
            rec["name"],
        )

    def wants(self, etype: str) -> bool:
        return self.events == ["*"] or etype in self.events

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "events": self.events,
            "secret": self.sealed,
            "createdAt": self.created_at,
            "disabled": self.disabled,
            "disabledReason": self.disabled_reason,
            "before": sorted(self.before),
        }

    def view(self, pending: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "events": self.events,
            "createdAt": self.created_at,
            "enabled": not self.disabled,
            "disabledReason": self.disabled_reason,
            "pending": pending,
        }


def read_hooks(path: Path) -> list[Hook]:
    """The registry file ``hooks.json`` (none yet: no webhooks)."""
    if not path.exists():
        return []
    return [Hook.from_record(rec) for rec in orjson.loads(path.read_bytes()).get("hooks", [])]


def write_hooks(path: Path, hooks: Iterable[Hook]) -> None:
    """Replace ``hooks.json`` atomically (secrets stay sealed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, orjson.dumps({"hooks": [h.record() for h in hooks]}))
