"""flask-smorest customised for ARM: 400 on validation errors and the ARM error envelope."""

from __future__ import annotations

import base64
import binascii
import functools
import inspect
from collections.abc import Callable, Mapping
from types import FunctionType, MethodType
from typing import Any, TypeVar
from urllib.parse import urlencode

import flask
import flask_smorest
from flask import current_app, jsonify, request
from flask.globals import _cv_app
from flask.views import MethodView
from flask_smorest.utils import (
    get_appcontext,
    resolve_schema_instance,
    set_status_and_headers_in_response,
    unpack_tuple_response,
)
from marshmallow import Schema, missing
from webargs.core import _UNKNOWN_DEFAULT_PARAM
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug import Response as WerkzeugResponse
from werkzeug.exceptions import HTTPException

from .. import errors
from ..ids import machine_key
from ..schemas.common import ErrorResponseSchema
from ..schemas.fastdump import compile_dump
from . import jsonbody
from .quickquery import QueryLoader, query_loader
from .urls import public_base_url

ViewT = TypeVar("ViewT", bound=Callable[..., Any])


class ArmParser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400

    def __init__(self) -> None:
        super().__init__()
        self._schemas: dict[type[Schema], Schema] = {}
        self._query_loaders: dict[type[Schema], QueryLoader | None] = {}

    def parse(self, argmap: Any, req: flask.Request | None = None, **kwargs: Any) -> Any:
        """A query of plain text parameters that its schema accepts is loaded by arcext.api.quickquery (the
        same result); anything else, and every refusal, is webargs' own parse."""
        if (
            kwargs.get("location") == "query"
            and isinstance(argmap, type)
            and not kwargs.get("validate")
            and kwargs.get("unknown", _UNKNOWN_DEFAULT_PARAM) == _UNKNOWN_DEFAULT_PARAM
            and self.unknown == _UNKNOWN_DEFAULT_PARAM
        ):
            try:
                loader = self._query_loaders[argmap]
            except KeyError:
                loader = self._query_loaders.setdefault(argmap, query_loader(self._get_schema(argmap, flask.request)))
            if loader is not None:
                bound = req if req is not None else flask.request._get_current_object()  # type: ignore[attr-defined]
                loaded = loader(bound.args)
                if loaded is not None:
                    return loaded
        return super().parse(argmap, req, **kwargs)

    def _get_schema(self, argmap: Any, req: flask.Request) -> Schema:
        """One instance per schema class (webargs makes a new one for every request: a tenth of a GET's time);
        loading keeps no state on the instance, so threads share it as flask-smorest shares response schemas."""
        if isinstance(argmap, type) and issubclass(argmap, Schema):
            schema = self._schemas.get(argmap)
            if schema is None:
                schema = self._schemas.setdefault(argmap, argmap())
            return schema
        found: Schema = super()._get_schema(argmap, req)
        return found

    def _raw_load_json(self, req: flask.Request) -> Any:
        """Strict JSON (arcext.api.jsonbody) with the reason in the 400, instead of webargs' json.loads."""
        if not is_json_request(req):
            return missing
        data = req.get_data(cache=True)
        if not data:
            return missing
        try:
            return jsonbody.loads(data)
        except jsonbody.InvalidJson as exc:
            raise errors.invalid_request_content(str(exc)) from None


def is_plain_sync(func: Callable[..., Any]) -> bool:
    """True when ``func`` is a plain (not async) function or a method of one: what Flask's ``ensure_sync`` hands
    back unchanged, without inspect's unwrapping."""
    plain = func.__func__ if type(func) is MethodType else func  # inspect looks through bound methods too
    return (
        type(plain) is FunctionType
        and not plain.__code__.co_flags & inspect.CO_COROUTINE
        and "_is_coroutine_marker" not in plain.__dict__  # inspect.markcoroutinefunction (Python 3.12)
    )


#: the use_args options webargs passes on to parse (the others change how the view is called)
_PARSE_OPTIONS = frozenset({"unknown", "validate", "error_status_code", "error_headers"})
#: flask-smorest's own options of ``arguments`` (documentation only)
_DOC_OPTIONS = frozenset({"content_type", "required", "description", "example", "examples"})


