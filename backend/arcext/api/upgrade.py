"""UpgradeExtensions: the manual upgrade of named extensions on one machine, now."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from ..ids import MachineKey
from ..request_context import principal, services
from ..schemas.common import ApiVersionQuerySchema, ArmSchema, version_field
from .base import ArmBlueprint, ArmMethodView, machine_path
from .lro import accepted
from .machines import MACHINES

blp = ArmBlueprint("upgrade", __name__, description="Manual extension upgrade (upgradeExtensions)")


class ExtensionTargetPropertiesSchema(ArmSchema):
    targetVersion = version_field("The version to install.")


class MachineExtensionUpgradeSchema(ArmSchema):
    extensionTargets = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(ExtensionTargetPropertiesSchema),
        required=True,
        metadata={"description": 'Keyed "<publisher>.<type>" (or a publisher naming exactly one extension).'},
    )


class _Empty(Schema):
    pass


@blp.route(f"{MACHINES}/<machine_name>/upgradeExtensions")
class UpgradeExtensions(ArmMethodView):
    @blp.arguments(ApiVersionQuerySchema, location="query")
    @blp.arguments(MachineExtensionUpgradeSchema)
    @blp.long_running("the result is []")
    @machine_path
    def post(self, _query: dict[str, Any], body: dict[str, Any], key: MachineKey) -> Any:
        """UpgradeExtensions: runs now, without batching; failures roll back to the last known good version"""
        return accepted(services().engine.manual_upgrade(key, body["extensionTargets"], principal().name))
