"""Portal sessions: the secret key, who is signed in, CSRF tokens and role checks.

The session is Flask's signed cookie plus a server-side record of the signed-in session ids
(arcext.portal.sessions), so Sign out ends a session even for a copy of the cookie. It never holds the
bearer token: only the token's id and
the SHA-256 reference the store already indexes (``auth.hash_token``), which cannot be turned back
into a token and is useless as one (the API hashes what it is sent). Every request looks the
reference up again, so revoking a token (even with ``arcext token revoke`` in another process)
signs its portal sessions out at once. The signing key is generated once and kept beside the store
(arcext.portal.storage): ``<data-dir>/portal-secret.key`` (mode 0600) on the embedded store, a row sealed
with the data key in the database on PostgreSQL, so every node signs and reads the same cookies.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, session
from flask.sansio.app import App
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin

from .. import errors
from ..auth import Principal, Role, hash_token
from ..request_context import services
from ..services import Services
from .file_storage import SECRET_FILE as SECRET_FILE  # where the embedded store keeps the key
from .sessions import PortalSessions
from .storage import open_portal_storage

log = logging.getLogger(__name__)

SESSION_LIFETIME = timedelta(hours=8)
CSRF_FIELD = "csrf_token"


class PortalSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without their cost on requests that carry no session cookie.

    The cookie's path is /portal, so API requests (bearer tokens) never send one; Flask still built a signing
    serializer (an HMAC key derivation) to open, and looked up five cookie settings to save, each of those
    empty sessions: 5% of an API GET (issue #12). Without a cookie the session opened is the same empty one
    Flask opens, and an empty session nobody touched is saved as Flask saves it: not at all.
    """

    def open_session(self, app: Any, request: Any) -> SecureCookieSession | None:
        if app.secret_key and (
            "HTTP_COOKIE" not in request.environ or not request.cookies.get(self.get_cookie_name(app))
        ):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Any, session: SessionMixin, response: Any) -> None:
        if not session and not session.modified and not session.accessed:
            return
        super().save_session(app, session, response)


def configure_app(app: App) -> None:
    """Give the app its signing key, its signed-in sessions (in the database on PostgreSQL, else in the data
    directory) and the portal's cookie settings (run once, at registration)."""
    opened: Services = app.extensions["arcext"]  # create_app opens the services before it registers the portal
    storage = open_portal_storage(
        opened.shared_db, opened.box, Path(app.config["ARCEXT_DATA_DIR"]), SESSION_LIFETIME.total_seconds()
    )
    app.secret_key = storage.signing_key
    if isinstance(app, Flask):
        app.session_interface = PortalSessionInterface()
    app.extensions["arcext_portal_sessions"] = storage.sessions
    app.config.update(
        SESSION_COOKIE_NAME="arcext_portal",
        SESSION_COOKIE_PATH="/portal",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )


# --- CSRF ---------------------------------------------------------------------------------------
def csrf_token() -> str:
    """This session's CSRF token (created on first use; anonymous sessions get one for the sign-in form)."""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_valid(sent: str | None) -> bool:
    expected = session.get("csrf")
    return bool(isinstance(expected, str) and expected and sent and hmac.compare_digest(expected, sent))


# --- who is signed in -------------------------------------------------------------------------
def sign_in(raw_token: str) -> Principal:
    """Validate a token exactly as the API does and start a fresh session for it (raises ArmError)."""
    token = raw_token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    principal = services().tokens.authenticate(f"Bearer {token}" if token else None)
    if principal.role < Role.READER:  # a scrape token reads /metrics and nothing else
        raise errors.authorization_failed(principal.name, "arcext/portal/read", principal.scope)
    _sessions().end(session.get("sid"))
    session.clear()
    session.permanent = True
    session["sid"] = _sessions().start()
    session["tid"] = principal.token_id
    session["ref"] = hash_token(token)
    session["csrf"] = secrets.token_urlsafe(32)
    return principal


def _sessions() -> PortalSessions:
    found: PortalSessions = current_app.extensions["arcext_portal_sessions"]
    return found


def sign_out() -> None:
    """End the session on the server too: the signed cookie, replayed, no longer signs anyone in."""
    _sessions().end(session.get("sid"))
    session.clear()


def current_principal() -> Principal | None:
    """The signed-in principal, or None (no session, or its token was revoked)."""
    if "principal" in g:
        found: Principal | None = g.principal
        return found
    principal = None
    ref, token_id = session.get("ref"), session.get("tid")
    if isinstance(ref, str) and isinstance(token_id, str) and not _sessions().alive(session.get("sid")):
        session.pop("ref", None)  # signed out (or a cookie from before server-side sessions): sign in again
        session.pop("tid", None)
    elif isinstance(ref, str) and isinstance(token_id, str):
        principal = services().tokens.by_reference(ref, token_id)
        if principal is None:
            session.pop("ref", None)
            session.pop("tid", None)
    if principal is not None:
        g.principal = principal
    return principal


def principal() -> Principal:
    """The signed-in principal of a view that requires one (the blueprint redirects anonymous requests)."""
    found = current_principal()
    if found is None:
        raise errors.authentication_failed("Sign in with a token to use the portal.")
    return found


def allows(who: Principal, role: Role, scope: str) -> bool:
    """The API's own rule (Principal.require), as a yes/no for deciding which buttons to show."""
    try:
        who.require(role, scope, "portal")
    except errors.ArmError:
        return False
    return True
