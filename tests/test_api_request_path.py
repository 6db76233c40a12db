"""ArmBlueprint's ``arguments`` and ``response`` (one wrapper each, arcext.api.base) answer and document exactly as
flask-smorest's own wrappers do, for every shape of view result; async views and webargs' call-changing options keep
flask-smorest's wrappers. And arcext.api.routing's remembered matches are Werkzeug's matches, and ArmResponse reaches
the server as werkzeug's Response does, and ArcextFlask binds the URL map to a request as Flask does."""

from __future__ import annotations

import json
from typing import Any

import flask_smorest
import pytest
from flask import Flask, Response
from flask.views import MethodView
from marshmallow import Schema, fields
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from arcext.api.base import ArmApi, ArmBlueprint, ArmParser, is_plain_sync
from arcext.api.routing import CachedMatcher, CachedMatchMap


class Query(Schema):
    n = fields.Int(required=True)


class Body(Schema):
    name = fields.Str(required=True)
    size = fields.Int()


class Out(Schema):
    name = fields.Str()
    size = fields.Int(dump_default=7)


class StockBlueprint(flask_smorest.Blueprint):  # type: ignore[misc]
    """flask-smorest's Blueprint with arcext's parser: its own arguments and response wrappers."""

    ARGUMENTS_PARSER = ArmParser()


RESULTS: dict[str, Any] = {
    "dict": {"name": "a", "extra": "dropped"},
    "status": ({"name": "b"}, 201),
    "headers": ({"name": "c"}, {"X-Thing": "1"}),
    "both": ({"name": "d"}, 202, {"X-Thing": "2"}),
    "response": Response("raw", status=418),
    "response-status": (Response("raw"), 203),
}


def _app(blueprint_class: type[flask_smorest.Blueprint]) -> Flask:
    app = Flask("wrappers")
    app.config.update(
        API_TITLE="t",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
    )
    api = ArmApi(app)
    blp = blueprint_class("things", __name__)

    @blp.route("/things/<kind>")
    class Things(MethodView):
        @blp.arguments(Query, location="query")
        @blp.arguments(Body)
        @blp.response(200, Out)
        def post(self, query: dict[str, Any], body: dict[str, Any], kind: str) -> Any:
            """Post a thing."""
            if kind == "echo":
                return {"name": f"{body['name']}-{query['n']}", "size": body.get("size")}
            return RESULTS[kind]

    @blp.route("/plain")
    @blp.arguments(Query, location="query", as_kwargs=True)
    @blp.response(200)
    def plain(n: int) -> Any:
        return {"n": n}

    @blp.route("/async")
    @blp.response(200, Out)
    async def asynchronous() -> Any:
        return {"name": "async"}

    api.register_blueprint(blp)
    return app


@pytest.fixture(scope="module")
def apps() -> tuple[Flask, Flask]:
    return _app(ArmBlueprint), _app(StockBlueprint)


def _answer(app: Flask, method: str, url: str, **kwargs: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    r = app.test_client().open(url, method=method, **kwargs)
    return r.status_code, sorted(r.headers.items()), r.get_data()


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/things/echo?n=3", {"name": "x", "size": 2}),
        ("/things/echo?n=3", {"name": "x", "bogus": 1}),  # unknown field: 422 from webargs (400 in arcext's parser)
        ("/things/echo?n=zz", {"name": "x"}),
        ("/things/echo", {"name": "x"}),
        ("/things/echo?n=1", None),
        *[(f"/things/{kind}?n=1", {"name": "y"}) for kind in RESULTS],
    ],
)
def test_the_same_answers_as_flask_smorest(apps: tuple[Flask, Flask], url: str, body: Any) -> None:
    arm, stock = apps
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    assert _answer(arm, "POST", url, **kwargs) == _answer(stock, "POST", url, **kwargs)


def test_call_changing_options_and_async_views_keep_flask_smorests_wrappers(apps: tuple[Flask, Flask]) -> None:
    arm, stock = apps
    assert _answer(arm, "GET", "/plain?n=4") == _answer(stock, "GET", "/plain?n=4")
    assert json.loads(_answer(arm, "GET", "/plain?n=4")[2]) == {"n": 4}
    assert not is_plain_sync(arm.view_functions["things.asynchronous"].__wrapped__)  # flask-smorest's, unwrapped


def test_the_same_documentation(apps: tuple[Flask, Flask]) -> None:
    arm, stock = apps
    answer = _answer(arm, "GET", "/openapi.json")
    assert answer == _answer(stock, "GET", "/openapi.json")
    paths = json.loads(answer[2])["paths"]
    assert set(paths) == {"/things/{kind}", "/plain", "/async"}
    assert [p["in"] for p in paths["/things/{kind}"]["post"]["parameters"]] == ["query"]  # the path: one level up
    assert "requestBody" in paths["/things/{kind}"]["post"]


def test_is_plain_sync() -> None:
    async def coroutine() -> None:
        return None

    class Holder:
        def method(self) -> None:
            return None

    assert is_plain_sync(lambda: None) and is_plain_sync(Holder().method)
    assert not is_plain_sync(coroutine) and not is_plain_sync(len)


