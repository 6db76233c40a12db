"""Per-request hooks: request ids, authentication, authorization by path, api-version, body limits."""

from __future__ import annotations

import errno
import logging
import random
import re
from typing import Any

import psycopg
from flask import Flask, Request, Response, current_app, g, request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from .. import errors
from ..auth import Principal, Role, scope_contains
from ..request_context import services
from .base import render_arm_error

log = logging.getLogger("arcext.requests")

#: Extension packages are zips, larger than ARM bodies: their own content type and size limit.
PACKAGE_RE = re.compile(r"^/arcext/v1/catalog/[^/]+/[^/]+/versions/[^/]+/package$")
PACKAGE_MAX_BODY = 512 * 1024 * 1024

PUBLIC_PATHS = ("/arcext/v1/openapi.json", "/arcext/v1/docs", "/arcext/v1/health")
_SUB_RE = re.compile(r"^/subscriptions/([^/]+)(?:/resourceGroups/([^/]+))?", re.IGNORECASE)


def _action(path: str, method: str) -> str:
    verb = {"GET": "read", "HEAD": "read", "DELETE": "delete", "POST": "action"}.get(method, "write")
    if path.endswith("/hostConnection"):
        return f"arcext/machines/hostConnection/{verb}"
    if "/providers/Microsoft.Maintenance/" in path:
        kind = "configurationAssignments" if "/configurationAssignments" in path else "maintenanceConfigurations"
        return f"Microsoft.Maintenance/{kind}/{verb}"
    if "/extensions" in path:
        return f"Microsoft.HybridCompute/machines/extensions/{verb}"
    if "/upgradeExtensions" in path:
        return "Microsoft.HybridCompute/machines/upgradeExtensions/action"
    if "/machines" in path:
        return f"Microsoft.HybridCompute/machines/{verb}"
    if path.startswith("/arcext/"):
        return f"arcext/admin/{verb}"
    return f"Microsoft.HybridCompute/{verb}"


def _authorize(p: Principal, path: str, method: str) -> None:
    if path == "/metrics" and method in ("GET", "HEAD"):
        return  # any token: a Reader's, or a scrape token (role Metrics)
    action = _action(path, method)
    if p.role < Role.READER:
        raise errors.authorization_failed(p.name, action, p.scope)  # a scrape token reads /metrics only
    if path.startswith("/arcext/v1/subscriptions/"):
        path = path[len("/arcext/v1") :]  # per-machine views: the ARM scope rules apply
    elif path.startswith("/arcext/"):
        if p.role < Role.OWNER:
            raise errors.authorization_failed(p.name, action, "/arcext/v1")
        return
    match = _SUB_RE.match(path)
    if not match:
        return  # tenant-level reads such as /providers/Microsoft.HybridCompute/operations
    sub, rg = match.group(1), match.group(2)
    role = Role.READER if method in ("GET", "HEAD") else Role.CONTRIBUTOR
    if path.endswith("/hostConnection") and role > Role.READER:
        # it names where the stored Windows credentials go and lets the server probe any address: Owner only
        role = Role.OWNER
    if rg is None and (
        "/providers/Microsoft.HybridCompute/locations/" in path or "/providers/Microsoft.Insights/" in path
    ):
        # extension metadata, operation status and the activity log: readable from any scope inside the
        # subscription (operation status and events are then checked against the token's own scope)
        sub_scope = f"/subscriptions/{sub}"
        if not (scope_contains(p.scope, sub_scope) or scope_contains(sub_scope, p.scope)):
            raise errors.authorization_failed(p.name, action, sub_scope)
        return
    scope = f"/subscriptions/{sub}" + (f"/resourceGroups/{rg}" if rg else "")
    p.require(role, scope, action)


def new_request_id() -> str:
    """A random (version 4) UUID as text, like ``str(uuid.uuid4())``, without its os.urandom system call: a
    request id names a request, it guards nothing (random's generator is reseeded in each forked worker)."""
    value = (random.getrandbits(128) & _UUID4_KEEP) | _UUID4_SET
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)  # all but the version and variant bits
_UUID4_SET = (4 << 76) | (0x8000 << 48)  # version 4, the RFC 4122 variant


