"""Operations_List and the operationstatus / operationresults endpoints of long-running operations."""

from __future__ import annotations

from typing import Any

from flask import current_app

from .. import errors
from ..auth import scope_contains
from ..operations import IN_PROGRESS, SUCCEEDED, status_body
from ..records import OperationRecord
from ..request_context import principal, services
from ..schemas.common import ApiVersionQuerySchema
from ..schemas.metadata import OperationListSchema, OperationStatusSchema
from .base import ArmBlueprint, ArmMethodView, empty
from .lro import operation_urls

blp = ArmBlueprint("operations", __name__, description="Provider operations and long-running operation status")

LOCATION = "/subscriptions/<subscription_id>/providers/Microsoft.HybridCompute/locations/<location>"

_OPERATIONS = [
    ("machines/read", "Machines", "Read machines", "Reads any Azure Arc machines"),
    ("machines/write", "Machines", "Write machines", "Writes any Azure Arc machines"),
    ("machines/delete", "Machines", "Delete machines", "Deletes any Azure Arc machines"),
    ("machines/extensions/read", "Machines/Extensions", "Read extensions", "Reads any Azure Arc extensions"),
    (
        "machines/extensions/write",
        "Machines/Extensions",
        "Write extensions",
        "Installs or updates Azure Arc extensions",
    ),
    ("machines/extensions/delete", "Machines/Extensions", "Delete extensions", "Deletes Azure Arc extensions"),
    ("machines/upgradeExtensions/action", "Machines", "Upgrade extensions", "Upgrades extensions on a machine"),
    (
        "locations/publishers/extensionTypes/versions/read",
        "Extension metadata",
        "Read extension versions",
        "Reads the published versions of an extension type",
    ),
    ("operations/read", "Operations", "Read operations", "Lists the operations of Microsoft.HybridCompute"),
]


@blp.route("/providers/Microsoft.HybridCompute/operations")
class Operations(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200, OperationListSchema)
    def get(self, _query: dict[str, Any]) -> Any:
        """Operations_List"""
        return {
            "value": [
                {
                    "name": f"Microsoft.HybridCompute/{name}",
                    "isDataAction": False,
                    "origin": "user,system",
                    "display": {
                        "provider": "Microsoft.HybridCompute",
                        "resource": resource,
                        "operation": operation,
                        "description": description,
                    },
                }
                for name, resource, operation, description in _OPERATIONS
            ]
        }


def _visible_operation(subscription_id: str, operation_id: str) -> OperationRecord:
    op = services().lookups.operation(operation_id)
    if op is None or op["subscription"].lower() != subscription_id.lower():
        raise errors.operation_not_found(operation_id)
    caller = principal()
    if not scope_contains(caller.scope, op["resourceId"]):
        raise errors.authorization_failed(
            caller.name, "Microsoft.HybridCompute/locations/operationstatus/read", op["resourceId"]
        )
    return op


@blp.route(f"{LOCATION}/operationstatus/<operation_id>")
class OperationStatus(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200, OperationStatusSchema)
    def get(self, _query: dict[str, Any], subscription_id: str, location: str, operation_id: str) -> Any:
        """The Azure-AsyncOperation URL of a long-running operation"""
        op = _visible_operation(subscription_id, operation_id)
        body = status_body(op)
        if op["status"] == IN_PROGRESS:
            return body, 200, {"Retry-After": str(current_app.config["ARCEXT_RETRY_AFTER"])}
        return body


@blp.route(f"{LOCATION}/operationresults/<operation_id>")
class OperationResult(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    @blp.alt_response(202, description="Still running")
    @blp.alt_response(204, description="Finished with nothing to return (deletes)")
    def get(self, _query: dict[str, Any], subscription_id: str, location: str, operation_id: str) -> Any:
        """The Location URL of a long-running operation: its result once finished"""
        op = _visible_operation(subscription_id, operation_id)
        if op["status"] == IN_PROGRESS:
            response = empty(202)
            response.headers["Location"] = operation_urls(op)[1]
            response.headers["Retry-After"] = str(current_app.config["ARCEXT_RETRY_AFTER"])
            return response
        if op["status"] == SUCCEEDED:
            if "result" in op:
                return op["result"]
            return empty(204)
        error = op.get("error") or {"code": "OperationFailed", "message": f"Operation {op['id']} {op['status']}."}
        return {"error": error}, int(op.get("httpStatus", 500))
