"""Shapes shared by every resource: strict JSON types, systemData, the error envelope, list pages."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from .. import names


class ArmSchema(Schema):
    """Request bodies drop unknown and read-only fields: Az round-trips whole objects."""

    class Meta:
        unknown = EXCLUDE


class StrictBoolean(fields.Boolean):
    """A JSON boolean and nothing else ("yes", 1 and "true" are rejected, as ARM's schema validation does)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(f"Expected a JSON boolean (true or false), got {type(value).__name__}.")
        return value


class StrictString(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError(f"Expected a JSON string, got {type(value).__name__}.")
        return str(super()._deserialize(value, attr, data, **kwargs))


def _no_name_problem(value: str) -> None:
    problem = names.name_problem(value)
    if problem:
        raise ValidationError(f"'{value}' is not valid: {problem}")


def _no_version_problem(value: str) -> None:
    problem = names.version_problem(value)
    if problem:
        raise ValidationError(f"'{value}' is not valid: {problem}")


def extension_name_field(description: str) -> StrictString:
    """A publisher or extension type: letters, digits, '.', '-', '_', no '..' (they name folders on hosts)."""
    return StrictString(
        validate=[validate.Regexp(re.compile(names.NAME_PATTERN), error=names.NAME_RULE), _no_name_problem],
        metadata={"description": description},
    )


def version_field(description: str) -> StrictString:
    """An extension version: one to four dot-separated numbers."""
    return StrictString(
        validate=[validate.Regexp(re.compile(names.VERSION_PATTERN), error=names.VERSION_RULE), _no_version_problem],
        metadata={"description": description},
    )


def json_object(**kwargs: Any) -> fields.Dict:
    """A free-form JSON object (settings, protectedSettings, profiles)."""
    return fields.Dict(keys=fields.String(), **kwargs)


def tags_field() -> fields.Dict:
    return fields.Dict(keys=fields.String(), values=StrictString(), metadata={"description": "Resource tags."})


class SystemDataSchema(Schema):
    createdBy = fields.String()
    createdByType = fields.String()
    createdAt = fields.String()
    lastModifiedBy = fields.String()
    lastModifiedByType = fields.String()
    lastModifiedAt = fields.String()


class TrackedResourceSchema(ArmSchema):
    """ARM's tracked-resource envelope (the spec's TrackedResource): what a machine and an extension share."""

    id = fields.String(dump_only=True)
    name = fields.String(dump_only=True)
    type = fields.String(dump_only=True)
    systemData = fields.Nested(SystemDataSchema, dump_only=True)
    location = StrictString(metadata={"description": "Required on PUT."})
    tags = tags_field()


class ErrorDetailSchema(Schema):
    code = fields.String()
    message = fields.String()
    target = fields.String()
    details = fields.List(fields.Dict())


class ErrorResponseSchema(Schema):
    error = fields.Nested(ErrorDetailSchema)


class ApiVersionQuerySchema(ArmSchema):
    api_version = fields.String(data_key="api-version", required=True, metadata={"description": "e.g. 2026-07-15"})


class ListQuerySchema(ApiVersionQuerySchema):
    expand = fields.String(data_key="$expand")
    skiptoken = fields.String(data_key="$skiptoken")
