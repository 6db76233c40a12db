"""ExtensionMetadata_List / _Get: the versions published in the catalog."""

from __future__ import annotations

from typing import Any

from .. import errors
from ..ids import validate_subscription
from ..request_context import services
from ..schemas.common import ApiVersionQuerySchema, ListQuerySchema
from ..schemas.metadata import ExtensionValueListSchema, ExtensionValueSchema
from ..store.base import Record
from .base import ArmBlueprint, ArmMethodView, page_list

blp = ArmBlueprint("extension_metadata", __name__, description="Extension metadata (published versions)")

VERSIONS = (
    "/subscriptions/<subscription_id>/providers/Microsoft.HybridCompute/locations/<location>"
    "/publishers/<publisher>/extensionTypes/<extension_type>/versions"
)
VALUE_TYPE = "Microsoft.HybridCompute/locations/publishers/extensionTypes/versions"


def extension_value(subscription_id: str, location: str, record: Record) -> dict[str, Any]:
    return {
        "id": (
            f"/subscriptions/{subscription_id}/providers/Microsoft.HybridCompute/locations/{location.lower()}"
            f"/publishers/{record['publisher']}/extensionTypes/{record['type']}/versions/{record['version']}"
        ),
        "name": record["version"],
        "type": VALUE_TYPE,
        "properties": {
            "version": record["version"],
            "extensionType": record["type"],
            "publisher": record["publisher"],
        },
    }


@blp.route(VERSIONS)
class ExtensionVersions(ArmMethodView):
    @blp.arguments(ListQuerySchema, location="query")
    @blp.response(200, ExtensionValueListSchema)
    def get(
        self, query: dict[str, Any], subscription_id: str, location: str, publisher: str, extension_type: str
    ) -> Any:
        """ExtensionMetadata_List (newest version first)"""
        validate_subscription(subscription_id)
        versions = list(reversed(services().catalog.versions(publisher, extension_type)))
        items = [extension_value(subscription_id, location, v) for v in versions]
        return page_list(items, query.get("skiptoken"))


@blp.route(f"{VERSIONS}/<version>")
class ExtensionVersion(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200, ExtensionValueSchema)
    def get(
        self,
        _query: dict[str, Any],
        subscription_id: str,
        location: str,
        publisher: str,
        extension_type: str,
        version: str,
    ) -> Any:
        """ExtensionMetadata_Get"""
        validate_subscription(subscription_id)
        record = services().catalog.get_version(publisher, extension_type, version)
        if record is None:
            raise errors.resource_not_found(
                "Microsoft.HybridCompute/locations/publishers/extensionTypes/versions",
                f"{location}/{publisher}/{extension_type}/{version}",
            )
        return extension_value(subscription_id, location, record)
