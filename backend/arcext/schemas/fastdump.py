"""Compiled response dumps: the output of ``Schema.dump``, without marshmallow's per-field dispatch.

``Schema.dump`` walks its fields through several layers of generic calls per value (``Field.serialize``,
``get_value``, the accessor, ``_serialize``); on a GET of one extension that was a third of the request
(issue #12). :func:`compile_dump` reads a schema instance's dump fields once and returns a function that builds
the same dict: the same keys in the same order, the same values, the same ``post_dump`` hooks. It inlines only
what it knows exactly (String, Raw, Nested, List and Dict fields whose serialisation is marshmallow's own, read
from a dict or object by a plain key); any other field is serialised by marshmallow itself, and a schema with
features the compiler does not reproduce (pre_dump or collection hooks, a custom accessor or ``_serialize``, a
different ``dict_class``) keeps its own ``dump``. tests/test_api_fastdump.py compares both on every response
schema of the API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import Schema, fields, missing
from marshmallow.decorators import POST_DUMP, PRE_DUMP

#: value, parent object -> serialised value
ValueSerializer = Callable[[Any, Any], Any]
#: obj, many -> serialised obj (what Schema.dump returns)
Dump = Callable[..., Any]

_PLAIN_FIELD = fields.Field.serialize
_PLAIN_GET_VALUE = fields.Field.get_value
_PLAIN_ACCESSOR = Schema.get_attribute
_NESTED: Any = fields.Nested._serialize


def _value_for_key(obj: Any, key: str) -> Any:
    """marshmallow.utils.get_value for a key without a dot (the item, else the attribute, else missing)."""
    if type(obj) is dict:
        try:
            return obj[key]
        except KeyError:
            return getattr(obj, key, missing)
    if not hasattr(obj, "__getitem__"):
        return getattr(obj, key, missing)
    try:
        return obj[key]
    except (KeyError, IndexError, TypeError, AttributeError):
        return getattr(obj, key, missing)


def _text(value: Any, _obj: Any) -> Any:
    """fields.String._serialize: None stays None, bytes are decoded, anything else is str()."""
    if type(value) is str or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _as_is(value: Any, _obj: Any) -> Any:
    return value


def _value_serializer(field: fields.Field[Any], attr: str) -> ValueSerializer:
    """How ``field._serialize`` turns a (present) value into its dump."""
    kind = type(field)._serialize
    if kind is fields.String._serialize:
        return _text
    if kind is fields.Field._serialize:  # Raw and Field
        return _as_is
    if kind is _NESTED and isinstance(field, fields.Nested):
        nested_schema = field.schema
        nested_dump = compile_dump(nested_schema)
        many = bool(nested_schema.many or field.many)

        def nested(value: Any, _obj: Any) -> Any:
            return None if value is None else nested_dump(value, many=many)

        return nested
    if kind is fields.List._serialize and isinstance(field, fields.List):
        inner = _value_serializer(field.inner, attr)

        def listed(value: Any, obj: Any) -> Any:
            return None if value is None else [inner(each, obj) for each in value]

        return listed
    if kind is fields.Mapping._serialize and isinstance(field, fields.Mapping):
        return _mapping_serializer(field, attr)

    def own(value: Any, obj: Any) -> Any:
        return field._serialize(value, attr, obj)

    return own


def _mapping_serializer(field: fields.Mapping[Any], attr: str) -> ValueSerializer:
    """fields.Mapping._serialize with its key and value fields compiled."""
    mapping_type = field.mapping_type
    key_field, value_field = field.key_field, field.value_field
    if not value_field and not key_field:
        return lambda value, _obj: None if value is None else mapping_type(value)
    # the inner fields are called with attr and obj None, as marshmallow does
    key_of = _value_serializer(key_field, attr) if key_field is not None else None
    value_of = _value_serializer(value_field, attr) if value_field is not None else None
    if key_of is not None and key_of not in (_text, _as_is):
        key_of = _detached(key_field)
    if value_of is not None and value_of not in (_text, _as_is) and not isinstance(value_field, fields.Nested):
        value_of = _detached(value_field)

    def mapping(value: Any, _obj: Any) -> Any:
        if value is None:
            return None
        keys = {k: k for k in value} if key_of is None else {k: key_of(k, None) for k in value}
        result = mapping_type()
        if value_of is None:
            for k, v in value.items():
                if k in keys:
                    result[keys[k]] = v
        else:
            for k, v in value.items():
                result[keys[k]] = value_of(v, None)
        return result

    return mapping


def _detached(field: fields.Field[Any] | None) -> ValueSerializer:
    """An inner field of a mapping, serialised by marshmallow with attr and obj None."""
    assert field is not None
    return lambda value, _obj: field._serialize(value, None, None)


def _plain_hooks(schema: Schema) -> list[Callable[..., Any]] | None:
    """The schema's post_dump hooks as bound methods, or None when it has hooks the compiler does not reproduce."""
    if schema._hooks[PRE_DUMP]:
        return None
    hooks = []
    for attr_name, pass_collection, kwargs in schema._hooks[POST_DUMP]:
        if pass_collection or kwargs.get("pass_original"):
            return None
        hooks.append(getattr(schema, attr_name))
    return hooks