def test_remembered_matches_are_werkzeugs() -> None:
    rules = [
        Rule("/subscriptions/<sub>/machines/<name>", endpoint="machine", methods=["GET", "PUT"]),
        Rule("/subscriptions/<sub>/machines/", endpoint="machines", methods=["GET"]),
        Rule("/n/<int:n>", endpoint="number"),
    ]
    stock, cached = Map([r.empty() for r in rules]), CachedMatchMap()
    for rule in rules:
        cached.add(rule.empty())
    assert isinstance(cached._matcher, CachedMatcher)
    stock_adapter, cached_adapter = stock.bind("example.com"), cached.bind("example.com")
    for _ in range(2):  # the second time from the cache
        for path, method in [
            ("/subscriptions/s/machines/m", "GET"),
            ("/subscriptions/S/machines/M", "PUT"),
            ("/n/12", "GET"),
            ("/subscriptions/s/machines/", "GET"),
        ]:
            expected = stock_adapter.match(path, method, return_rule=True)
            found = cached_adapter.match(path, method, return_rule=True)
            assert (found[0].endpoint, found[1]) == (expected[0].endpoint, expected[1])
        found[1]["changed"] = True  # the caller's own copy: the next match is not changed
    for path, method, error in [
        ("/subscriptions/s/machines/m", "DELETE", MethodNotAllowed),
        ("/n/x", "GET", NotFound),
        ("/nothing", "GET", NotFound),
    ]:
        for adapter in (stock_adapter, cached_adapter):
            with pytest.raises(error):
                adapter.match(path, method)
    cached.add(Rule("/n/<int:n>/more", endpoint="more"))  # a new rule: the remembered matches are dropped
    assert cached_adapter.match("/n/12/more", "GET")[0] == "more"
    assert cached_adapter.match("/n/12", "GET") == ("number", {"n": 12})


def _wsgi(response: Response, method: str) -> tuple[str, list[tuple[str, str]], bytes]:
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder("/a/b?x=1", method=method, base_url="http://example.com/root").get_environ()
    app_iter, status, headers = response.get_wsgi_response(environ)
    try:
        body = b"".join(app_iter)
    finally:
        getattr(app_iter, "close", lambda: None)()
    return status, headers, body


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("status", [100, 200, 201, 202, 204, 304, 400, 412, 500])
@pytest.mark.parametrize(
    "shape",
    ["json", "relative location", "content location", "no length", "stream", "passthrough", "str body"],
)
def test_arm_responses_reach_the_server_as_werkzeugs(method: str, status: int, shape: str) -> None:
    from arcext.api.wsgi_response import ArmResponse

    def build(cls: type[Response]) -> Response:
        if shape == "stream":
            r = cls((part for part in [b"a", b"bc"]), status=status)
        elif shape == "passthrough":
            r = cls([b"raw"], status=status, direct_passthrough=True)
        else:
            r = cls(b'{"a":1}', status=status, mimetype="application/json")
        r.headers["x-ms-request-id"] = "id-1"
        if shape == "relative location":
            r.headers["Location"] = "../other/\u00e9"
        elif shape == "content location":
            r.headers["Content-Location"] = "/caf\u00e9"
        elif shape == "no length":
            del r.headers["Content-Length"]
        elif shape == "str body":
            r.response = ["text \u00e9"]
            del r.headers["Content-Length"]
        return r

    assert _wsgi(build(ArmResponse), method) == _wsgi(build(Response), method)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"HTTP_HOST": "Example.COM:8443", "wsgi.url_scheme": "https"},
        {"HTTP_HOST": "b\u00fccher.example"},
        {"HTTP_HOST": "xn--bcher-kva.example:80"},
        {"HTTP_HOST": "[::1]:5000"},
        {"HTTP_CONNECTION": "keep-alive, Upgrade", "HTTP_UPGRADE": "websocket"},
        {"HTTP_CONNECTION": "upgrade", "HTTP_UPGRADE": "WebSocket", "wsgi.url_scheme": "https"},
        {"HTTP_CONNECTION": "close"},
        {"SCRIPT_NAME": "/root", "PATH_INFO": "/caf\u00c3\u00a9/x", "QUERY_STRING": "a=%C3%A9&b=\u00c3\u00a9"},
        {"SCRIPT_NAME": "/root/", "PATH_INFO": "/x", "REQUEST_METHOD": "PATCH"},
    ],
)
def test_arcext_binds_the_url_map_as_flask_does(environ: dict[str, str]) -> None:
    """ArcextFlask.create_url_adapter (arcext.api.routing.bind_request) gives Flask's adapter and request host."""
    from werkzeug.test import EnvironBuilder

    from arcext.app import ArcextFlask

    base = EnvironBuilder("/subscriptions/s/machines/m", query_string="api-version=1").get_environ()
    full = {**base, **environ}
    arcext_app, flask_app = ArcextFlask("a"), Flask("f")

    def bound(app: Flask) -> tuple[Any, ...]:
        request = app.request_class(dict(full))
        adapter = app.create_url_adapter(request)
        assert adapter is not None
        attributes = ("server_name", "script_name", "subdomain", "url_scheme", "path_info", "default_method")
        return (request.host, adapter.query_args, adapter.websocket, *(getattr(adapter, a) for a in attributes))

    assert bound(arcext_app) == bound(flask_app)


def test_a_host_without_an_idna_form_is_refused_as_flask_does() -> None:
    from werkzeug.exceptions import BadHost
    from werkzeug.test import EnvironBuilder

    from arcext.app import ArcextFlask

    environ = {**EnvironBuilder("/x").get_environ(), "HTTP_HOST": "x" * 64 + ".example"}  # a label too long
    for app in (ArcextFlask("a"), Flask("f")):
        with pytest.raises(BadHost):
            app.create_url_adapter(app.request_class(dict(environ)))
