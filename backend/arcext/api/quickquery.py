"""Query strings of plain text parameters (api-version, $skiptoken, ...) loaded without webargs and marshmallow.

Every ARM request's query passes ``ApiVersionQuerySchema`` (or ``ListQuerySchema``); webargs' parse and
marshmallow's load of that one field were a tenth of a GET (issue #12). :func:`query_loader` compiles a schema
whose fields are all plain ``fields.String`` (no validators, hooks, attributes or nesting) into a function that
returns what ``schema.load`` returns for a query it accepts: each parameter present, by its attribute name, and
the load_default of an absent optional one. It returns None for anything else (a required parameter missing, a
value that is not text), and the caller then lets webargs parse as before, so every refusal and its message is
webargs' own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import Schema, fields, missing

#: query (a MultiDict) -> the loaded arguments, or None: "parse it the usual way"
QueryLoader = Callable[[Mapping[str, Any]], dict[str, Any] | None]


def _plain_text(field: fields.Field[Any]) -> bool:
    return (
        type(field)._deserialize is fields.String._deserialize
        and type(field).deserialize is fields.Field.deserialize
        and not field.validators
        and field.attribute is None
        and not field.allow_none
    )


def query_loader(schema: Schema) -> QueryLoader | None:
    """A fast load of ``schema`` for a query string, or None when the schema is not one it can do exactly."""
    if any(schema._hooks.values()) or type(schema).load is not Schema.load or schema.many:
        return None
    load_fields = schema.load_fields
    if not all(_plain_text(f) for f in load_fields.values()):
        return None
    plan = [
        (attr, field.data_key if field.data_key is not None else attr, field.required, field.load_default)
        for attr, field in load_fields.items()
    ]

    def load(query: Mapping[str, Any]) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for attr, key, required, default in plan:
            value = query.get(key, missing)
            if value is missing:
                if required:
                    return None
                if default is not missing:
                    out[attr] = default() if callable(default) else default
            elif type(value) is str:
                out[attr] = value
            else:
                return None
        return out

    return load