_Step = tuple[str, str, str, fields.Field[Any], ValueSerializer | None]  # key, attr, source key, field, value

#: names a dict instance answers as attributes (marshmallow falls back to getattr for a key a dict lacks)
_DICT_ATTRIBUTES = frozenset(dir({}))


def _generate_one(plan: list[_Step], accessor: Any) -> Callable[[Any], dict[str, Any]]:
    """The dump of one object as straight-line Python: one block per field, in the schema's order.

    For each field: the generic call (``field.serialize`` with the schema's accessor) when it is not simple;
    otherwise the value by key (a dict's ``get``, or marshmallow's item-then-attribute lookup), the field's
    dump_default when the value is missing, and the value serializer (text and as-is values inline)."""
    names: dict[str, Any] = {"M": missing, "_get": _value_for_key, "_text": _text, "accessor": accessor}
    lines = ["def one(obj):", "    ret = {}", "    is_dict = type(obj) is dict"]
    for i, (key, attr_name, check_key, field, serialize) in enumerate(plan):
        names[f"field{i}"] = field
        if serialize is None:
            lines += [
                f"    v = field{i}.serialize({attr_name!r}, obj, accessor=accessor)",
                "    if v is not M:",
                f"        ret[{key!r}] = v",
            ]
            continue
        if check_key in _DICT_ATTRIBUTES:
            lines.append(f"    v = _get(obj, {check_key!r})")
        else:
            lines.append(f"    v = obj.get({check_key!r}, M) if is_dict else _get(obj, {check_key!r})")
        if field.dump_default is not missing:
            lines += [
                "    if v is M:",
                f"        v = field{i}.dump_default() if callable(field{i}.dump_default) else field{i}.dump_default",
            ]
        lines.append("    if v is not M:")
        if serialize is _text:
            lines.append(f"        ret[{key!r}] = v if v is None or type(v) is str else _text(v, obj)")
        elif serialize is _as_is:
            lines.append(f"        ret[{key!r}] = v")
        else:
            names[f"serialize{i}"] = serialize
            lines.append(f"        ret[{key!r}] = serialize{i}(v, obj)")
    lines.append("    return ret")
    exec("\n".join(lines), names)  # noqa: S102 - code made here from the schema's own field names (as literals)
    one: Callable[[Any], dict[str, Any]] = names["one"]
    return one


def compile_dump(schema: Schema) -> Dump:
    """A function with ``schema.dump``'s signature and results (``dump(obj, *, many=None)``)."""
    cached: Dump | None = getattr(schema, "_arcext_compiled_dump", None)
    if cached is not None:
        return cached
    hooks = _plain_hooks(schema)
    schema_type = type(schema)
    if (
        hooks is None
        or schema.dict_class is not dict
        or schema_type.get_attribute is not _PLAIN_ACCESSOR
        or schema_type._serialize is not Schema._serialize
        or schema_type.dump is not Schema.dump
    ):
        return schema.dump
    default_many = bool(schema.many)
    plan: list[_Step] = []
    one: Callable[[Any], dict[str, Any]]

    def dump(obj: Any, *, many: bool | None = None) -> Any:
        if default_many if many is None else many:
            if obj is None:
                return Schema.dump(schema, obj, many=True)  # marshmallow's own oddity, kept
            out = [one(item) for item in obj]
            for hook in hooks:
                out = [hook(item, many=True) for item in out]
            return out
        data = one(obj)
        for hook in hooks:
            data = hook(data, many=False)
        return data

    # stored before the fields compile: a schema nested in itself finds its own dump
    schema.__dict__["_arcext_compiled_dump"] = dump
    for attr_name, field in schema.dump_fields.items():
        key = field.data_key if field.data_key is not None else attr_name
        check_key = attr_name if field.attribute is None else field.attribute
        simple = (
            type(field).serialize is _PLAIN_FIELD
            and type(field).get_value is _PLAIN_GET_VALUE
            and field._CHECK_ATTRIBUTE
            and "." not in check_key
        )
        plan.append((key, attr_name, check_key, field, _value_serializer(field, attr_name) if simple else None))
    one = _generate_one(plan, schema.get_attribute)
    return dump
