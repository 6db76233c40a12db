"""create_app(config): the Flask application factory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask

from . import __version__
from .api import admin, extensions, hooks, machines, metadata, operations
from .api.base import ArmApi
from .api.middleware import CaseInsensitiveArmPaths
from .config import DEFAULTS, coerce
from .services import Services


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
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
    app.json.sort_keys = False  # type: ignore[attr-defined]

    services = Services.open(
        Path(app.config["ARCEXT_DATA_DIR"]),
        manual_clock=bool(app.config["ARCEXT_MANUAL_CLOCK"]),
        seed_catalog=bool(app.config["ARCEXT_SEED_CATALOG"]),
    )
    app.extensions["arcext"] = services

    api = ArmApi(app, spec_kwargs={"info": {"description": "Azure Arc-compatible Microsoft.HybridCompute API"}})
    for module in (machines, extensions, metadata, operations, admin):
        api.register_blueprint(module.blp)
    hooks.register(app)
    app.wsgi_app = CaseInsensitiveArmPaths(app.wsgi_app)  # type: ignore[method-assign]
    services.start()
    return app
