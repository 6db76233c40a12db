"""MachineExtension, MachineExtensionUpdate and their list page."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, post_dump

from .common import (
    ArmSchema,
    StrictBoolean,
    StrictString,
    TrackedResourceSchema,
    extension_name_field,
    json_object,
    tags_field,
    version_field,
)


class InstanceViewStatusSchema(Schema):
    code = fields.String()
    level = fields.String()
    displayStatus = fields.String()
    message = fields.String()
    time = fields.String()


class InstanceViewSchema(Schema):
    name = fields.String()
    type = fields.String()
    typeHandlerVersion = fields.String()
    status = fields.Nested(InstanceViewStatusSchema)

    @post_dump
    def _version_is_a_string(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        """Records stored before the fix hold null when the extension was created without a version."""
        if data.get("typeHandlerVersion") is None and "typeHandlerVersion" in data:
            data["typeHandlerVersion"] = ""
        return data


class _ExtensionPropertiesBase(ArmSchema):
    forceUpdateTag = StrictString()
    publisher = extension_name_field('The publisher, e.g. "Microsoft.Compute".')
    type = extension_name_field('The extension type, e.g. "CustomScriptExtension".')
    typeHandlerVersion = version_field(
        'The version, e.g. "1.10.3", or a Major.Minor such as "1.10": that installs the newest published '
        "1.10.x, the version then returned here and in instanceView (as given when none is published)."
    )
    enableAutomaticUpgrade = StrictBoolean()
    autoUpgradeMinorVersion = StrictBoolean()
    settings = json_object()
    protectedSettings = json_object(load_only=True, metadata={"description": "Write-only: never returned."})


class MachineExtensionPropertiesSchema(_ExtensionPropertiesBase):
    provisioningState = fields.String(dump_only=True)
    instanceView = fields.Nested(InstanceViewSchema, dump_only=True)


class MachineExtensionSchema(TrackedResourceSchema):
    properties = fields.Nested(MachineExtensionPropertiesSchema, load_default=dict)


class MachineExtensionUpdatePropertiesSchema(_ExtensionPropertiesBase):
    pass


class MachineExtensionUpdateSchema(ArmSchema):
    tags = tags_field()
    properties = fields.Nested(MachineExtensionUpdatePropertiesSchema, load_default=dict)


class MachineExtensionListSchema(Schema):
    value = fields.List(fields.Nested(MachineExtensionSchema))
    nextLink = fields.String()