class ArmBlueprint(flask_smorest.Blueprint):  # type: ignore[misc]
    """flask-smorest's Blueprint whose ``arguments`` and ``response`` document the same and run the same, each as
    one wrapper around the view instead of flask-smorest's and webargs' two and their lookups of the app (every
    API request goes through them, issue #12). An async view, or webargs options that change the view's call
    (``as_kwargs``, ``arg_name``), keep flask-smorest's wrappers."""

    ARGUMENTS_PARSER = ArmParser()

    def arguments(self, schema: Any, *, location: str = "json", **kwargs: Any) -> Callable[[ViewT], ViewT]:
        """flask-smorest's ``arguments``: what it documents, and webargs' ``use_args`` parse of the request,
        passed to the view after its positional arguments."""
        documented: Callable[[ViewT], ViewT] = super().arguments(schema, location=location, **kwargs)
        parser = self.ARGUMENTS_PARSER
        use_args = {k: v for k, v in kwargs.items() if k not in _DOC_OPTIONS}
        if not set(use_args) <= _PARSE_OPTIONS or isinstance(schema, Mapping):
            return documented
        # what webargs' use_args wrapper passes to parse (its defaults for the options not given)
        options: dict[str, Any] = {
            "location": location or parser.location,
            "unknown": use_args.get("unknown", _UNKNOWN_DEFAULT_PARAM),
            "validate": use_args.get("validate"),
            "error_status_code": use_args.get("error_status_code"),
            "error_headers": use_args.get("error_headers"),
        }
        parse = parser.parse

        def decorator(func: ViewT) -> ViewT:
            wrapped = documented(func)  # webargs' wrapper of flask-smorest's: it carries the documentation
            if not is_plain_sync(func):
                return wrapped

            def parsed_into(*args: Any, **view_args: Any) -> Any:
                return func(*args, parse(schema, None, **options), **view_args)

            functools.update_wrapper(parsed_into, wrapped)
            return parsed_into  # type: ignore[return-value]

        return decorator

    def response(self, status_code: int | str, schema: Any = None, **kwargs: Any) -> Callable[[ViewT], ViewT]:
        """flask-smorest's response (the same documentation, the same answer), dumped by the schema compiled once
        (arcext.schemas.fastdump: same output)."""
        if schema is not None:
            schema = resolve_schema_instance(schema)
            # the instance is this response's own (or shared with others: the compiled dump is the same dump)
            setattr(schema, "dump", compile_dump(schema))  # noqa: B010
        documented: Callable[[ViewT], ViewT] = super().response(status_code, schema, **kwargs)
        prepare = self._prepare_response_content

        def decorator(func: ViewT) -> ViewT:
            wrapped = documented(func)
            if not is_plain_sync(func):
                return wrapped

            def answered(*args: Any, **view_args: Any) -> Any:
                # flask-smorest's response wrapper, step by step
                result_raw, r_status_code, r_headers = unpack_tuple_response(func(*args, **view_args))
                if isinstance(result_raw, WerkzeugResponse):
                    set_status_and_headers_in_response(result_raw, r_status_code, r_headers)
                    return result_raw
                result_dump = result_raw if schema is None else schema.dump(result_raw)
                app_ctx = _cv_app.get(None)
                resp: Any
                if app_ctx is None:  # no application context: flask-smorest's own lookups, and Flask's error
                    get_appcontext()["result_dump"] = result_dump
                    resp = jsonify(prepare(result_dump))
                else:  # get_appcontext() and jsonify() on the context itself, not through Flask's proxies
                    app_ctx.g.setdefault("_flask_smorest", {})["result_dump"] = result_dump
                    resp = app_ctx.app.json.response(prepare(result_dump))
                set_status_and_headers_in_response(resp, r_status_code, r_headers)
                if r_status_code is None:
                    resp.status_code = status_code  # as flask-smorest sets it
                return resp

            functools.update_wrapper(answered, wrapped)
            return answered  # type: ignore[return-value]

        return decorator

    def long_running(
        self, then: str = "", *, never_sent: type[Schema] | None = None, no_such: str | None = None
    ) -> Callable[[ViewT], ViewT]:
        """Document a long-running write's answers: 202, poll Azure-AsyncOperation (``then``: what follows);
        with ``never_sent``, the 200 with that resource schema which the spec allows and arcext never sends;
        with ``no_such``, the 204 of a delete that found nothing."""
        accepted = "Accepted: poll Azure-AsyncOperation" + (f"; {then}" if then else "")

        def document(view: ViewT) -> ViewT:
            if no_such is not None:
                view = self.alt_response(204, description=no_such)(view)
            if never_sent is not None:
                view = self.alt_response(
                    200, schema=never_sent, description="Never sent by arcext; allowed by the spec"
                )(view)
            return self.response(202, description=accepted)(view)

        return document


class ArmMethodView(MethodView):
    """Flask's MethodView with one instance per route (the API's views keep nothing on ``self``), and whose dispatch
    reads the request and the app once (every API request goes through it, issue #12)."""

    init_every_request = False

    def dispatch_request(self, **kwargs: Any) -> Any:
        """MethodView's: the view method named by the request method (HEAD falls back to GET), via ensure_sync."""
        method = request._get_current_object().method  # type: ignore[attr-defined]
        meth = getattr(self, method.lower(), None)
        if meth is None and method == "HEAD":
            meth = getattr(self, "get", None)
        assert meth is not None, f"Unimplemented method {method!r}"
        return current_app._get_current_object().ensure_sync(meth)(**kwargs)  # type: ignore[attr-defined]


