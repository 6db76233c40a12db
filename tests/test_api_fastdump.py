"""The compiled response dumps (arcext.schemas.fastdump) and query loads (arcext.api.quickquery) give exactly
what marshmallow and webargs give: every schema of the API, on generated records (missing keys, nulls, values
of the wrong type, nesting, lists, maps), compared key by key and in key order."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, fields
from werkzeug.datastructures import MultiDict

import arcext.schemas
from arcext.api.base import ArmParser
from arcext.api.quickquery import query_loader
from arcext.schemas.common import ApiVersionQuerySchema, ListQuerySchema
from arcext.schemas.extension import MachineExtensionListSchema, MachineExtensionSchema
from arcext.schemas.fastdump import compile_dump


def _schema_classes() -> list[type[Schema]]:
    found: dict[str, type[Schema]] = {}
    for info in pkgutil.iter_modules(arcext.schemas.__path__):
        module = importlib.import_module(f"arcext.schemas.{info.name}")
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, Schema) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    return [found[k] for k in sorted(found)]


SCHEMAS = _schema_classes()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)


def _value_for(field: fields.Field, draw: Any, depth: int) -> Any:
    """A value a record might hold for ``field``: usually of its type, sometimes null or of another type."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return None
    if choice == 1 and not isinstance(field, (fields.Nested, fields.List, fields.Mapping)):
        return draw(json_values)  # the wrong type: what marshmallow does with it must be done here too
    if isinstance(field, fields.Nested):
        nested = field.schema
        if nested.many or field.many:
            return [_record_for(nested, draw, depth + 1) for _ in range(draw(st.integers(0, 2)))]
        return _record_for(nested, draw, depth + 1)
    if isinstance(field, fields.List):
        return [_value_for(field.inner, draw, depth + 1) for _ in range(draw(st.integers(0, 3)))]
    if isinstance(field, fields.Mapping):
        keys = draw(st.lists(st.one_of(st.text(max_size=5), st.integers(0, 9)), max_size=3, unique=True))
        value_field = field.value_field
        if value_field is None:
            return {k: draw(json_values) for k in keys}
        return {k: _value_for(value_field, draw, depth + 1) for k in keys}
    if isinstance(field, fields.String):
        return draw(st.one_of(st.text(max_size=12), st.binary(max_size=4).map(lambda b: b.hex().encode())))
    if isinstance(field, fields.Boolean):
        return draw(st.booleans())
    if isinstance(field, fields.Integer):
        return draw(st.integers(-1000, 1000))
    if isinstance(field, fields.Float):
        return draw(st.floats(allow_nan=False, allow_infinity=False))
    return draw(json_values)


