"""The portal's Blueprint: app set-up at registration, sign-in gate, CSRF, headers and error pages."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlencode

import psycopg
from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from flask.sansio.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from .. import errors
from ..auth import Role
from ..clock import parse_iso
from . import security

log = logging.getLogger(__name__)

bp = Blueprint(
    "portal",
    __name__,
    url_prefix="/portal",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

#: Endpoints reachable without signing in.
PUBLIC_ENDPOINTS = {"portal.signin", "portal.static"}

#: Pages are same-origin only: no inline script or style, no framing, forms post back here.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _setup(state: BlueprintSetupState) -> None:
    security.configure_app(state.app)


bp.record_once(_setup)


@bp.before_request
def _gate() -> Any:
    """CSRF on every POST (before anything else), then the sign-in requirement."""
    if request.method == "POST" and not security.csrf_valid(request.form.get(security.CSRF_FIELD)):
        log.warning("Portal: refused a POST to %s without a valid CSRF token", request.path)
        return (
            render_template(
                "portal/error.html",
                status=400,
                title="The form could not be accepted",
                message="Its security token (CSRF) is missing or does not belong to your session, so arcext "
                "refused it. Nothing was changed. Go back, reload the page and try again.",
            ),
            400,
        )
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if security.current_principal() is None:
        target = request.full_path if request.method == "GET" else url_for("portal.machines")
        return redirect(url_for("portal.signin") + "?" + urlencode({"next": target.rstrip("?")}), 303)
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "portal.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_template_filter("when")
def _when(value: str | None) -> str:
    """ARM timestamps as 'YYYY-MM-DD HH:MM:SS UTC'."""
    if not value:
        return "—"
    try:
        parsed = parse_iso(value)
    except ValueError:
        return value
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("words")
def _words(value: str | None) -> str:
    """'NotEligible' → 'Not eligible' (the engine's states, as a sentence)."""
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", value or "")
    return text[:1] + text[1:].lower()


@bp.context_processor
def _context() -> dict[str, Any]:
    who = security.current_principal()
    return {
        "csrf_token": security.csrf_token,
        "who": who,
        "is_owner": bool(who and who.role >= Role.OWNER),
    }


def error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("portal/error.html", status=status, title=title, message=message), status


_TITLES = {
    400: "The request was not valid",
    403: "You do not have access",
    404: "Not found",
    409: "That cannot be done right now",
}


@bp.errorhandler(errors.ArmError)
def _arm_error(error: errors.ArmError) -> Any:
    if error.status == 401:
        return redirect(url_for("portal.signin"), 303)
    return error_page(error.status, _TITLES.get(error.status, "The request failed"), error.message)


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    status = error.code or 500
    return error_page(status, _TITLES.get(status, error.name), error.description or "")


#: seconds before reloading a page whose database connection failed (the API's DATABASE_RETRY_AFTER)
DATABASE_RETRY_AFTER = 1


@bp.errorhandler(psycopg.OperationalError)
def _database_error(error: psycopg.OperationalError) -> Any:
    """The database connection failed under the page (a restart, a fail-over, a cut; the pool replaces the broken
    connection): a 503 saying so, not a 500. The page names nobody: telling who is signed in needs the database too.
    The log gets the error's first line (server and port, never the password)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    log.error(
        "Portal: the database connection failed on %s %s: %s %s",
        request.method,
        request.path,
        type(error).__name__,
        first,
    )
    g.principal = None
    body, status = error_page(
        503,
        "The database cannot be reached",
        "arcext lost its connection to its database while handling this page. Reload it in a moment. If you were "
        "changing something, look whether the change was made before you try it again.",
    )
    return body, status, {"Retry-After": str(DATABASE_RETRY_AFTER)}


@bp.errorhandler(Exception)
def _unexpected(error: Exception) -> Any:
    log.exception("Portal: unhandled error on %s %s", request.method, request.path)
    return error_page(500, "Something went wrong", "arcext could not show this page; the server log has the details.")
