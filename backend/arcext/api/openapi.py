"""Path-parameter patterns in the OpenAPI document (from the HybridCompute spec and arcext.names), so clients
and fuzzers see what the server accepts and reach the handlers rather than a routing 404."""

from __future__ import annotations

from typing import Any

from .. import names

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

PATH_PATTERNS: dict[str, dict[str, Any]] = {
    "subscription_id": {"pattern": UUID_PATTERN},
    "resource_group": {"pattern": r"^[-\w\._\(\)]+$", "maxLength": 90},
    "machine_name": {"pattern": r"^[a-zA-Z0-9-_\.]{1,54}$", "maxLength": 54},
    "extension_name": {"pattern": r"^[a-zA-Z0-9-_\.]+$", "maxLength": 260},
    "location": {"pattern": r"^[a-zA-Z0-9]+$", "maxLength": 64},
    "publisher": {"pattern": names.NAME_PATTERN, "maxLength": names.NAME_MAX},
    "extension_type": {"pattern": names.NAME_PATTERN, "maxLength": names.NAME_MAX},
    "version": {"pattern": names.VERSION_PATTERN},
    "operation_id": {"pattern": r"^[0-9a-fA-F-]+$", "maxLength": 64},
    "rollout_id": {"pattern": r"^[A-Za-z0-9-]+$", "maxLength": 64},
}


def _patch(parameters: Any) -> None:
    if not isinstance(parameters, list):
        return
    for param in parameters:
        if isinstance(param, dict) and param.get("in") == "path" and param.get("name") in PATH_PATTERNS:
            param.setdefault("schema", {"type": "string"}).update(PATH_PATTERNS[param["name"]])


def add_path_patterns(spec: Any) -> None:
    """Give every path parameter arcext knows its pattern (``spec`` is the apispec APISpec of the ArmApi)."""
    paths: dict[str, dict[str, Any]] = spec._paths
    for item in paths.values():
        _patch(item.get("parameters"))
        for operation in item.values():
            if isinstance(operation, dict):
                _patch(operation.get("parameters"))
