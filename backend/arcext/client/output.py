"""``--output json|jsonc|table|tsv|yaml|none`` and ``--query`` (JMESPath), as the az CLI renders them.

- The query runs with ordered dicts, so a multiselect hash keeps the order the query wrote
  (az/knack does the same); without a query, table and tsv sort a dict's keys.
- table: knack's rules: every item becomes a row of its scalar, non-null fields, skipping
  ``id``, ``type`` and ``etag``; headers capitalised; tabulate's "simple" layout (columns at
  least two wider than their header, two spaces apart, a line of dashes under the headers).
  A list of scalars is a ``Result`` column, a list of lists ``Column1..n``.
- tsv: one line per item, values tab-separated; a nested list prints its length, a dict nothing.
- jsonc (yamlc) is coloured only when stdout is a terminal; otherwise it is json (yaml).
- A query result of null prints nothing (az prints nothing for None).

``query_warnings`` is arcext's addition: a field path the query names that no object in the data
has (the Arc documentation's ``properties.enableAutoUpgrade``) gets a warning on stderr naming the
nearest real path, while the result stays what az prints (null).
"""

from __future__ import annotations

import difflib
import io
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import jmespath
import yaml
from jmespath.exceptions import JMESPathError

FORMATS = ("json", "jsonc", "table", "tsv", "yaml", "yamlc", "none")
TABLE_SKIP_KEYS = ("id", "type", "etag")
Transformer = Callable[[Any], Any]


class QueryError(ValueError):
    pass


# --- query -----------------------------------------------------------------------------------
def compile_query(text: str) -> Any:
    try:
        return jmespath.compile(text)
    except JMESPathError as exc:
        raise QueryError(f"invalid JMESPath query '{text}': {exc}") from None


def apply_query(data: Any, compiled: Any) -> Any:
    return compiled.search(data, jmespath.Options(dict_cls=OrderedDict))


