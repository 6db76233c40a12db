"""Extension packages (admin, Owner role): PUT/GET/DELETE
/arcext/v1/catalog/{publisher}/{type}/versions/{version}/package.

The body is the package zip (``application/zip``), or JSON ``{"zipBase64": "..."}``. A package can
be attached before its version is published, which is the safe order: publish starts a rollout, and
the psrp driver needs the package when it upgrades a host.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from flask import request

from .. import errors
from ..hosts.packages import PackageStore
from ..request_context import services
from ..schemas.admin import PackageSchema
from .admin import check_names
from .base import ArmBlueprint, ArmMethodView, empty
from .jsonbody import request_object

blp = ArmBlueprint("packages", __name__, url_prefix="/arcext/v1", description="Extension packages (Owner role)")

PACKAGE = "/catalog/<publisher>/<extension_type>/versions/<version>/package"


def _store() -> PackageStore:
    store: PackageStore = services().hosts.packages
    return store


@blp.route(PACKAGE)
class Package(ArmMethodView):
    @blp.alt_response(200, schema=PackageSchema, description="The package record")
    def get(self, publisher: str, extension_type: str, version: str) -> Any:
        """The package attached to a version: SHA-256, size, handlerManifest"""
        record = _store().record(publisher, extension_type, version)
        if record is None:
            raise errors.resource_not_found("arcext/package", f"{publisher}/{extension_type}/{version}")
        return record

    @blp.alt_response(200, schema=PackageSchema, description="Replaced")
    @blp.alt_response(201, schema=PackageSchema, description="Attached")
    def put(self, publisher: str, extension_type: str, version: str) -> Any:
        """Attach a package (a zip with HandlerManifest.json) to a version"""
        check_names(publisher, extension_type, version)
        if request.mimetype == "application/json":
            body = request_object()
            if not isinstance(body.get("zipBase64"), str):
                raise errors.invalid_request_content('Send the zip as the body, or JSON {"zipBase64": "..."}.')
            try:
                data = base64.b64decode(body["zipBase64"], validate=True)
            except (binascii.Error, ValueError):
                raise errors.invalid_request_content("zipBase64 is not valid base64.") from None
        else:
            data = request.get_data(cache=False)
        if not data:
            raise errors.invalid_request_content("The package is empty.")
        existed = _store().record(publisher, extension_type, version) is not None
        record = _store().put(publisher, extension_type, version, data, services().clock.now())
        return record, 200 if existed else 201

    @blp.alt_response(200, description="Detached (no body)")
    @blp.alt_response(204, description="There was no package (no body)")
    def delete(self, publisher: str, extension_type: str, version: str) -> Any:
        """Detach the package from a version"""
        return empty(200) if _store().delete(publisher, extension_type, version) else empty(204)