def _record_for(schema: Schema, draw: Any, depth: int = 0) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, field in schema.fields.items():
        if depth > 4 or draw(st.integers(0, 4)) == 0:
            continue  # absent
        record[field.attribute or name] = _value_for(field, draw, depth)
    if draw(st.booleans()):
        record["notInTheSchema"] = draw(json_values)
    return record


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same key order at every level (the wire format is the JSON of it)."""
    return json.dumps(a, default=repr) == json.dumps(b, default=repr) and type(a) is type(b)


@pytest.mark.parametrize("schema_class", SCHEMAS, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_compiled_dump_equals_marshmallow(schema_class: type[Schema], data: st.DataObject) -> None:
    reference, compiled_on = schema_class(), schema_class()
    dump = compile_dump(compiled_on)
    record = _record_for(reference, data.draw)
    _compare(lambda: reference.dump(record), lambda: dump(record), record)
    many = [record, _record_for(reference, data.draw)]
    _compare(lambda: reference.dump(many, many=True), lambda: dump(many, many=True), many)


def _compare(expected_of: Any, actual_of: Any, record: Any) -> None:
    try:
        expected = expected_of()
    except Exception as exc:  # noqa: BLE001 - the same failure is expected of the compiled dump
        with pytest.raises(type(exc)):
            actual_of()
        return
    actual = actual_of()
    assert _same(actual, expected), (record, actual, expected)


def test_the_common_responses_are_compiled_not_delegated() -> None:
    """The speed is only there if the schemas of the hot paths are compiled (not handed back to marshmallow)."""
    for schema_class in (MachineExtensionSchema, MachineExtensionListSchema):
        schema = schema_class()
        assert compile_dump(schema) is not schema.dump


def test_post_dump_hook_runs_as_marshmallow_runs_it() -> None:
    """InstanceViewSchema turns a stored null typeHandlerVersion into "" (a post_dump hook), nested and in lists."""
    record = {
        "name": "cse",
        "properties": {"instanceView": {"name": "cse", "typeHandlerVersion": None, "status": {"code": "ok"}}},
    }
    schema = MachineExtensionSchema()
    assert compile_dump(MachineExtensionSchema())(record) == schema.dump(record)
    assert compile_dump(MachineExtensionSchema())(record)["properties"]["instanceView"]["typeHandlerVersion"] == ""
    page = {"value": [record, record]}
    assert compile_dump(MachineExtensionListSchema())(page) == MachineExtensionListSchema().dump(page)


query_values = st.lists(
    st.tuples(st.sampled_from(["api-version", "$expand", "$skiptoken", "other", "API-VERSION"]), st.text(max_size=6)),
    max_size=5,
)


@pytest.mark.parametrize("schema_class", [ApiVersionQuerySchema, ListQuerySchema])
@settings(max_examples=100, deadline=None)
@given(pairs=query_values)
def test_quick_query_load_equals_webargs(schema_class: type[Schema], pairs: list[tuple[str, str]]) -> None:
    """Where the quick loader answers, webargs (FlaskParser's query location) answers the same; where webargs
    refuses, the quick loader does not answer (so webargs' own refusal is sent)."""
    from flask import Flask

    loader = query_loader(schema_class())
    assert loader is not None
    app = Flask(__name__)
    query = "&".join(f"{k}={v}" for k, v in MultiDict(pairs).items(multi=True))
    with app.test_request_context("/", query_string=MultiDict(pairs)):
        from flask import request

        quick = loader(request.args)
        parser = ArmParser()
        try:
            expected = super(ArmParser, parser).parse(schema_class, request, location="query")
        except Exception:  # noqa: BLE001 - a refusal: webargs' error handler raises
            assert quick is None, query
            return
        assert quick is None or _same(quick, expected), (query, quick, expected)
        assert parser.parse(schema_class, request, location="query") == expected


def test_the_api_version_query_is_loaded_without_webargs(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the views call it (webargs passes no request object): the quick load answers, webargs is not asked."""
    from flask import Flask
    from webargs.flaskparser import FlaskParser

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("webargs parsed a query the quick loader accepts")

    parser = ArmParser()
    app = Flask(__name__)
    with app.test_request_context("/?api-version=2024-07-10&$skiptoken=abc"):
        monkeypatch.setattr(FlaskParser, "parse", refuse)
        assert parser.parse(ListQuerySchema, None, location="query", unknown="_default", validate=None) == {
            "api_version": "2024-07-10",
            "skiptoken": "abc",
        }


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    return isinstance(value, list) and any(_has_float(v) for v in value)


@settings(max_examples=150, deadline=None)
@given(
    value=st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**63), max_value=2**63),
            # finite only: the API refuses NaN and the infinities (jsonbody), and orjson writes them as null
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
        ),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
        max_leaves=10,
    )
)
def test_json_responses_are_the_bytes_flask_sends(value: Any) -> None:
    """ArmJSONProvider's bodies (orjson) are Flask's: the same JSON value, and the same bytes unless a float is in
    it (orjson writes an exponent as ``1e16``, json as ``1e+16``); non-ASCII text escaped as Flask escapes it."""
    import datetime
    import uuid

    from flask import Flask
    from flask.json.provider import DefaultJSONProvider

    from arcext.api.jsonbody import ArmJSONProvider

    app = Flask(__name__)
    ours, flask_own = ArmJSONProvider(app), DefaultJSONProvider(app)
    for body in (value, {"when": datetime.date(2026, 1, 2), "id": uuid.UUID(int=7), "v": value}):
        with app.app_context():
            sent, flask_sent = ours.response(body).get_data(), flask_own.response(body).get_data()
            assert json.loads(sent) == json.loads(flask_sent)
            assert sent.isascii() and sent.endswith(b"\n")
            if not _has_float(value):
                assert sent == flask_sent
    ours.sort_keys = True  # a changed setting makes a new encoder
    assert ours.dumps({"b": 1, "a": 2}, separators=(",", ":")) == '{"a":2,"b":1}'
