"""Per-request metrics and one structured log line per request (arcext.request_log); ``GET /metrics``."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Flask, Response, g, request

from ..request_context import services
from ..request_log import RequestLine

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
    g._get_current_object().started = time.perf_counter()


def _finish(response: Response) -> Response:
    # the request and g bound once: each use of Flask's proxies is a context-variable lookup (issue #12)
    req = request._get_current_object()  # type: ignore[attr-defined]
    ctx = g._get_current_object()
    started = ctx.get("started")
    seconds = time.perf_counter() - started if started is not None else 0.0
    rule = req.url_rule
    route = rule.rule if rule is not None else "<unmatched>"  # the URL rule, never the raw path
    method = req.method
    status = response.status_code
    try:
        services().metrics.http_request(method, route, status, seconds)
    except Exception:  # telemetry never fails a request
        log.exception("Could not count a request")
    request_log = services().request_log
    if request_log.enabled():
        who = ctx.get("principal")
        sent = ctx.get("sent_ids")
        if sent is not None and sent[0] is response:  # the ids arcext.api.hooks.after_request just set
            _response, request_id, correlation_id, client_id = sent
        else:
            headers = response.headers
            request_id = headers.get("x-ms-request-id") or ctx.get("request_id")
            correlation_id = headers.get("x-ms-correlation-request-id") or ctx.get("correlation_id")
            client_id = req.headers.get("x-ms-client-request-id")
        request_log.add(
            RequestLine(
                time.time(),
                method,
                req.path,
                route,
                status,
                seconds,
                request_id,
                correlation_id,
                client_id,
                who.name if who else None,
            )
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
