"""The running server's Services and the request's authenticated principal, for the API and the portal.

The one place that reads them from Flask (``current_app.extensions["arcext"]``, set by arcext.app, and
``g.principal``, set by the auth hook in arcext.api.hooks).
"""

from __future__ import annotations

from flask import current_app, g

from .auth import Principal
from .services import Services


def services() -> Services:
    svc: Services = current_app.extensions["arcext"]
    return svc


def principal() -> Principal:
    p: Principal = g.principal
    return p
