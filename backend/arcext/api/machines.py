"""Machines: CreateOrUpdate, Update, Get, Delete, ListByResourceGroup, ListBySubscription."""

from __future__ import annotations

from typing import Any

from flask import current_app

from ..ids import MachineKey, validate_subscription
from ..request_context import principal, services
from ..schemas.common import ApiVersionQuerySchema, ListQuerySchema
from ..schemas.machine import MachineListSchema, MachineSchema, MachineUpdateSchema
from .base import ArmBlueprint, ArmMethodView, decode_token, empty, machine_path, page, require_location
from .lro import accepted

blp = ArmBlueprint("machines", __name__, description="Microsoft.HybridCompute/machines")

MACHINES = "/subscriptions/<subscription_id>/resourceGroups/<resource_group>/providers/Microsoft.HybridCompute/machines"

#: Machines_Delete became long-running in the 2025 api-versions; earlier ones answer 200 at once.
LRO_DELETE_FROM = "2025-01-01"


@blp.route(f"{MACHINES}/<machine_name>")
class Machine(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200, MachineSchema)
    @machine_path
    def get(self, _query: dict[str, Any], key: MachineKey) -> Any:
        """Machines_Get"""
        return services().resources.get_machine(key)

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(MachineSchema)
    @blp.response(200, MachineSchema)
    @machine_path
    def put(self, _query: dict[str, Any], body: dict[str, Any], key: MachineKey) -> Any:
        """Machines_CreateOrUpdate"""
        require_location(body)
        resource, _created = services().resources.put_machine(key, body, principal().name)
        return resource

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(MachineUpdateSchema)
    @blp.response(200, MachineSchema)
    @machine_path
    def patch(self, _query: dict[str, Any], body: dict[str, Any], key: MachineKey) -> Any:
        """Machines_Update"""
        return services().resources.patch_machine(key, body, principal().name)

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    @blp.alt_response(202, description="Accepted: poll Azure-AsyncOperation")
    @blp.alt_response(204, description="There was no such machine")
    @machine_path
    def delete(self, query: dict[str, Any], key: MachineKey) -> Any:
        """Machines_Delete (deletes the machine's extensions too)"""
        asynchronous = query["api_version"] >= LRO_DELETE_FROM
        op = services().resources.delete_machine(key, principal().name, asynchronous)
        if op is None:
            return empty(204)
        if asynchronous:
            return accepted(op)
        return empty(200)


@blp.route(MACHINES)
class MachinesInGroup(ArmMethodView):
    @blp.arguments(ListQuerySchema, location="query")
    @blp.response(200, MachineListSchema)
    def get(self, query: dict[str, Any], subscription_id: str, resource_group: str) -> Any:
        """Machines_ListByResourceGroup"""
        validate_subscription(subscription_id)
        return _list(subscription_id, resource_group, query)


@blp.route("/subscriptions/<subscription_id>/providers/Microsoft.HybridCompute/machines")
class MachinesInSubscription(ArmMethodView):
    @blp.arguments(ListQuerySchema, location="query")
    @blp.response(200, MachineListSchema)
    def get(self, query: dict[str, Any], subscription_id: str) -> Any:
        """Machines_ListBySubscription"""
        validate_subscription(subscription_id)
        return _list(subscription_id, None, query)


def _list(subscription_id: str, resource_group: str | None, query: dict[str, Any]) -> dict[str, Any]:
    items, token = services().resources.list_machines(
        subscription_id,
        resource_group,
        decode_token(query.get("skiptoken")),
        int(current_app.config["ARCEXT_PAGE_SIZE"]),
    )
    return page(items, token)
