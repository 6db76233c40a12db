"""What publisher, type and version names may look like (issue #10: they become folder and file names on hosts).

Azure's extension publishers and types use letters, digits, '.', '-' and '_' (``Microsoft.Azure.Monitor``,
``AzureMonitorWindowsAgent``); versions are one to four dot-separated numbers. Anything else, path separators,
``..``, drive letters, NUL or non-ASCII digits included, is refused before it is stored, so no such name can
reach a host's ``C:\\Packages\\Plugins\\<publisher>.<type>\\<version>`` or the agent's journal file.
"""

from __future__ import annotations

import re

from . import errors

NAME_MAX = 128
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION_RE = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9}){0,3}")

#: For OpenAPI documents (path parameters and body fields); '..' is refused in code (no lookahead here, so
#: every JSON-schema tool can use the pattern).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
VERSION_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,9}){0,3}$"

NAME_RULE = (
    f"use 1-{NAME_MAX} letters, digits, '.', '-' or '_', starting with a letter or digit, without '..' "
    "(no path separators)."
)
VERSION_RULE = "use one to four dot-separated numbers, e.g. 1.10.3."


def name_problem(value: str) -> str | None:
    """Why ``value`` is not a valid publisher or type name, or None."""
    if len(value) > NAME_MAX or not _NAME_RE.fullmatch(value) or ".." in value:
        return NAME_RULE
    return None


def version_problem(value: str) -> str | None:
    """Why ``value`` is not a valid extension version, or None."""
    return None if _VERSION_RE.fullmatch(value) else VERSION_RULE


def check_name(kind: str, value: str, target: str) -> None:
    """Raise 400 InvalidResourceName when a publisher or type name in a path is not valid."""
    problem = name_problem(value)
    if problem:
        raise errors.invalid_resource_name(kind, value, problem, target)