def machine_path(view: Callable[..., Any]) -> Callable[..., Any]:
    """The view takes ``key``, the machine's MachineKey, in place of the route's ``subscription_id``,
    ``resource_group`` and ``machine_name``. Put it next to the ``def`` (under the flask-smorest decorators):
    the key is parsed, and a bad segment refused, when the view runs, after the query and body were."""

    @functools.wraps(view)
    def with_key(*args: Any, subscription_id: str, resource_group: str, machine_name: str, **kwargs: Any) -> Any:
        return view(*args, key=_machine_key(subscription_id, resource_group, machine_name), **kwargs)

    return with_key


#: ids.machine_key (three validations) once per machine path: a MachineKey is immutable, a refusal is not kept
_machine_key = functools.lru_cache(maxsize=8192)(machine_key)


def require_location(body: dict[str, Any]) -> None:
    """A tracked resource's create-or-update must name its location (ARM's LocationRequired, not a schema 400)."""
    if not body.get("location"):
        raise errors.location_required()


def _first_error(messages: Any, path: str = "") -> tuple[str, str]:
    """Flatten webargs' nested messages to (field path, first message)."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key in ("json", "query", "_schema"):
                return _first_error(value, path)
            sub = f"{path}.{key}" if path else str(key)
            return _first_error(value, sub)
    if isinstance(messages, list) and messages:
        return _first_error(messages[0], path) if isinstance(messages[0], (dict, list)) else (path, str(messages[0]))
    return path, str(messages)


class ArmApi(flask_smorest.Api):  # type: ignore[misc]
    ERROR_SCHEMA = ErrorResponseSchema

    def handle_http_exception(self, error: HTTPException) -> Any:
        data = getattr(error, "data", None) or {}
        messages = data.get("messages")
        if messages is not None:
            target, message = _first_error(messages)
            if message == "Invalid JSON body.":
                arm = errors.invalid_request_content("the body is not valid JSON.")
            elif target in ("api-version",):
                arm = errors.missing_api_version()
            elif message == "Unknown field.":
                arm = errors.invalid_request_content(f"'{target}' is not a property of this resource.", target)
            else:
                arm = errors.invalid_request_content(f"'{target or 'body'}': {message}", target or None)
        elif error.code == 413:
            arm = errors.request_too_large(int(request.max_content_length or current_app.config["ARCEXT_MAX_BODY"]))
        elif error.code == 404:
            arm = errors.not_found_path(request.path)
        elif error.code == 405:
            arm = errors.method_not_allowed(request.method, request.path)
        elif error.code == 415:
            arm = errors.unsupported_media_type(request.content_type or "")
        else:
            name = (error.name or "Error").title().replace(" ", "")
            arm = errors.ArmError(error.code or 500, name, error.description or name)
        return render_arm_error(arm)


def empty(status: int) -> flask.Response:
    """A response with no body, and so no media type (Flask would otherwise say text/html)."""
    response = flask.Response(status=status)
    del response.headers["Content-Type"]
    return response


def render_arm_error(error: errors.ArmError) -> Any:
    return error.to_body(), error.status, error.headers


# --- paging --------------------------------------------------------------------------------
def encode_token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str | None) -> str | None:
    if not token:
        return None
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
        if not raw:
            raise ValueError(token)
        return raw
    except (binascii.Error, ValueError):
        raise errors.bad_request(
            "The $skiptoken is not valid; use the nextLink of a previous page.", target="$skiptoken"
        ) from None


def next_link(token: str) -> str:
    """An absolute nextLink to this same list with the continuation token."""
    args = {k: v for k, v in request.args.items() if k.lower() != "$skiptoken"}
    args["$skiptoken"] = encode_token(token)
    return f"{public_base_url()}{request.path}?{urlencode(args)}"


def page(items: list[dict[str, Any]], token: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"value": items}
    if token is not None:
        body["nextLink"] = next_link(token)
    return body


def page_list(items: list[dict[str, Any]], skiptoken: str | None) -> dict[str, Any]:
    """Page an in-memory list by position (small lists: extensions of one machine, versions)."""
    size = int(current_app.config["ARCEXT_PAGE_SIZE"])
    raw = decode_token(skiptoken)
    if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise errors.bad_request(
            "The $skiptoken is not valid; use the nextLink of a previous page.", target="$skiptoken"
        )
    start = int(raw) if raw else 0
    chunk = items[start : start + size]
    more = start + size < len(items)
    return page(chunk, str(start + size) if more else None)
