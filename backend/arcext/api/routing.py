"""The URL map, with the rule matching of recent paths remembered, and its binding to a request made in one step.

Werkzeug's state machine walks one state per path segment (a regular expression for each variable one): an ARM
extension path has eleven segments, and the walk was about a tenth of an API GET's CPU (issue #12). Its answer
depends only on the rules and on what it is asked (domain, path, method, websocket), so the answers for recent
questions are kept (a bounded LRU cache, cleared when a rule is added). Only matches are kept: a path that does not
match, a redirect and a 405 go through Werkzeug's walk every time, and so does everything around the walk
(MapAdapter.match's redirects, Flask's routing exceptions). Each caller gets its own copy of the values.

:func:`bind_request` is what Flask's ``create_url_adapter`` gets from werkzeug's ``Map.bind_to_environ`` under
Flask's default settings (no SERVER_NAME, no trusted hosts, no host or subdomain matching): the same MapAdapter,
with the host read from the environ once instead of twice and its IDNA form remembered per host name.
"""

from __future__ import annotations

import functools
from collections.abc import MutableMapping
from typing import Any

from werkzeug.exceptions import BadHost
from werkzeug.routing import Map, MapAdapter, Rule
from werkzeug.routing.matcher import StateMachineMatcher

#: Matches kept; the paths of a few thousand resources (a rule and a dict of a few strings each).
CACHED_MATCHES = 4096
#: Longer paths are matched without the cache (an ARM resource path is far shorter), so what unauthenticated
#: callers send cannot make the cache hold more than CACHED_MATCHES short entries.
CACHED_PATH_MAX = 512


class CachedMatcher(StateMachineMatcher):
    """StateMachineMatcher whose successful matches are remembered per (domain, path, method, websocket)."""

    def __init__(self, merge_slashes: bool) -> None:
        super().__init__(merge_slashes)
        self._remembered = functools.lru_cache(maxsize=CACHED_MATCHES)(self._walk)

    def _walk(self, domain: str, path: str, method: str, websocket: bool) -> tuple[Rule, dict[str, Any]]:
        rule, values = super().match(domain, path, method, websocket)
        return rule, dict(values)

    def match(self, domain: str, path: str, method: str, websocket: bool) -> tuple[Rule, MutableMapping[str, Any]]:
        if len(path) > CACHED_PATH_MAX or len(domain) > CACHED_PATH_MAX:
            found: tuple[Rule, MutableMapping[str, Any]] = super().match(domain, path, method, websocket)
            return found
        rule, values = self._remembered(domain, path, method, websocket)  # raises as the walk does (not kept)
        return rule, dict(values)  # the caller's own: Flask's url_value_preprocessors may change view_args

    def add(self, rule: Rule) -> None:
        super().add(rule)
        self._remembered.cache_clear()

    def update(self) -> None:
        super().update()
        self._remembered.cache_clear()


class CachedMatchMap(Map):
    """werkzeug's Map with a :class:`CachedMatcher` (Flask's ``url_map_class``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # werkzeug >= 2.2's matcher, still empty (Flask makes its map without rules; rules given here stay put)
        if type(self._matcher) is StateMachineMatcher and not self._rules:
            self._matcher = CachedMatcher(self.merge_slashes)


def bind_request(url_map: Map, environ: dict[str, Any], host: str, subdomain: str) -> MapAdapter:
    """``url_map.bind_to_environ(environ, server_name=None, subdomain=subdomain)`` for a request whose host
    (``werkzeug.wsgi.get_host(environ)``) is ``host``, as werkzeug 3 computes it (tests/test_api_wrappers.py
    compares the two over hosts, schemes, upgrades and paths). Raises BadHost for a host that has no IDNA form."""
    scheme = environ["wsgi.url_scheme"]
    connection = environ.get("HTTP_CONNECTION")
    if (
        connection
        and any(v.strip(" \t") == "upgrade" for v in connection.lower().split(","))
        and environ.get("HTTP_UPGRADE", "").lower() == "websocket"
    ):
        scheme = "wss" if scheme == "https" else "ws"
    script_name = environ.get("SCRIPT_NAME")
    path_info = environ.get("PATH_INFO")
    query = environ.get("QUERY_STRING")
    return MapAdapter(
        url_map,
        _idna_host(host.lower()),
        "/" if script_name is None else _wsgi_text(script_name),
        subdomain,
        scheme,
        "/" if path_info is None else _wsgi_text(path_info),
        environ["REQUEST_METHOD"],
        None if query is None else _wsgi_text(query),
    )


def _wsgi_text(value: str) -> str:
    """A WSGI (latin-1 carried) string as text: werkzeug's ``_wsgi_decoding_dance``."""
    return value.encode("latin1").decode(errors="replace")


@functools.lru_cache(maxsize=256)
def _idna_host(server_name: str) -> str:
    """Map.bind's server name: ``host[:port]`` with the host in its IDNA (ASCII) form; BadHost (not kept) if none."""
    name, port_sep, port = server_name.lower().partition(":")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as e:
        raise BadHost() from e
    return f"{name}{port_sep}{port}"
