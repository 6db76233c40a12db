"""Microsoft.Maintenance (api-version 2023-04-01, what azure-mgmt-maintenance 2.1.0 sends): maintenance
configurations with ``maintenanceScope: "Extension"`` and their configuration assignments on a machine, a
resource group or a subscription. Automatic extension upgrades start only inside an assigned window."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import fields

from .. import errors
from ..auth import Role, scope_contains
from ..ids import machine_key, validate_resource_group, validate_subscription
from ..maintenance import MaintenanceError, config_id, configuration_named
from ..request_context import principal, services
from ..schemas.common import ApiVersionQuerySchema, ArmSchema
from ..store.base import Record
from .base import ArmBlueprint, ArmMethodView, empty

blp = ArmBlueprint("maintenance", __name__, description="Microsoft.Maintenance (maintenance windows)")

SUB = "/subscriptions/<subscription_id>"
RG = f"{SUB}/resourceGroups/<resource_group>"
NS = "providers/Microsoft.Maintenance"
MACHINE = f"{RG}/providers/Microsoft.HybridCompute/machines/<machine_name>"


class ConfigurationBodySchema(ArmSchema):
    location = fields.String()
    tags = fields.Dict(keys=fields.String(), values=fields.Raw())
    properties = fields.Dict(keys=fields.String(), values=fields.Raw())


class AssignmentBodySchema(ArmSchema):
    location = fields.String()
    properties = fields.Dict(keys=fields.String(), values=fields.Raw())


def _bad(exc: MaintenanceError) -> errors.ArmError:
    return errors.invalid_parameter(str(exc), target=exc.target)


def _config_not_found(name: str, rg: str) -> errors.ArmError:
    return errors.resource_not_found("Microsoft.Maintenance/maintenanceConfigurations", name, rg)


def _put_answer(write: Callable[[], tuple[Record, bool]]) -> tuple[Record, int]:
    """A create-or-update's answer: 201 when ``write`` created the resource, else 200; its refusal is a 400."""
    try:
        record, created = write()
    except MaintenanceError as exc:
        raise _bad(exc) from None
    return record, 201 if created else 200


def _delete_answer(found: Record | None, delete: Callable[[], bool]) -> Any:
    """A delete's answer: 200 with what ``delete`` removed, or 204 when there was nothing (or it went meanwhile)."""
    if found is None or not delete():
        return empty(204)
    return found


