"""What every client command shares: --output/--query/--subscription, az's global options, error handling,
JSON/shorthand arguments, --ids, and az's multi-value options (``--tags a=b c=d``)."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import config
from ..errors import EXIT_INTERRUPTED, CliError, UsageProblem
from ..http import ArmClient
from ..output import FORMATS, QueryError, Transformer, apply_query, compile_query, query_warnings, render
from ..shorthand import ShorthandError
from ..shorthand import parse as parse_shorthand

F = TypeVar("F", bound=Callable[..., Any])

OUTPUT_ENV = "ARCEXT_OUTPUT"
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
GROUP_SEPARATOR = "\x1f"  # joins the values of one --add/--remove between parse_args and the command
ORDER_KEY = "arcext.multi_value_order"
QUIET_KEY = "arcext.only_show_errors"
_NUMBER = re.compile(r"^-\d+(\.\d+)?$")


class MultiValueOption(click.Option):
    """An option that takes every following word up to the next option, as argparse's ``nargs='+'``.

    ``--tags a=b c=d`` becomes ``--tags a=b --tags c=d`` before click parses; a ``grouped`` option
    (``--add path v1 v2``, ``--remove path 0``) keeps its words together as one value."""

    def __init__(self, *args: Any, grouped: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("multiple", True)
        super().__init__(*args, **kwargs)
        self.grouped = grouped


def _looks_like_option(word: str) -> bool:
    return len(word) > 1 and word.startswith("-") and not _NUMBER.match(word)


class ClientCommand(click.Command):
    """Turns CliError into ``ERROR: (<code>) <message>`` on stderr and its exit code; ``-h`` is help;
    multi-value options take several words, as az's do."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["context_settings"] = {**HELP_OPTIONS, **(kwargs.get("context_settings") or {})}
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        multi: dict[str, MultiValueOption] = {}
        for param in self.params:
            if isinstance(param, MultiValueOption):
                for opt in param.opts:
                    multi[opt] = param
        out: list[str] = []
        order: list[tuple[str, list[str]]] = []
        i = 0
        while i < len(args):
            word = args[i]
            if word == "--":
                out.extend(args[i:])
                break
            name, eq, inline = word.partition("=") if word.startswith("--") else (word, "", "")
            option = multi.get(name)
            i += 1
            if option is None:
                out.append(word)
                continue
            values = [inline] if eq else []
            while i < len(args) and not _looks_like_option(args[i]):
                values.append(args[i])
                i += 1
            if not values:
                out.append(word)  # click reports the missing value
                continue
            if option.grouped:
                out += [name, GROUP_SEPARATOR.join(values)]
            else:
                for value in values:
                    out += [name, value]
            order.append((str(option.name), values))
        ctx.meta[ORDER_KEY] = order
        return super().parse_args(ctx, out)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            click.echo(exc.render(), err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("ERROR: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def _check_query(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        compile_query(value)
    except QueryError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def option_order(ctx: click.Context | None = None) -> list[tuple[str, list[str]]]:
    """The multi-value options in command-line order: [(param name, words), ...]."""
    ctx = ctx or click.get_current_context()
    order: list[tuple[str, list[str]]] = ctx.meta.get(ORDER_KEY, [])
    return order


def _set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[QUIET_KEY] = True


class _StderrHandler(logging.Handler):
    """Log records on the command's stderr (click's, so a test runner captures them)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _set_log_level(level: int) -> Callable[[click.Context, click.Parameter, bool], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if not value:
            return
        logger = logging.getLogger("arcext.client")
        if logger.level == logging.NOTSET or logger.level > level:
            logger.setLevel(level)
        if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
            logger.addHandler(handler)

            def reset() -> None:
                logger.removeHandler(handler)
                logger.setLevel(logging.NOTSET)

            ctx.call_on_close(reset)

    return callback


def warn(message: str) -> None:
    """``WARNING: ...`` on stderr, unless --only-show-errors."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(QUIET_KEY):
        return
    click.echo(f"WARNING: {message}", err=True)


def global_options(fn: F) -> F:
    """az's global arguments: --only-show-errors, --debug, --verbose (-h is every command's help)."""
    flags = (
        ("--only-show-errors", _set_quiet, "Only show errors, suppressing warnings."),
        (
            "--debug",
            _set_log_level(logging.DEBUG),
            "Show every request and response status on stderr (never the token).",
        ),
        ("--verbose", _set_log_level(logging.INFO), "Increase logging verbosity."),
    )
    for flag, callback, help_ in flags:
        fn = click.option(flag, is_flag=True, expose_value=False, callback=callback, help=help_)(fn)
    return fn


def output_options(fn: F) -> F:
    fn = global_options(fn)
    fn = click.option(
        "--query",
        callback=_check_query,
        metavar="JMESPATH",
        help="JMESPath query string (http://jmespath.org), as in az.",
    )(fn)
    fn = click.option(
        "--output",
        "-o",
        type=click.Choice(FORMATS),
        default=lambda: os.environ.get(OUTPUT_ENV, "json"),
        show_default="json, or $ARCEXT_OUTPUT",
        help="Output format.",
    )(fn)
    return fn


def subscription_option(fn: F) -> F:
    return click.option(
        "--subscription",
        metavar="NAME_OR_ID",
        help="Subscription name or id (default: ARCEXT_SUBSCRIPTION_ID, then 'arcext login --subscription').",
    )(fn)


def no_wait_option(fn: F) -> F:
    return click.option("--no-wait", is_flag=True, help="Do not wait for the long-running operation to finish.")(fn)


def client(subscription: str | None = None, *, need_subscription: bool = True) -> ArmClient:
    return ArmClient(config.resolve(subscription, need_subscription=need_subscription))


def emit(result: Any, output: str, query: str | None, transformer: Transformer | None = None) -> None:
    """Apply --query (warning about names no item has), then print in the --output format."""
    if query is not None:
        compiled = compile_query(query)
        for warning in query_warnings(compiled, result):
            warn(warning)
        result = apply_query(result, compiled)
    text = render(
        result,
        output,
        query_active=query is not None,
        color=sys.stdout.isatty(),
        transformer=transformer,
    )
    if text:
        click.echo(text, nl=False)


def json_argument(value: str | None, option: str) -> Any:
    """A JSON or az-shorthand option value, or ``@file`` to read it from a file (as az accepts)."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageProblem(f"{option}: cannot read {value[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        json_error = exc
    try:
        return parse_shorthand(text.strip())
    except ShorthandError as exc:
        raise UsageProblem(f"{option}: neither JSON ({json_error}) nor shorthand syntax ({exc}).") from None


def json_object_argument(value: str | None, option: str) -> dict[str, Any] | None:
    parsed = json_argument(value, option)
    if parsed is not None and not isinstance(parsed, dict):
        raise UsageProblem(f"{option}: expected a JSON object.")
    return parsed


def tags_argument(values: tuple[str, ...]) -> dict[str, str] | None:
    """az's ``--tags key=value key2=value2`` (repeat --tags or space-separate); ``--tags ""`` clears."""
    if not values:
        return None
    tags: dict[str, str] = {}
    for value in values:
        for item in value.split():
            key, _sep, val = item.partition("=")
            if not key:
                raise UsageProblem(f"--tags: '{item}' is not key=value.")
            tags[key] = val
    return tags


# --- --ids ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResourceRef:
    """A machine (name None) or machine extension, from --ids or from -g/--machine-name/-n."""

    subscription: str | None
    resource_group: str
    machine: str
    name: str | None = None


_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.HybridCompute"
    r"/machines/(?P<machine>[^/]+)(?:/extensions/(?P<ext>[^/]+))?/?$",
    re.IGNORECASE,
)


def ids_option(fn: F) -> F:
    return click.option(
        "--ids",
        cls=MultiValueOption,
        help="One or more resource ids (space-separated). If given, no other 'Resource Id' argument is needed.",
    )(fn)


def parse_ids(ids: tuple[str, ...], extension: bool) -> list[ResourceRef]:
    """--ids values (several per word too, as az splits them) → refs; an extension id when ``extension``."""
    refs: list[ResourceRef] = []
    what = "a machine extension" if extension else "a machine"
    for word in ids:
        for text in word.split():
            match = _ID.match(text)
            if match is None or bool(match.group("ext")) != extension:
                raise UsageProblem(f"--ids: '{text}' is not the id of {what}.")
            refs.append(ResourceRef(match.group("sub"), match.group("rg"), match.group("machine"), match.group("ext")))
    return refs


def resolve_refs(
    ids: tuple[str, ...],
    extension: bool,
    resource_group: str | None,
    machine_name: str | None,
    name: str | None = None,
) -> list[ResourceRef]:
    """The targets of a command: its --ids, or the one resource its names designate."""
    if ids:
        return parse_ids(ids, extension)
    named = (("--resource-group", resource_group), ("--machine-name", machine_name))
    missing = [opt for opt, value in named if not value]
    if extension and not name:
        missing.append("--name")
    if missing:
        raise UsageProblem(f"the following arguments are required: {', '.join(missing)} (or --ids)")
    assert resource_group is not None and machine_name is not None
    return [ResourceRef(None, resource_group, machine_name, name)]


def one_or_list(results: list[Any]) -> Any:
    """az prints one object for one id, a list for several."""
    if len(results) == 1:
        return results[0]
    return results
