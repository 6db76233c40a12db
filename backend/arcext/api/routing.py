"""The URL map, with the rule matching of recent paths remembered.

Werkzeug's state machine walks one state per path segment (a regular expression for each variable one): an ARM
extension path has eleven segments, and the walk was about a tenth of an API GET's CPU (issue #12). Its answer
depends only on the rules and on what it is asked (domain, path, method, websocket), so the answers for recent
questions are kept (a bounded LRU cache, cleared when a rule is added). Only matches are kept: a path that does not
match, a redirect and a 405 go through Werkzeug's walk every time, and so does everything around the walk
(MapAdapter.match's redirects, Flask's routing exceptions). Each caller gets its own copy of the values.
"""

from __future__ import annotations

import functools
from collections.abc import MutableMapping
from typing import Any

from werkzeug.routing import Map, Rule
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
