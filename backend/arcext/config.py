"""Settings: defaults, overridden by ARCEXT_* environment variables and by create_app(config)."""

from __future__ import annotations

DEFAULTS: dict[str, object] = {
    "ARCEXT_DATA_DIR": "./.arcext",
    "ARCEXT_MANUAL_CLOCK": False,
    "ARCEXT_RETRY_AFTER": 1,  # seconds, sent on every 202
    "ARCEXT_PAGE_SIZE": 100,  # items per list page before a nextLink
    "ARCEXT_MAX_BODY": 1024 * 1024,  # bytes; larger bodies get 413
    "ARCEXT_SEED_CATALOG": True,
    "ARCEXT_SIMULATE": False,  # machines without host-connection settings are simulated hosts
}


def coerce(name: str, value: str) -> object:
    """Environment values arrive as strings; give them the default's type."""
    default = DEFAULTS.get(name)
    if isinstance(default, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(value)
    return value
