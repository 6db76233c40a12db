"""The running server's Services and the request's authenticated principal, for the API and the portal.

The one place that reads them from Flask (``current_app.extensions["arcext"]``, set by arcext.app, and
``g.principal``, set by the auth hook in arcext.api.hooks). They are read from the application context itself
rather than through Flask's ``current_app`` and ``g`` proxies (a proxy's lookup cost several times the read, three
times in every API request: issue #12); outside an application context Flask's own error is raised as before.
"""

from __future__ import annotations

from flask import current_app, g
from flask.globals import _cv_app

from .auth import Principal
from .services import Services


def services() -> Services:
    ctx = _cv_app.get(None)
    svc: Services = (ctx.app if ctx is not None else current_app).extensions["arcext"]
    return svc


def principal() -> Principal:
    ctx = _cv_app.get(None)
    p: Principal = (ctx.g if ctx is not None else g).principal
    return p
