"""create_app(config): the Flask application factory."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, Request
from werkzeug.routing import MapAdapter
from werkzeug.wsgi import get_host

from . import __version__, portal
from .api import (
    activity,
    admin,
    engine_admin,
    extensions,
    hooks,
    host_connection,
    machines,
    maintenance,
    metadata,
    operations,
    packages,
    upgrade,
    webhooks,
)
from .api import telemetry as api_telemetry
from .api.base import ArmApi, is_plain_sync
from .api.jsonbody import ArmJSONProvider
from .api.middleware import CaseInsensitiveArmPaths
from .api.openapi import add_path_patterns
from .api.routing import CachedMatchMap, bind_request
from .api.wsgi_response import ArmResponse
from .cluster.settings import ClusterSettings
from .config import DEFAULTS, coerce
from .services import Services
from .upgrades.settings import EngineSettings
from .webhooks import Settings as WebhookSettings


class ArcextFlask(Flask):
    """Flask, with ``ensure_sync`` answering for plain functions without inspect's unwrapping (it runs for every
    hook and view of every request; arcext has no async views), the URL map bound to a request in one step and
    recent paths' rule matches remembered (arcext.api.routing), and responses sent without werkzeug's header fix-ups
    when they need none (arcext.api.wsgi_response): the request path of issue #12."""

    url_map_class = CachedMatchMap
    response_class = ArmResponse

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        """Flask's; for a request under Flask's default settings, the URL map bound by arcext.api.routing's
        bind_request (the same adapter as werkzeug's bind_to_environ, in one step)."""
        config = self.config
        if (
            request is None
            or config["TRUSTED_HOSTS"] is not None
            or config["SERVER_NAME"] is not None
            or request.trusted_hosts is not None
            or self.url_map.host_matching
            or self.subdomain_matching
        ):
            return super().create_url_adapter(request)
        environ = request.environ
        request.host = host = get_host(environ)  # as Flask sets it (no trusted hosts to check)
        return bind_request(self.url_map, environ, host, self.url_map.default_subdomain or "")

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if is_plain_sync(func):
            return func
        return super().ensure_sync(func)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = ArcextFlask(__name__)
    app.json = ArmJSONProvider(app)
    app.config.update(DEFAULTS)
    for name in DEFAULTS:
        if name in os.environ:
            app.config[name] = coerce(name, os.environ[name])
    app.config.update(config or {})
    app.config.update(
        API_TITLE="arcext",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/arcext/v1",
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=int(app.config["ARCEXT_MAX_BODY"]),
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False

    cfg = app.config
    services = Services.open(
        Path(cfg["ARCEXT_DATA_DIR"]),
        manual_clock=bool(cfg["ARCEXT_MANUAL_CLOCK"]),
        seed_catalog=bool(cfg["ARCEXT_SEED_CATALOG"]),
        simulate=bool(cfg["ARCEXT_SIMULATE"]),
        engine_settings=EngineSettings(
            concurrency=int(cfg["ARCEXT_UPGRADE_CONCURRENCY"]),
            retry_delay=timedelta(seconds=float(cfg["ARCEXT_RETRY_DELAY"])),
            standard_window=timedelta(seconds=float(cfg["ARCEXT_STANDARD_WINDOW"])),
            critical_window=timedelta(seconds=float(cfg["ARCEXT_CRITICAL_WINDOW"])),
            batch_fraction=float(cfg["ARCEXT_BATCH_PERCENT"]) / 100,
            breaker_fraction=float(cfg["ARCEXT_BREAKER_PERCENT"]) / 100,
            breaker_min_failures=int(cfg["ARCEXT_BREAKER_MIN_FAILURES"]),
            tick_seconds=float(cfg["ARCEXT_ENGINE_TICK"]),
        ),
        simulated_latency_ms=float(cfg["ARCEXT_SIM_LATENCY_MS"]),
        host_timeout_s=float(cfg["ARCEXT_HOST_TIMEOUT"]),
        webhook_settings=WebhookSettings(
            retry_base=float(cfg["ARCEXT_WEBHOOK_RETRY_BASE"]),
            retry_max=float(cfg["ARCEXT_WEBHOOK_RETRY_MAX"]),
            max_age=float(cfg["ARCEXT_WEBHOOK_MAX_AGE"]),
            timeout=float(cfg["ARCEXT_WEBHOOK_TIMEOUT"]),
        ),
        database_url=str(cfg["ARCEXT_DATABASE_URL"]) or None,
        cluster_settings=ClusterSettings(
            leader_poll=float(cfg["ARCEXT_LEADER_POLL"]),
            job_lease=float(cfg["ARCEXT_JOB_LEASE"]),
            leader_wait=float(cfg["ARCEXT_LEADER_WAIT"]),
            operation_sweep=float(cfg["ARCEXT_OPERATION_SWEEP"]),
        ),
        watchdog_seconds=float(cfg["ARCEXT_WATCHDOG_SECONDS"]),
    )
    app.extensions["arcext"] = services

    api = ArmApi(app, spec_kwargs={"info": {"description": "Azure Arc-compatible Microsoft.HybridCompute API"}})
    for module in (
        machines,
        extensions,
        upgrade,
        metadata,
        operations,
        activity,
        admin,
        engine_admin,
        host_connection,
        packages,
        webhooks,
        maintenance,
    ):
        api.register_blueprint(module.blp)
    add_path_patterns(api.spec)
    app.register_blueprint(portal.bp)
    api_telemetry.register(app)
    api_telemetry.register_after(app)
    hooks.register(app)
    app.wsgi_app = CaseInsensitiveArmPaths(app.wsgi_app)  # type: ignore[method-assign]
    services.start()
    return app
