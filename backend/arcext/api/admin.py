"""The arcext admin surface (not ARM; Owner only): the extension catalog."""

from __future__ import annotations

from typing import Any

from flask import request

from .. import errors, names
from ..auth import Role
from ..request_context import services
from ..schemas.admin import HealthSchema
from ..schemas.metadata import (
    ExtensionTypeBodySchema,
    ExtensionTypeSchema,
    ExtensionVersionBodySchema,
    ExtensionVersionSchema,
)
from .base import ArmBlueprint, ArmMethodView

blp = ArmBlueprint("admin", __name__, url_prefix="/arcext/v1", description="arcext administration (Owner role)")


def check_names(publisher: str, extension_type: str, version: str | None = None) -> None:
    """Names that become folders on hosts: refused with 400 unless they are plain (see arcext.names)."""
    names.check_name("publisher", publisher, "publisher")
    names.check_name("extension type", extension_type, "type")
    if version is not None:
        problem = names.version_problem(version)
        if problem:
            raise errors.invalid_parameter(f"The version '{version}' is not valid: {problem}", target="version")


@blp.route("/catalog")
class CatalogTypes(ArmMethodView):
    @blp.response(200, ExtensionTypeSchema(many=True))
    def get(self) -> Any:
        """Every extension type in the catalog, with whether it supports automatic upgrade"""
        return services().catalog.list_types()


@blp.route("/catalog/<publisher>/<extension_type>")
class CatalogType(ArmMethodView):
    @blp.response(200, ExtensionTypeSchema)
    def get(self, publisher: str, extension_type: str) -> Any:
        """One extension type"""
        record = services().catalog.get_type(publisher, extension_type)
        if record is None:
            raise errors.resource_not_found("arcext/catalog", f"{publisher}/{extension_type}")
        return record

    @blp.arguments(ExtensionTypeBodySchema)
    @blp.response(200, ExtensionTypeSchema)
    def put(self, body: dict[str, Any], publisher: str, extension_type: str) -> Any:
        """Add an extension type or change whether it supports automatic upgrade"""
        check_names(publisher, extension_type)
        svc = services()
        return svc.catalog.put_type(publisher, extension_type, body["autoUpgradeSupported"], svc.clock.now())


@blp.route("/catalog/<publisher>/<extension_type>/versions/<version>")
class CatalogVersion(ArmMethodView):
    @blp.arguments(ExtensionVersionBodySchema)
    @blp.response(200, ExtensionVersionSchema)
    @blp.alt_response(201, schema=ExtensionVersionSchema, description="Newly published")
    def put(self, body: dict[str, Any], publisher: str, extension_type: str, version: str) -> Any:
        """Publish a version (it then appears in ExtensionMetadata); `critical` marks a security fix"""
        check_names(publisher, extension_type, version)
        svc = services()
        record, created = svc.catalog.publish_version(
            publisher, extension_type, version, body["critical"], svc.clock.now()
        )
        if created:
            rollout = svc.engine.on_version_published(record)
            if rollout is not None:
                record = {**record, "rolloutId": rollout["id"]}
        return record, 201 if created else 200


@blp.route("/health")
class Health(ArmMethodView):
    @blp.alt_response(200, schema=HealthSchema, description="The server is up")
    @blp.alt_response(503, schema=HealthSchema, description="A background loop of this node stopped coming round")
    def get(self) -> Any:
        """Liveness: answers without a token (503 while a loop of the engine or the cluster node is stalled, naming
        it); the fleet's size only to an Owner's token"""
        svc = services()
        stalled = svc.stalled_loops()
        if stalled:
            return {"status": "stalled", "stalled": stalled}, 503
        body: dict[str, Any] = {"status": "ok"}
        waiting = svc.loops_waiting_for_database()
        if waiting:
            body = {"status": "waiting", "waitingForDatabase": waiting}
        header = request.headers.get("Authorization")
        if header:
            try:
                who = services().tokens.authenticate(header)
            except errors.ArmError:
                return body
            if who.role >= Role.OWNER:
                body["machines"] = services().lookups.machine_count()
        return body
