"""The web portal at /portal (server-rendered pages; signs in with a token, CSRF on every form)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("portal", __name__, url_prefix="/portal", template_folder="templates", static_folder="static")


@bp.get("/")
def index() -> tuple[str, int]:
    return "The portal is not built yet.", 404
