"""Server-issued bearer tokens: roles, scopes and the checks every request passes.

Tokens are 256-bit random strings; only their SHA-256 is stored (a fast hash is enough for a
secret with that much entropy), so the data directory never holds a usable token.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from . import errors
from .clock import iso
from .store.base import Record, Store

TOKEN_PREFIX = "arcext_"
#: Principals TokenService keeps (one per token in use; more and it starts again)
_PRINCIPALS_KEPT = 1024


class Role(IntEnum):
    METRICS = 0  # a scrape token: GET /metrics and nothing else
    READER = 1
    CONTRIBUTOR = 2
    OWNER = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role '{name}': use Owner, Contributor, Reader or Metrics") from None

    @property
    def title(self) -> str:
        return self.name.capitalize()


def normalise_scope(scope: str) -> str:
    """Validate and canonicalise ``/subscriptions/<id>[/resourceGroups/<rg>]`` (or ``/``)."""
    parts = [p for p in scope.strip().split("/") if p]
    if not parts:
        return "/"
    if parts[0].lower() != "subscriptions" or len(parts) not in (2, 4):
        raise ValueError(f"invalid scope '{scope}': use /subscriptions/<id> or /subscriptions/<id>/resourceGroups/<rg>")
    try:
        sub = str(uuid.UUID(parts[1]))
    except ValueError:
        raise ValueError(f"invalid scope '{scope}': '{parts[1]}' is not a subscription GUID") from None
    if len(parts) == 2:
        return f"/subscriptions/{sub}"
    if parts[2].lower() != "resourcegroups":
        raise ValueError(f"invalid scope '{scope}': expected resourceGroups after the subscription")
    return f"/subscriptions/{sub}/resourceGroups/{parts[3]}"


def scope_contains(token_scope: str, target_scope: str) -> bool:
    """True when ``target_scope`` is the token's scope or below it (case-insensitive)."""
    if token_scope == "/":
        return True
    outer = token_scope.lower().rstrip("/") + "/"
    inner = target_scope.lower().rstrip("/") + "/"
    return inner.startswith(outer)


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: str
    name: str
    role: Role
    scope: str

    def require(self, role: Role, scope: str, action: str) -> None:
        if self.role < role or not scope_contains(self.scope, scope):
            raise errors.authorization_failed(self.name, action, scope)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenService:
    def __init__(self, store: Store) -> None:
        self.store = store
        # the Principal of each token record's (id, name, role, scope), made once: every request is authenticated,
        # and a Principal is an immutable value. The record is still read from the store for every request, so a
        # revoked token is refused at once; a changed record is another key.
        self._principals: dict[tuple[str, str, str, str], Principal] = {}

    def _principal(self, record: Record) -> Principal:
        key = (record["id"], record["name"], record["role"], record["scope"])
        found = self._principals.get(key)
        if found is None:
            found = Principal(record["id"], record["name"], Role.parse(record["role"]), record["scope"])
            if len(self._principals) >= _PRINCIPALS_KEPT:
                self._principals.clear()
            self._principals[key] = found
        return found

    def create(self, role: Role, scope: str, name: str | None, now: datetime) -> tuple[str, Record]:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = uuid.uuid4().hex[:12]
        record: Record = {
            "id": token_id,
            "hash": hash_token(token),
            "name": name or f"{role.title.lower()}-{token_id[:6]}",
            "role": role.title,
            "scope": normalise_scope(scope),
            "createdAt": iso(now),
        }
        self.store.put_token(record)
        return token, record

    def authenticate(self, header: str | None) -> Principal:
        if not header:
            raise errors.authentication_failed(
                "Authentication failed. The 'Authorization' header is missing; send 'Authorization: Bearer <token>' "
                "with a token from 'arcext token create'."
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.authentication_failed(
                "Authentication failed. The 'Authorization' header must use the Bearer scheme."
            )
        record = self.store.get_token_by_hash(hash_token(token.strip()))
        if record is None:
            raise errors.authentication_failed(
                "Authentication failed. The access token is invalid or has been revoked."
            )
        return self._principal(record)

    def by_reference(self, reference: str, token_id: str) -> Principal | None:
        """The principal of the token whose hash is ``reference`` and whose id is ``token_id`` (what a portal
        session keeps), or None when it was revoked or is a scrape-only (Metrics) token."""
        record = self.store.get_token_by_hash(reference)
        if record is None or record.get("id") != token_id or record.get("role") == "Metrics":
            return None
        return self._principal(record)

    def list(self) -> list[Record]:
        return [{k: v for k, v in t.items() if k != "hash"} for t in self.store.list_tokens()]

    def revoke(self, token_id: str) -> bool:
        return self.store.delete_token(token_id)
