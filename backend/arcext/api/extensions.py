"""MachineExtensions: CreateOrUpdate, Update, Get, Delete, List."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from ..ids import machine_key
from ..request_context import principal, services
from ..schemas.common import ApiVersionQuerySchema, ListQuerySchema
from ..schemas.extension import (
    MachineExtensionListSchema,
    MachineExtensionSchema,
    MachineExtensionUpdateSchema,
)
from .base import ArmBlueprint, empty, page_list, require_location
from .lro import accepted
from .machines import MACHINES

blp = ArmBlueprint("extensions", __name__, description="Microsoft.HybridCompute/machines/extensions")

EXTENSIONS = f"{MACHINES}/<machine_name>/extensions"


@blp.route(f"{EXTENSIONS}/<extension_name>")
class Extension(MethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200, MachineExtensionSchema)
    def get(
        self,
        _query: dict[str, Any],
        subscription_id: str,
        resource_group: str,
        machine_name: str,
        extension_name: str,
    ) -> Any:
        """MachineExtensions_Get"""
        key = machine_key(subscription_id, resource_group, machine_name)
        return services().resources.get_extension(key, extension_name)

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(MachineExtensionSchema)
    @blp.long_running("; the resource is then Succeeded", never_sent=MachineExtensionSchema)
    def put(
        self,
        _query: dict[str, Any],
        body: dict[str, Any],
        subscription_id: str,
        resource_group: str,
        machine_name: str,
        extension_name: str,
    ) -> Any:
        """MachineExtensions_CreateOrUpdate (always 202, never 201)"""
        key = machine_key(subscription_id, resource_group, machine_name)
        require_location(body)
        return accepted(services().resources.put_extension(key, extension_name, body, principal().name))

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(MachineExtensionUpdateSchema)
    @blp.long_running("", never_sent=MachineExtensionSchema)
    def patch(
        self,
        _query: dict[str, Any],
        body: dict[str, Any],
        subscription_id: str,
        resource_group: str,
        machine_name: str,
        extension_name: str,
    ) -> Any:
        """MachineExtensions_Update (merges properties and tags)"""
        key = machine_key(subscription_id, resource_group, machine_name)
        return accepted(services().resources.patch_extension(key, extension_name, body, principal().name))

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.long_running("", no_such="There was no such extension")
    def delete(
        self,
        _query: dict[str, Any],
        subscription_id: str,
        resource_group: str,
        machine_name: str,
        extension_name: str,
    ) -> Any:
        """MachineExtensions_Delete"""
        key = machine_key(subscription_id, resource_group, machine_name)
        op = services().resources.delete_extension(key, extension_name, principal().name)
        if op is None:
            return empty(204)
        return accepted(op)


@blp.route(EXTENSIONS)
class Extensions(MethodView):
    @blp.arguments(ListQuerySchema, location="query")
    @blp.response(200, MachineExtensionListSchema)
    def get(self, query: dict[str, Any], subscription_id: str, resource_group: str, machine_name: str) -> Any:
        """MachineExtensions_List ($expand=instanceView is accepted; instanceView is always included)"""
        key = machine_key(subscription_id, resource_group, machine_name)
        return page_list(services().resources.list_extensions(key), query.get("skiptoken"))