def before_request() -> Any:
    # the request and g bound once: each use of Flask's proxies is a context-variable lookup (issue #12)
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    ctx = g._get_current_object()
    environ = req.environ  # a request header X-Y is environ["HTTP_X_Y"]: what req.headers.get reads, directly
    ctx.request_id = new_request_id()
    ctx.correlation_id = environ.get("HTTP_X_MS_CORRELATION_REQUEST_ID") or new_request_id()
    path = req.path
    if path.startswith(PUBLIC_PATHS) or path.startswith(("/arcext/v1/static", "/portal")):
        return None  # the portal signs people in with its own session cookie (arcext.portal)
    package_upload = PACKAGE_RE.match(path) is not None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    limit = PACKAGE_MAX_BODY if package_upload else int(app.config["ARCEXT_MAX_BODY"])
    req.max_content_length = limit
    content_length = req.content_length
    if content_length is not None and content_length > limit:
        raise errors.request_too_large(limit)
    ctx.principal = principal = services().tokens.authenticate(environ.get("HTTP_AUTHORIZATION"))
    method = req.method
    _authorize(principal, path, method)
    writes = method in ("PUT", "PATCH", "POST")
    if content_length is None and writes:
        # a chunked body has no length to check up front: read it now, within the limit, so an oversize one
        # is a 413 here rather than an unreadable (and so "invalid") body later
        try:
            data = req.get_data(cache=True)
            # the body stops at the limit; one more byte from the server's (dechunked) input says it went on
            if len(data) >= limit and req.environ["wsgi.input"].read(1):
                raise errors.request_too_large(limit)
        except RequestEntityTooLarge:
            raise errors.request_too_large(limit) from None
        except (OSError, ValueError, BadRequest):  # the server's dechunker: a chunk header that is not one
            raise errors.invalid_request_content("the chunked body is malformed.") from None
    if path.startswith(("/subscriptions/", "/providers/")) and not req.args.get("api-version"):
        raise errors.missing_api_version()
    if (
        writes
        and req.content_length
        and not req.is_json
        and not (package_upload and req.mimetype in ("application/zip", "application/octet-stream"))
    ):
        raise errors.unsupported_media_type(req.content_type or "")
    return None


def after_request(response: Response) -> Response:
    ctx = g._get_current_object()
    request_id = getattr(ctx, "request_id", None) or new_request_id()
    correlation_id = getattr(ctx, "correlation_id", request_id)
    client_id = request._get_current_object().environ.get("HTTP_X_MS_CLIENT_REQUEST_ID")  # type: ignore[attr-defined]
    headers = response.headers
    headers["x-ms-request-id"] = request_id
    headers["x-ms-correlation-request-id"] = correlation_id
    if client_id:
        headers["x-ms-client-request-id"] = client_id
    # the request's log line and metrics: arcext.api.telemetry (one structured line per request), which runs
    # next and logs these ids (as sent; the client's None when it sent none) without looking them up again
    ctx.sent_ids = (response, request_id, correlation_id, client_id)
    return response


def handle_unexpected(error: Exception) -> Any:
    request_id = getattr(g, "request_id", "unknown")
    log.exception("Unhandled error in request %s", request_id)
    return render_arm_error(errors.internal_error(request_id))


#: Seconds a client should wait before retrying a write the disk refused.
STORAGE_RETRY_AFTER = 60
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_DISK_FAILED = {errno.EIO, errno.EROFS}


def handle_os_error(error: OSError) -> Any:
    """A write the data directory refused: the change was not made (the store fails closed), and the caller
    gets an ARM error it can act on instead of a bare 500."""
    if error.errno in _DISK_FULL:
        log.error("A write failed for lack of space: %s (request %s)", error, getattr(g, "request_id", "-"))
        arm = errors.insufficient_storage(STORAGE_RETRY_AFTER)
    elif error.errno in _DISK_FAILED:
        log.error("A write failed: %s (request %s)", error, getattr(g, "request_id", "-"))
        arm = errors.storage_unavailable(STORAGE_RETRY_AFTER)
    else:
        return handle_unexpected(error)
    return render_arm_error(arm)


#: Seconds a client should wait before retrying a request whose database connection failed.
DATABASE_RETRY_AFTER = 1


def handle_database_error(error: psycopg.OperationalError) -> Any:
    """The PostgreSQL store's connection failed (a restart, a fail-over, a cut): a 503 clients retry, not a 500.
    The pool drops a broken connection when it comes back, so the retry gets a fresh one. The message logged is
    the error's first line (server and port, never the password)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    log.error(
        "Database connection failed under request %s: %s %s", getattr(g, "request_id", "-"), type(error).__name__, first
    )
    return render_arm_error(errors.database_unavailable(DATABASE_RETRY_AFTER))


def register(app: Flask) -> None:
    app.before_request(before_request)
    app.after_request(after_request)
    app.register_error_handler(errors.ArmError, render_arm_error)
    app.register_error_handler(OSError, handle_os_error)
    app.register_error_handler(psycopg.OperationalError, handle_database_error)  # PoolTimeout is one too
    app.register_error_handler(Exception, handle_unexpected)
