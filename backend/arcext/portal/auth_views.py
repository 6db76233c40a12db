"""Sign in with a token, sign out."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from .. import errors
from . import security
from .blueprint import bp


def _safe_next(value: str | None) -> str:
    """Only ever go back to a portal page (no open redirect)."""
    if value and value.startswith("/portal/") and not value.startswith("//") and "\\" not in value:
        return value
    return url_for("portal.machines")


@bp.get("/")
def index() -> Any:
    return redirect(url_for("portal.machines"))


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if security.current_principal() is not None:
            return redirect(next_url)
        return render_template("portal/signin.html", next_url=next_url, error=None)
    try:
        who = security.sign_in(request.form.get("token", ""))
    except errors.ArmError:
        error = "That token is not valid or has been revoked. Paste a token from 'arcext token create'."
        return render_template("portal/signin.html", next_url=next_url, error=error), 401
    flash(f"Signed in as {who.name} ({who.role.title}, scope {who.scope}).", "success")
    return redirect(next_url, 303)


@bp.post("/signout")
def signout() -> Any:
    security.sign_out()
    flash("You are signed out.", "info")
    return redirect(url_for("portal.signin"), 303)


@bp.route("/<path:rest>", methods=["GET", "POST"])
def not_found(rest: str) -> Any:
    """Unknown portal paths get the portal's own page, not the API's JSON."""
    abort(404, description=f"There is no portal page at /portal/{rest}.")
