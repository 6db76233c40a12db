"""MachineExtensions: CreateOrUpdate, Update, Get, Delete, List."""

from __future__ import annotations

from typing import Any

from ..ids import MachineKey
from ..request_context import principal, services
from ..schemas.common import ApiVersionQuerySchema, ListQuerySchema
from ..schemas.extension import (
    MachineExtensionListSchema,
    MachineExtensionSchema,
    MachineExtensionUpdateSchema,
)
from .base import ArmBlueprint, ArmMethodView, empty, machine_path, page_list, require_location
from .lro import accepted
from .machines import MACHINES

blp = ArmBlueprint("extensions", __name__, description="Microsoft.HybridCompute/machines/extensions")

EXTENSIONS = f"{MACHINES}/<machine_name>/extensions"


@blp.route(f"{EXTENSIONS}/<extension_name>")
class Extension(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200, MachineExtensionSchema)
    @machine_path
    def get(self, _query: dict[str, Any], key: MachineKey, extension_name: str) -> Any:
        """MachineExtensions_Get"""
        return services().resources.get_extension(key, extension_name)

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(MachineExtensionSchema)
    @blp.long_running("the resource is then Succeeded", never_sent=MachineExtensionSchema)
    @machine_path
    def put(self, _query: dict[str, Any], body: dict[str, Any], key: MachineKey, extension_name: str) -> Any:
        """MachineExtensions_CreateOrUpdate (always 202, never 201)"""
        require_location(body)
        return accepted(services().resources.put_extension(key, extension_name, body, principal().name))

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(MachineExtensionUpdateSchema)
    @blp.long_running(never_sent=MachineExtensionSchema)
    @machine_path
    def patch(self, _query: dict[str, Any], body: dict[str, Any], key: MachineKey, extension_name: str) -> Any:
        """MachineExtensions_Update (merges properties and tags)"""
        return accepted(services().resources.patch_extension(key, extension_name, body, principal().name))

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.long_running(no_such="There was no such extension")
    @machine_path
    def delete(self, _query: dict[str, Any], key: MachineKey, extension_name: str) -> Any:
        """MachineExtensions_Delete"""
        op = services().resources.delete_extension(key, extension_name, principal().name)
        if op is None:
            return empty(204)
        return accepted(op)


@blp.route(EXTENSIONS)
class Extensions(ArmMethodView):
    @blp.arguments(ListQuerySchema, location="query")
    @blp.response(200, MachineExtensionListSchema)
    @machine_path
    def get(self, query: dict[str, Any], key: MachineKey) -> Any:
        """MachineExtensions_List ($expand=instanceView is accepted; instanceView is always included)"""
        return page_list(services().resources.list_extensions(key), query.get("skiptoken"))
