"""Per-request metrics and one structured log line per request; ``GET /metrics``."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Flask, Response, g, request

from ..request_context import services

log = logging.getLogger("arcext.requests")

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Any:
    """Prometheus text format; any token (a Reader's, or a scrape token: role Metrics)."""
    svc = services()
    svc.webhooks.flush()
    from ..metrics import CONTENT_TYPE

    return Response(svc.metrics.render(), status=200, content_type=CONTENT_TYPE)


def _start() -> None:
    g.started = time.perf_counter()


def _finish(response: Response) -> Response:
    started = g.get("started")
    seconds = time.perf_counter() - started if started is not None else 0.0
    rule = request.url_rule
    route = rule.rule if rule is not None else "<unmatched>"  # the URL rule, never the raw path
    try:
        services().metrics.http_request(request.method, route, response.status_code, seconds)
    except Exception:  # telemetry never fails a request
        log.exception("Could not count a request")
    if log.isEnabledFor(logging.INFO):
        who = g.get("principal")
        request_id = response.headers.get("x-ms-request-id") or g.get("request_id")
        correlation_id = response.headers.get("x-ms-correlation-request-id") or g.get("correlation_id")
        log.info(
            "%s %s -> %s (request %s, caller %s)",
            request.method,
            request.path,
            response.status_code,
            request_id,
            who.name if who else "-",
            extra={
                "fields": {
                    "event": "http.request",
                    "method": request.method,
                    "route": route,
                    "path": request.path,
                    "status": response.status_code,
                    "durationMs": round(seconds * 1000, 3),
                    "x-ms-request-id": request_id,
                    "x-ms-correlation-request-id": correlation_id,
                    "x-ms-client-request-id": request.headers.get("x-ms-client-request-id"),
                    "caller": who.name if who else None,
                }
            },
        )
    return response


def register(app: Flask) -> None:
    """Before the request hooks (so a refused request is timed too); the log line after theirs."""
    app.before_request(_start)
    app.register_blueprint(bp)


def register_after(app: Flask) -> None:
    # after_request functions run in reverse order of registration: registered first, this runs last,
    # when the request-id headers are set
    app.after_request(_finish)
