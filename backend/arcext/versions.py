"""Extension versions: one ordering for the whole code base, on ``packaging.version``.

Versions are one to four dotted numbers (``arcext.names`` checks what clients send), ordered
numerically component by component with missing components as 0: ``1.10 > 1.9`` and
``1.10 == 1.10.0``. A stored version that does not parse (a catalog entry written by an older
release, say) sorts before every valid one, ordered by its text, so sorting never fails."""

from __future__ import annotations

from functools import lru_cache

from packaging.version import InvalidVersion, Version

_UNPARSEABLE = Version("0")


@lru_cache(maxsize=4096)
def version_key(version: str) -> tuple[int, Version, str]:
    """A sort key: equal keys' first two parts mean equal versions (the text only breaks ties)."""
    try:
        return (1, Version(version), version)
    except InvalidVersion:
        return (0, _UNPARSEABLE, version)


def major(version: str) -> str:
    return version.split(".", 1)[0]


def newer(candidate: str, current: str) -> bool:
    """Whether ``candidate`` is a later version than ``current`` (``1.10.0`` is not newer than ``1.10``)."""
    return version_key(candidate)[:2] > version_key(current)[:2]


def same_version(a: str, b: str) -> bool:
    return version_key(a)[:2] == version_key(b)[:2]


def newest(versions: list[str]) -> str | None:
    """The latest of ``versions`` (None for none)."""
    return max(versions, key=version_key, default=None)