@blp.route(f"{RG}/{NS}/maintenanceConfigurations/<name>")
class Configuration(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    def get(self, _query: dict[str, Any], subscription_id: str, resource_group: str, name: str) -> Any:
        """MaintenanceConfigurations_Get"""
        found = services().maintenance.get_configuration(subscription_id.lower(), resource_group, name)
        if found is None:
            raise _config_not_found(name, resource_group)
        return found

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(ConfigurationBodySchema)
    @blp.response(200)
    @blp.alt_response(201, description="Created")
    def put(
        self, _query: dict[str, Any], body: dict[str, Any], subscription_id: str, resource_group: str, name: str
    ) -> Any:
        """MaintenanceConfigurations_CreateOrUpdate (maintenanceScope Extension)"""
        validate_subscription(subscription_id)
        validate_resource_group(resource_group)
        _check_name(name)
        svc = services()
        return _put_answer(
            lambda: svc.maintenance.put_configuration(
                subscription_id.lower(), resource_group, name, body, principal().name, svc.clock.now()
            )
        )

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    @blp.alt_response(204, description="There was no such configuration")
    def delete(self, _query: dict[str, Any], subscription_id: str, resource_group: str, name: str) -> Any:
        """MaintenanceConfigurations_Delete (its assignments stay, and apply nothing, as on Azure)"""
        svc = services().maintenance
        found = svc.get_configuration(subscription_id.lower(), resource_group, name)
        return _delete_answer(found, lambda: svc.delete_configuration(subscription_id.lower(), resource_group, name))


@blp.route(f"{RG}/{NS}/maintenanceConfigurations")
class ConfigurationsInGroup(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    def get(self, _query: dict[str, Any], subscription_id: str, resource_group: str) -> Any:
        """MaintenanceConfigurationsForResourceGroup_List"""
        return {"value": services().maintenance.list_configurations(subscription_id.lower(), resource_group)}


@blp.route(f"{SUB}/{NS}/maintenanceConfigurations")
class ConfigurationsInSubscription(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    def get(self, _query: dict[str, Any], subscription_id: str) -> Any:
        """MaintenanceConfigurations_List"""
        return {"value": services().maintenance.list_configurations(subscription_id.lower())}


def _check_name(name: str) -> None:
    if not name or len(name) > 260 or any(c in name for c in "<>%&:\\?/#*") or name != name.strip():
        raise errors.invalid_parameter(f"The name '{name}' is not a valid resource name.", target="name")


def _scope(subscription_id: str, resource_group: str | None = None, machine_name: str | None = None) -> str:
    validate_subscription(subscription_id)
    if machine_name is not None and resource_group is not None:
        key = machine_key(subscription_id, resource_group, machine_name)
        doc = services().lookups.machine(key)
        if doc is None:
            raise errors.resource_not_found("Microsoft.HybridCompute/machines", machine_name, resource_group)
        return str(doc["machine"]["id"])
    if resource_group is not None:
        validate_resource_group(resource_group)
        return f"/subscriptions/{subscription_id.lower()}/resourceGroups/{resource_group}"
    return f"/subscriptions/{subscription_id.lower()}"


def _location(subscription_id: str, resource_group: str | None, machine_name: str | None) -> str:
    if machine_name is not None and resource_group is not None:
        doc = services().lookups.machine(machine_key(subscription_id, resource_group, machine_name))
        if doc is not None:
            return str(doc["machine"].get("location") or "global")
    return "global"


ASSIGNMENT_WRITE = "Microsoft.Maintenance/configurationAssignments/write"
CONFIGURATION_READ = "Microsoft.Maintenance/maintenanceConfigurations/read"


def _check_linked_read(body: dict[str, Any], scope: str) -> None:
    """An assignment links a maintenance configuration, which may sit in another resource group or
    subscription: the caller must be able to read it (Reader there), as Azure checks a linked scope. Checked
    before whether it exists, so a 403 says nothing about configurations the caller cannot see."""
    named = configuration_named(body)
    if named is None:
        return  # not a configuration id: put_assignment answers 400
    linked = config_id(*named)
    caller = principal()
    if caller.role >= Role.READER and scope_contains(caller.scope, linked):
        return
    raise errors.ArmError(
        403,
        "AuthorizationFailed",
        f"The client '{caller.name}' has permission to perform action '{ASSIGNMENT_WRITE}' on scope '{scope}', "
        f"however it does not have permission to perform action '{CONFIGURATION_READ}' on the linked scope "
        f"'{linked}': the maintenance configuration this assignment names must be readable by the caller.",
    )


class _Assignment(ArmMethodView):
    def _get(self, name: str, sub: str, rg: str | None = None, machine: str | None = None) -> Any:
        found = services().maintenance.get_assignment(_scope(sub, rg, machine), name)
        if found is None:
            raise errors.resource_not_found("Microsoft.Maintenance/configurationAssignments", name, rg)
        return found

    def _put(self, body: dict[str, Any], name: str, sub: str, rg: str | None = None, machine: str | None = None) -> Any:
        _check_name(name)
        scope = _scope(sub, rg, machine)
        _check_linked_read(body, scope)
        return _put_answer(
            lambda: services().maintenance.put_assignment(scope, name, body, _location(sub, rg, machine))
        )

    def _delete(self, name: str, sub: str, rg: str | None = None, machine: str | None = None) -> Any:
        svc = services().maintenance
        scope = _scope(sub, rg, machine)
        return _delete_answer(svc.get_assignment(scope, name), lambda: svc.delete_assignment(scope, name))


@blp.route(f"{MACHINE}/{NS}/configurationAssignments/<name>")
class MachineAssignment(_Assignment):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    def get(self, _q: dict[str, Any], subscription_id: str, resource_group: str, machine_name: str, name: str) -> Any:
        """ConfigurationAssignments_Get (on a machine)"""
        return self._get(name, subscription_id, resource_group, machine_name)

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(AssignmentBodySchema)
    @blp.response(200)
    @blp.alt_response(201, description="Created")
    def put(
        self,
        _q: dict[str, Any],
        body: dict[str, Any],
        subscription_id: str,
        resource_group: str,
        machine_name: str,
        name: str,
    ) -> Any:
        """ConfigurationAssignments_CreateOrUpdate (on a machine)"""
        return self._put(body, name, subscription_id, resource_group, machine_name)

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    @blp.alt_response(204, description="There was no such assignment")
    def delete(
        self, _q: dict[str, Any], subscription_id: str, resource_group: str, machine_name: str, name: str
    ) -> Any:
        """ConfigurationAssignments_Delete (on a machine)"""
        return self._delete(name, subscription_id, resource_group, machine_name)


@blp.route(f"{MACHINE}/{NS}/configurationAssignments")
class MachineAssignments(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    def get(self, _q: dict[str, Any], subscription_id: str, resource_group: str, machine_name: str) -> Any:
        """ConfigurationAssignments_List (on a machine)"""
        return {"value": services().maintenance.list_assignments(_scope(subscription_id, resource_group, machine_name))}


@blp.route(f"{RG}/{NS}/configurationAssignments/<name>")
class GroupAssignment(_Assignment):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    def get(self, _q: dict[str, Any], subscription_id: str, resource_group: str, name: str) -> Any:
        """ConfigurationAssignmentsForResourceGroup_Get"""
        return self._get(name, subscription_id, resource_group)

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(AssignmentBodySchema)
    @blp.response(200)
    @blp.alt_response(201, description="Created")
    def put(
        self, _q: dict[str, Any], body: dict[str, Any], subscription_id: str, resource_group: str, name: str
    ) -> Any:
        """ConfigurationAssignmentsForResourceGroup_CreateOrUpdate (optional filter: a dynamic scope)"""
        return self._put(body, name, subscription_id, resource_group)

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(AssignmentBodySchema)
    @blp.response(200)
    def patch(
        self, _q: dict[str, Any], body: dict[str, Any], subscription_id: str, resource_group: str, name: str
    ) -> Any:
        """ConfigurationAssignmentsForResourceGroup_Update"""
        record, _created = self._put(body, name, subscription_id, resource_group)
        return record

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    @blp.alt_response(204, description="There was no such assignment")
    def delete(self, _q: dict[str, Any], subscription_id: str, resource_group: str, name: str) -> Any:
        """ConfigurationAssignmentsForResourceGroup_Delete"""
        return self._delete(name, subscription_id, resource_group)


@blp.route(f"{SUB}/{NS}/configurationAssignments/<name>")
class SubscriptionAssignment(_Assignment):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    def get(self, _q: dict[str, Any], subscription_id: str, name: str) -> Any:
        """ConfigurationAssignmentsForSubscriptions_Get"""
        return self._get(name, subscription_id)

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(AssignmentBodySchema)
    @blp.response(200)
    @blp.alt_response(201, description="Created")
    def put(self, _q: dict[str, Any], body: dict[str, Any], subscription_id: str, name: str) -> Any:
        """ConfigurationAssignmentsForSubscriptions_CreateOrUpdate (optional filter: a dynamic scope)"""
        return self._put(body, name, subscription_id)

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(AssignmentBodySchema)
    @blp.response(200)
    def patch(self, _q: dict[str, Any], body: dict[str, Any], subscription_id: str, name: str) -> Any:
        """ConfigurationAssignmentsForSubscriptions_Update"""
        record, _created = self._put(body, name, subscription_id)
        return record

    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    @blp.alt_response(204, description="There was no such assignment")
    def delete(self, _q: dict[str, Any], subscription_id: str, name: str) -> Any:
        """ConfigurationAssignmentsForSubscriptions_Delete"""
        return self._delete(name, subscription_id)


@blp.route(f"{SUB}/{NS}/configurationAssignments")
class AssignmentsInSubscription(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.response(200)
    def get(self, _q: dict[str, Any], subscription_id: str) -> Any:
        """ConfigurationAssignmentsWithinSubscription_List (every assignment in the subscription)"""
        return {"value": services().maintenance.list_assignments(_scope(subscription_id), within=True)}
