"""az's generic update arguments: ``--set``, ``--add``, ``--remove``, ``--force-string``.

They edit the resource as read by the GET of a generic update, in the order given, before the PUT:

- ``--set path=value [path=value ...]``: set a property (``properties.settings.commandToExecute=hostname``,
  ``tags.env=prod``, ``properties.settings.fileUris[0]=...``); the value is parsed as JSON when it is
  JSON (unless ``--force-string``), else taken as a string. Missing objects on the way are created.
- ``--add path value|key=value ...``: append to the list at ``path`` (created when absent); each
  plain value is one element, consecutive ``key=value`` pairs form one object element.
- ``--remove path [index]``: delete the property at ``path``, or the element ``index`` of the list there.

Path names match az's: a segment is matched exactly, then case-insensitively, then as the camelCase
of a snake_case name (``type_handler_version`` → ``typeHandlerVersion``); ``[n]`` indexes a list and
``[key=value]`` picks the list element whose ``key`` equals ``value``.
"""

from __future__ import annotations

import json
import re
from typing import Any

SET, ADD, REMOVE = "set", "add", "remove"
_INDEX = re.compile(r"\[([^\]]*)\]")


class GenericUpdateError(ValueError):
    pass


def _split_assignment(expression: str) -> tuple[str, str]:
    """``path=value`` split at the first ``=`` outside brackets."""
    depth = 0
    for i, char in enumerate(expression):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "=" and depth == 0:
            return expression[:i], expression[i + 1 :]
    raise GenericUpdateError(f"usage error: --set expects 'path=value', got '{expression}'")


def _path(text: str) -> list[str | int | tuple[str, str]]:
    """``a.b[0].c[name=x]`` → ["a", "b", 0, "c", ("name", "x")]."""
    parts: list[str | int | tuple[str, str]] = []
    for piece in _split_dots(text):
        match = _INDEX.search(piece)
        name = piece[: match.start()] if match else piece
        if name:
            parts.append(name)
        for index in _INDEX.findall(piece):
            if "=" in index:
                key, _eq, value = index.partition("=")
                parts.append((key, value))
            else:
                try:
                    parts.append(int(index))
                except ValueError:
                    raise GenericUpdateError(f"invalid index '[{index}]' in '{text}'") from None
    if not parts:
        raise GenericUpdateError("empty property path")
    return parts


def _split_dots(text: str) -> list[str]:
    out, current, depth = [], "", 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "." and depth == 0:
            out.append(current)
            current = ""
        else:
            current += char
    out.append(current)
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _key(obj: dict[str, Any], name: str, create: bool = False) -> str | None:
    if name in obj:
        return name
    lowered = {k.lower(): k for k in obj}
    for candidate in (name, _camel(name)):
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return _camel(name) if create else None


def _value(text: str, force_string: bool) -> Any:
    if force_string:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _step(container: Any, part: str | int | tuple[str, str], full: str, create: bool) -> tuple[Any, Any]:
    """(key-or-index into container, child) for one path part."""
    if isinstance(part, str):
        if not isinstance(container, dict):
            raise GenericUpdateError(f"Couldn't find '{part}' in '{full}': it is not an object.")
        key = _key(container, part, create)
        if key is None:
            raise GenericUpdateError(f"Couldn't find '{part}' in '{full}'.")
        return key, container.get(key)
    if not isinstance(container, list):
        raise GenericUpdateError(f"'{full}': index into something that is not a list.")
    if isinstance(part, int):
        if not -len(container) <= part < len(container):
            raise GenericUpdateError(f"index {part} out of range in '{full}'.")
        return part, container[part]
    key, wanted = part
    for i, item in enumerate(container):
        if isinstance(item, dict) and str(item.get(key)) == wanted:
            return i, item
    raise GenericUpdateError(f"no element with {key}={wanted} in '{full}'.")


def _parent(instance: dict[str, Any], path: list[str | int | tuple[str, str]], full: str, create: bool) -> Any:
    node: Any = instance
    for part in path[:-1]:
        key, child = _step(node, part, full, create)
        if child is None and create and isinstance(part, str):
            child = {}
            node[key] = child
        node = child
    return node


def set_property(instance: dict[str, Any], expression: str, force_string: bool = False) -> None:
    path_text, raw = _split_assignment(expression)
    path = _path(path_text)
    parent = _parent(instance, path, path_text, create=True)
    last = path[-1]
    if isinstance(last, str) and isinstance(parent, dict):
        parent[_key(parent, last, create=True) or last] = _value(raw, force_string)
        return
    key, _child = _step(parent, last, path_text, create=True)
    parent[key] = _value(raw, force_string)


def add_property(instance: dict[str, Any], arguments: list[str], force_string: bool = False) -> None:
    if len(arguments) < 2:
        raise GenericUpdateError("usage error: --add expects a path and at least one value")
    path_text, values = arguments[0], arguments[1:]
    path = _path(path_text)
    parent = _parent(instance, path, path_text, create=True)
    last = path[-1]
    if isinstance(last, str) and isinstance(parent, dict):
        key: Any = _key(parent, last, create=True)
        target = parent.get(key)
    else:
        key, target = _step(parent, last, path_text, create=False)
    if target is None:
        target = []
        parent[key] = target
    if not isinstance(target, list):
        raise GenericUpdateError(f"--add: '{path_text}' is not a list.")
    entry: dict[str, Any] = {}
    for argument in values:
        if "=" in argument:
            name, _eq, raw = argument.partition("=")
            entry[name] = _value(raw, force_string)
            continue
        if entry:
            target.append(entry)
            entry = {}
        target.append(_value(argument, force_string))
    if entry:
        target.append(entry)


def remove_property(instance: dict[str, Any], arguments: list[str]) -> None:
    if not arguments or len(arguments) > 2:
        raise GenericUpdateError("usage error: --remove expects a path and, for a list, an index")
    path_text = arguments[0]
    path = _path(path_text)
    parent = _parent(instance, path, path_text, create=False)
    key, target = _step(parent, path[-1], path_text, create=False)
    if len(arguments) == 1:
        del parent[key]
        return
    if not isinstance(target, list):
        raise GenericUpdateError(f"--remove: '{path_text}' is not a list.")
    try:
        del target[int(arguments[1])]
    except (ValueError, IndexError):
        raise GenericUpdateError(f"--remove: index '{arguments[1]}' is not in '{path_text}'.") from None


def apply(instance: dict[str, Any], operations: list[tuple[str, list[str]]], force_string: bool = False) -> None:
    """Apply --set/--add/--remove operations in the order they were given."""
    for kind, arguments in operations:
        if kind == SET:
            for expression in arguments:
                set_property(instance, expression, force_string)
        elif kind == ADD:
            add_property(instance, arguments, force_string)
        elif kind == REMOVE:
            remove_property(instance, arguments)
