"""The project's own PowerShell scripts as the fake host knows them: by content hash, with the
parameters their real ``param()`` blocks declare (parsed with tree-sitter-powershell), and
PowerShell-like parameter binding (unknown or missing mandatory parameters fail as binding would)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from arcext.hosts.agent_scripts import script_names, script_text

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "hosts" / "scripts"


@dataclass(frozen=True)
class ScriptParameter:
    name: str
    type: str  # the type literal without brackets, lower case ("string", "int", "switch", ""...)
    mandatory: bool = False
    from_pipeline: bool = False
    validate_set: tuple[str, ...] = ()
    has_default: bool = False
    validate_pattern: str | None = None  # [ValidatePattern('...')] (matched case-insensitively)
    validate_range: tuple[int, int] | None = None  # [ValidateRange(a, b)]


@dataclass(frozen=True)
class ScriptInfo:
    name: str  # file name without .ps1
    sha256: str
    parameters: tuple[ScriptParameter, ...]
    text: str = field(repr=False)

    def parameter(self, name: str) -> ScriptParameter | None:
        for p in self.parameters:
            if p.name.lower() == name.lower():
                return p
        return None


class BindingError(Exception):
    """A ParameterBindingException, as PowerShell would raise it."""


def _parser() -> Any:
    import tree_sitter_powershell
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_powershell.language()))


def parse_errors(text: str) -> list[str]:
    """Syntax errors tree-sitter finds (ERROR or MISSING nodes), as 'line:col type' strings."""
    tree = _parser().parse(text.encode("utf-8"))
    out: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            out.append(f"{node.start_point[0] + 1}:{node.start_point[1] + 1} {node.type}")
        stack.extend(node.children)
    return out


def _walk(node: Any, kind: str) -> list[Any]:
    found = []
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == kind:
            found.append(n)
        stack.extend(reversed(n.children))
    return found


def extract_parameters(text: str) -> tuple[ScriptParameter, ...]:
    """The script-level ``param()`` block's parameters (not those of functions inside it)."""
    tree = _parser().parse(text.encode("utf-8"))
    blocks = [c for c in tree.root_node.children if c.type == "param_block"]
    if not blocks:
        return ()
    params: list[ScriptParameter] = []
    for node in _walk(blocks[0], "script_parameter"):
        name = ""
        type_ = ""
        mandatory = from_pipeline = has_default = False
        validate: tuple[str, ...] = ()
        pattern: str | None = None
        bounds: tuple[int, int] | None = None
        for child in node.children:
            if child.type == "variable":
                name = child.text.decode()[1:]
            elif child.type == "script_parameter_default":
                has_default = True
            elif child.type == "attribute_list":
                for attr in child.children:
                    raw = attr.text.decode()
                    literal = [c for c in attr.children if c.type == "type_literal"]
                    if literal:
                        type_ = literal[0].text.decode().strip("[]").lower()
                        continue
                    head = raw.strip("[]").split("(", 1)[0].strip().lower()
                    if head == "parameter":
                        mandatory = bool(re.search(r"\bMandatory\b(\s*=\s*\$true)?(?!\s*=\s*\$false)", raw, re.I))
                        from_pipeline = bool(
                            re.search(r"\bValueFromPipeline\b(\s*=\s*\$true)?(?!\s*=\s*\$false)", raw, re.I)
                        )
                    elif head == "validateset":
                        validate = tuple(a or b for a, b in re.findall(r"'([^']*)'|\"([^\"]*)\"", raw))
                    elif head == "validatepattern":
                        found = re.search(r"\(\s*'((?:[^']|'')*)'\s*\)", raw)
                        pattern = found.group(1).replace("''", "'") if found else None
                    elif head == "validaterange":
                        numbers = re.findall(r"-?\d+", raw)
                        bounds = (int(numbers[0]), int(numbers[1])) if len(numbers) >= 2 else None
        params.append(ScriptParameter(name, type_, mandatory, from_pipeline, validate, has_default, pattern, bounds))
    return tuple(params)


def script_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def known_scripts() -> dict[str, ScriptInfo]:
    """sha256(script text) -> ScriptInfo, built from the very texts the driver sends: each script composed
    with the common block (``arcext.hosts.agent_scripts``). Neither a script's file alone (with its
    include line) nor the common block alone is a script the fake host runs."""
    table: dict[str, ScriptInfo] = {}
    for name in script_names():
        text = script_text(name)
        info = ScriptInfo(name, script_hash(text), extract_parameters(text), text)
        table[info.sha256] = info
    return table


def _coerce(param: ScriptParameter, value: Any) -> Any:
    if param.type == "int":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise BindingError(f"Cannot convert value '{value}' to type 'System.Int32' for -{param.name}.")
        try:
            return int(value)
        except ValueError:
            raise BindingError(f"Cannot convert value '{value}' to type 'System.Int32' for -{param.name}.") from None
    if param.type == "switch":
        return bool(value) if value is not None else True
    if param.type == "string":
        return "" if value is None else str(value)
    if param.type == "hashtable":
        if not isinstance(value, dict):
            raise BindingError(f"Cannot convert the value of -{param.name} to type 'System.Collections.Hashtable'.")
        return {str(k): v for k, v in value.items()}
    return value


def bind(info: ScriptInfo, supplied: list[tuple[str | None, Any]]) -> dict[str, Any]:
    """Bind named parameters against the script's param() block, like PowerShell's binder."""
    bound: dict[str, Any] = {}
    for name, value in supplied:
        if name is None:
            raise BindingError(f"A positional parameter cannot be found that accepts argument '{value}'.")
        param = info.parameter(name)
        if param is None:
            raise BindingError(f"A parameter cannot be found that matches parameter name '{name}'.")
        if param.name in bound:
            raise BindingError(f"Cannot bind parameter because parameter '{param.name}' is specified more than once.")
        value = _coerce(param, value)
        if (
            param.validate_set
            and value not in param.validate_set
            and str(value).lower() not in [v.lower() for v in param.validate_set]
        ):
            raise BindingError(
                f"Cannot validate argument on parameter '{param.name}'. The argument \"{value}\" does not belong "
                f'to the set "{",".join(param.validate_set)}".'
            )
        if param.validate_pattern is not None and not re.search(param.validate_pattern, str(value), re.I):
            raise BindingError(
                f"Cannot validate argument on parameter '{param.name}'. The argument \"{value}\" does not match "
                f'the "{param.validate_pattern}" pattern. Supply an argument that matches "{param.validate_pattern}" '
                "and try the command again."
            )
        if param.validate_range is not None and not param.validate_range[0] <= int(value) <= param.validate_range[1]:
            raise BindingError(
                f"Cannot validate argument on parameter '{param.name}'. The {value} argument is outside the "
                f"range {param.validate_range[0]}..{param.validate_range[1]}."
            )
        bound[param.name] = value
    for param in info.parameters:
        if param.mandatory and not param.from_pipeline and param.name not in bound:
            raise BindingError(
                f"Cannot process command because of one or more missing mandatory parameters: {param.name}."
            )
        if param.mandatory and param.name in bound and param.type == "string" and bound[param.name] == "":
            raise BindingError(f"Cannot bind argument to parameter '{param.name}' because it is an empty string.")
    return bound