def _field_chains(node: Any) -> Iterator[list[str]]:
    """Chains of field names (``properties.enableAutomaticUpgrade`` → [properties, enableAutomaticUpgrade])."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "field":
        yield [str(node["value"])]
        return
    if kind == "subexpression":
        parts = _flatten_subexpression(node)
        if parts is not None:
            yield parts
            return
    for child in node.get("children") or []:
        yield from _field_chains(child)


def _flatten_subexpression(node: Any) -> list[str] | None:
    if not isinstance(node, dict):
        return None
    if node.get("type") == "field":
        return [str(node["value"])]
    if node.get("type") == "subexpression":
        out: list[str] = []
        for child in node.get("children") or []:
            part = _flatten_subexpression(child)
            if part is None:
                return None
            out.extend(part)
        return out
    return None


def _key_paths(obj: dict[str, Any], paths: set[str], max_depth: int, prefix: str = "", depth: int = 1) -> None:
    """Add the dotted key paths of ``obj`` (to ``max_depth`` levels) to ``paths``."""
    for key, value in obj.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        paths.add(path)
        if isinstance(value, dict) and depth < max_depth:
            _key_paths(value, paths, max_depth, path, depth + 1)


def _paths_in(data: Any, max_depth: int = 6) -> set[str]:
    """Every dotted key path that starts at some object in the data (``properties``, ``properties.type``...)."""
    paths: set[str] = set()

    def walk(value: Any, depth: int) -> None:
        if depth > 12:
            return
        if isinstance(value, dict):
            _key_paths(value, paths, max_depth)
            for child in value.values():
                walk(child, depth + 1)
        elif isinstance(value, list):
            for child in value:
                walk(child, depth + 1)

    walk(data, 0)
    return paths


def _item_paths(data: Any, max_depth: int = 6) -> set[str]:
    """Paths from the top-level items only (the elements of a list result, or the object itself)."""
    paths: set[str] = set()
    for item in data if isinstance(data, list) else [data]:
        if isinstance(item, dict):
            _key_paths(item, paths, max_depth)
    return paths


def query_warnings(compiled: Any, data: Any) -> list[str]:
    """A warning for each field path in the query that no object in the data has, with a suggestion.

    A chain is known when it starts at some object of the data (queries project into nested
    objects); a suggestion is written from the items' root when the name only exists deeper
    (``[].enableAutoUpgrade`` → ``properties.enableAutomaticUpgrade``)."""
    paths = _paths_in(data)
    if not paths:
        return []
    roots = _item_paths(data)
    warnings: list[str] = []
    reported: set[str] = set()
    for chain in _field_chains(compiled.parsed):
        # the first element that makes the path unknown: "properties.enableAutoUpgrade"
        for i in range(1, len(chain) + 1):
            path = ".".join(chain[:i])
            if path in paths:
                continue
            if path in reported:
                break
            reported.add(path)
            suggestion = _nearest(chain[: i - 1], chain[i - 1], paths, roots)
            hint = f"; did you mean '{suggestion}'?" if suggestion else "."
            warnings.append(f"--query names '{path}', which no item in the result has, so it is null{hint}")
            break
    return warnings


def _nearest(prefix: list[str], name: str, paths: set[str], roots: set[str]) -> str | None:
    """The real path nearest to prefix.name: a close sibling name first, then the same name elsewhere.

    Names are compared without their shared prefix, so ``properties.settings`` is not "near"
    ``properties.type`` just because both start with ``properties.``."""
    base = ".".join(prefix)
    siblings: dict[str, str] = {}
    for path in paths:
        head, _dot, last = path.rpartition(".")
        if head == base:
            siblings[last] = path
    close = difflib.get_close_matches(name, sorted(siblings), n=1, cutoff=0.6)
    if close:
        found = siblings[close[0]]
        if not base and found not in roots:  # only nested: say where it is from the item
            deeper = sorted((r for r in roots if r.endswith("." + found)), key=lambda r: (r.count("."), r))
            return deeper[0] if deeper else found
        return found
    anywhere: dict[str, str] = {}
    for path in sorted(roots or paths, key=lambda p: (p.count("."), p)):
        anywhere.setdefault(path.rpartition(".")[2], path)
    if name in anywhere:
        return anywhere[name]
    close = difflib.get_close_matches(name, sorted(anywhere), n=1, cutoff=0.75)
    return anywhere[close[0]] if close else None


# --- formats -----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def format_json(result: Any) -> str:
    return json.dumps(result, indent=2, ensure_ascii=False) + "\n"


def format_jsonc(result: Any) -> str:
    from rich.console import Console
    from rich.json import JSON

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="standard", width=10_000, highlight=True)
    console.print(JSON(json.dumps(result, ensure_ascii=False), indent=2), soft_wrap=True)
    return buffer.getvalue()


def format_yaml(result: Any) -> str:
    text: str = yaml.safe_dump(_plain(result), default_flow_style=False, allow_unicode=True, sort_keys=False)
    return text


def format_yamlc(result: Any) -> str:
    """yaml coloured (pygments' YAML lexer through rich), as az's yamlc."""
    from rich.console import Console
    from rich.syntax import Syntax

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="standard", width=10_000)
    console.print(Syntax(format_yaml(result), "yaml", background_color="default"), soft_wrap=True, end="")
    return buffer.getvalue()


def _tsv_cell(value: Any) -> str:
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, dict):
        return ""
    return value if isinstance(value, str) else str(value)


def format_tsv(result: Any) -> str:
    rows = result if isinstance(result, list) else [result]
    out = io.StringIO()
    for row in rows:
        if isinstance(row, OrderedDict):
            values: list[Any] = list(row.values())
        elif isinstance(row, dict):
            values = [v for _k, v in sorted(row.items())]
        elif isinstance(row, list):
            values = row
        else:
            values = [row]
        out.write("\t".join(_tsv_cell(v) for v in values))
        out.write("\n")
    return out.getvalue()


def _table_row(item: Any, sort_keys: bool) -> OrderedDict[str, Any]:
    row: OrderedDict[str, Any] = OrderedDict()
    if isinstance(item, dict):
        keys = sorted(item) if sort_keys else list(item)
        for key in keys:
            value = item[key]
            if key in TABLE_SKIP_KEYS or value is None or isinstance(value, (list, dict, set)):
                continue
            name = str(key)
            row[name[:1].upper() + name[1:]] = value
    elif isinstance(item, list):
        for i, value in enumerate(item):
            row[f"Column{i + 1}"] = value
    else:
        row["Result"] = item
    return row


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(result: Any, sort_keys: bool = True) -> str:
    items = result if isinstance(result, list) else [result]
    rows = [_table_row(item, sort_keys) for item in items]
    headers: list[str] = []
    for row in rows:
        for key in row:
            if key not in headers:
                headers.append(key)
    if not headers:
        return "\n"
    columns = []
    for header in headers:
        values = [row.get(header) for row in rows]
        present = [v for v in values if v is not None]
        right = bool(present) and all(_numeric(v) for v in present)
        cells = [_cell(v) for v in values]
        width = max([len(header) + 2, *(len(c) for c in cells)])
        columns.append((header, cells, width, right))

    def line(parts: list[str]) -> str:
        return "  ".join(parts)

    out = [
        line([h.rjust(w) if r else h.ljust(w) for h, _c, w, r in columns]),
        line(["-" * w for _h, _c, w, _r in columns]),
    ]
    for i in range(len(rows)):
        out.append(line([c[i].rjust(w) if r else c[i].ljust(w) for _h, c, w, r in columns]))
    return "\n".join(out) + "\n"


def render(
    result: Any,
    output: str,
    *,
    query_active: bool = False,
    color: bool = False,
    transformer: Transformer | None = None,
) -> str:
    """The text az prints for ``result`` (already queried) in the given format; "" for nothing."""
    if result is None or output == "none":
        return ""
    if output == "json" or (output == "jsonc" and not color):
        return format_json(result)
    if output == "jsonc":
        return format_jsonc(result)
    if output == "yaml" or (output == "yamlc" and not color):
        return format_yaml(result)
    if output == "yamlc":
        return format_yamlc(result)
    if output == "tsv":
        return format_tsv(result)
    if output == "table":
        if transformer is not None and not query_active:
            return format_table(transformer(result), sort_keys=False)
        return format_table(result, sort_keys=not query_active)
    raise ValueError(f"unknown output format {output!r}")
