"""Strict JSON for request bodies: what the API accepts is exactly what its stores can keep. Messages never
quote the body (it may hold protectedSettings).

Python's json module accepts more than JSON and more than orjson (the journal's encoder) can write back:
``NaN``/``Infinity`` and ``1e999`` (stored as null), integers of any size (orjson stops at 64 bits), lone
surrogates (not UTF-8), and nesting deep enough to raise RecursionError (orjson stops at 254 levels). Each of
those is an :class:`InvalidJson` here, which the API answers with 400 InvalidRequestContent (issue #10).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response

MAX_DEPTH = 64
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
_INT_DIGITS_MAX = 20


class InvalidJson(ValueError):
    """The body is not JSON this API can accept; the message says why, for the caller."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _INT_DIGITS_MAX:
        raise InvalidJson(f"an integer has {len(text)} characters: integers must fit in 64 bits.")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise InvalidJson("an integer is out of range: integers must fit in 64 bits (signed or unsigned).")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson("a number is out of range for a double (it would be stored as infinity).")
    return value


def _parse_constant(text: str) -> Any:
    raise InvalidJson(f"{text} is not a JSON value (JSON has no NaN or Infinity).")


def _check_string(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJson("a string holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text.") from None


def check(value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH and strings that are not Unicode text (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_string(item)
        elif isinstance(item, dict):
            if depth >= MAX_DEPTH:
                raise InvalidJson(f"objects and arrays nest deeper than {MAX_DEPTH} levels.")
            for key, sub in item.items():
                _check_string(key)
                stack.append((sub, depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_DEPTH:
                raise InvalidJson(f"objects and arrays nest deeper than {MAX_DEPTH} levels.")
            stack.extend((sub, depth + 1) for sub in item)


def loads(data: str | bytes | bytearray) -> Any:
    """Parse a request body; raises InvalidJson (a ValueError) for anything the API does not accept."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJson("the body is not UTF-8 text.") from None
    else:
        text = data
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except InvalidJson:
        raise
    except RecursionError:
        raise InvalidJson(f"objects and arrays nest deeper than {MAX_DEPTH} levels.") from None
    except ValueError as exc:
        raise InvalidJson(f"the body is not valid JSON ({exc}).") from None
    check(value)
    return value


#: a trailing newline as Flask writes; non-string keys as text, and dates and dataclasses to ``default``, as json does
_ORJSON_OPTIONS = (
    orjson.OPT_APPEND_NEWLINE
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


class ArmJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with strict parsing (``request.get_json``).

    Responses (``jsonify``, flask-smorest's dumps) are encoded by orjson, several times faster than the json module
    on an ARM resource (about a tenth of an API GET's CPU). Its bytes are Flask's except for how a float with an
    exponent is written (``1e16`` for ``1e+16``, the same number). What orjson leaves to ``default`` (dates,
    dataclasses, Decimal) is converted as Flask does. A body with non-ASCII text goes through Flask's path, which
    escapes it (``\\u00e9``): Windows PowerShell's Invoke-RestMethod reads a body without a charset as Latin-1.
    So does a value orjson cannot encode (an integer beyond 64 bits), and the indented debug output. Other
    ``dumps`` callers get one json encoder made once (``json.dumps`` with Flask's ``default`` builds a new
    JSONEncoder each call)."""

    _COMPACT: dict[str, Any] = {"separators": (",", ":")}  # what response() passes outside debug mode

    _encoder: tuple[tuple[Any, ...], json.JSONEncoder] | None = None

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)  # indented for people reading it
        obj = self._prepare_response_obj(args, kwargs)
        options = _ORJSON_OPTIONS | (orjson.OPT_SORT_KEYS if self.sort_keys else 0)
        try:
            body = orjson.dumps(obj, default=self.default, option=options)
        except orjson.JSONEncodeError:
            return super().response(*args, **kwargs)
        if not body.isascii():
            return super().response(*args, **kwargs)
        response_class: Any = self._app.response_class  # Flask's Response (typed as werkzeug's sansio one)
        return response_class(body, mimetype=self.mimetype)  # type: ignore[no-any-return]

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs != self._COMPACT:
            return super().dumps(obj, **kwargs)
        settings = (self.default, self.ensure_ascii, self.sort_keys)
        cached = self._encoder
        if cached is None or cached[0] != settings:
            # json.dumps(obj, **what DefaultJSONProvider.dumps passes): the same encoder, kept
            encoder = json.JSONEncoder(
                default=self.default, ensure_ascii=self.ensure_ascii, sort_keys=self.sort_keys, separators=(",", ":")
            )
            cached = self._encoder = (settings, encoder)
        return cached[1].encode(obj)


def request_object() -> dict[str, Any]:
    """The current request's body as a JSON object, or 400 InvalidRequestContent saying what is wrong."""
    from flask import request

    from .. import errors

    try:
        body = loads(request.get_data(cache=True))
    except InvalidJson as exc:
        raise errors.invalid_request_content(str(exc)) from None
    if not isinstance(body, dict):
        raise errors.invalid_request_content("The body must be a JSON object.")
    return body
