"""WSGI middleware: ARM paths match case-insensitively.

Werkzeug routes are case-sensitive, so the collection segments of an ARM path (``resourcegroups``,
``Machines``, ``Extensions`` …) are rewritten to the canonical case before routing. Only keyword
positions change: resource names keep the caller's case, as ARM preserves it."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

_KEYWORDS = [
    "subscriptions",
    "resourceGroups",
    "providers",
    "machines",
    "extensions",
    "locations",
    "operationstatus",
    "operationresults",
    "publishers",
    "extensionTypes",
    "versions",
    "upgradeExtensions",
    "operations",
    "eventtypes",
    "values",
    "maintenanceConfigurations",
    "configurationAssignments",
]
_NAMESPACES = ["Microsoft.HybridCompute", "Microsoft.Insights", "Microsoft.Maintenance"]
_CANON = {k.lower(): k for k in _KEYWORDS}
_CANON_NS = {k.lower(): k for k in _NAMESPACES}


def canonical_path(path: str) -> str:
    """The path with ARM's keyword segments in their canonical case (cached: clients repeat their paths; only
    paths of ARM-resource length, so the cache holds a few megabytes at most whatever unauthenticated callers
    send, the rewriting running before authentication)."""
    return _canonical_cached(path) if len(path) <= _CACHED_PATH_MAX else _canonical(path)


_CACHED_PATH_MAX = 512


@functools.lru_cache(maxsize=4096)
def _canonical_cached(path: str) -> str:
    return _canonical(path)


def _canonical(path: str) -> str:
    if not path.lower().startswith(("/subscriptions/", "/providers/")):
        return path
    segments = path.split("/")
    # segments[0] is "" (leading slash): keyword positions are the odd indexes here.
    for i in range(1, len(segments)):
        lower = segments[i].lower()
        if segments[i - 1].lower() == "providers" and lower in _CANON_NS:
            segments[i] = _CANON_NS[lower]
        elif i % 2 == 1 and lower in _CANON:
            segments[i] = _CANON[lower]
        elif lower == "management" and segments[i - 1].lower() == "eventtypes":
            segments[i] = "management"
    return "/".join(segments)


class CaseInsensitiveArmPaths:
    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        environ["PATH_INFO"] = canonical_path(path)
        result: Iterable[bytes] = self.app(environ, start_response)
        return result
