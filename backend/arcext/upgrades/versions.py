"""Extension versions: ordered component by component (1.10 > 1.9), grouped by major."""

from __future__ import annotations


def version_key(version: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


def major(version: str) -> str:
    return version.split(".", 1)[0]


def newer(candidate: str, current: str) -> bool:
    return _comparable(candidate) > _comparable(current)


def _comparable(version: str) -> tuple[int, ...]:
    """Numeric components with missing ones as 0 (1.10 == 1.10.0); non-numeric parts sort first."""
    parts = [int(p) if p.isdigit() else -1 for p in version.split(".")]
    while len(parts) < 4:
        parts.append(0)
    return tuple(parts)
