"""ExtensionValue (extension metadata), the operations list and the operation status."""

from __future__ import annotations

from marshmallow import Schema, fields

from .common import ArmSchema, ErrorDetailSchema, StrictBoolean


class ExtensionValuePropertiesSchema(Schema):
    version = fields.String()
    extensionType = fields.String()
    publisher = fields.String()


class ExtensionValueSchema(Schema):
    id = fields.String()
    name = fields.String()
    type = fields.String()
    properties = fields.Nested(ExtensionValuePropertiesSchema)


class ExtensionValueListSchema(Schema):
    value = fields.List(fields.Nested(ExtensionValueSchema))
    nextLink = fields.String()


class OperationDisplaySchema(Schema):
    provider = fields.String()
    resource = fields.String()
    operation = fields.String()
    description = fields.String()


class OperationValueSchema(Schema):
    origin = fields.String()
    name = fields.String()
    display = fields.Nested(OperationDisplaySchema)
    isDataAction = fields.Boolean()


class OperationListSchema(Schema):
    value = fields.List(fields.Nested(OperationValueSchema))


class OperationStatusSchema(Schema):
    name = fields.String()
    status = fields.String(metadata={"description": "InProgress, Succeeded, Failed or Canceled"})
    startTime = fields.String()
    endTime = fields.String()
    properties = fields.Raw(metadata={"description": "On success, the resource the operation produced."})
    error = fields.Nested(ErrorDetailSchema)


class ExtensionTypeBodySchema(ArmSchema):
    autoUpgradeSupported = StrictBoolean(required=True)


class ExtensionTypeSchema(Schema):
    publisher = fields.String()
    type = fields.String()
    product = fields.String()
    autoUpgradeSupported = fields.Boolean()
    updatedAt = fields.String()


class ExtensionVersionBodySchema(ArmSchema):
    critical = StrictBoolean(load_default=False)


class ExtensionVersionSchema(Schema):
    publisher = fields.String()
    type = fields.String()
    version = fields.String()
    critical = fields.Boolean()
    publishedAt = fields.String()
    rolloutId = fields.String(metadata={"description": "The rollout the engine planned for this version, if any"})
