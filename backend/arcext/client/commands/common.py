"""What every client command shares: --output/--query/--subscription, error handling, JSON arguments."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import config
from ..errors import EXIT_INTERRUPTED, CliError, UsageProblem
from ..http import ArmClient
from ..output import FORMATS, QueryError, Transformer, apply_query, compile_query, query_warnings, render

F = TypeVar("F", bound=Callable[..., Any])

OUTPUT_ENV = "ARCEXT_OUTPUT"


class ClientCommand(click.Command):
    """Turns CliError into ``ERROR: (<code>) <message>`` on stderr and its exit code."""

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


def output_options(fn: F) -> F:
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
        metavar="ID",
        help="Subscription id (default: ARCEXT_SUBSCRIPTION_ID, then 'arcext login --subscription').",
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
            click.echo(f"WARNING: {warning}", err=True)
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
    """A JSON option value, or ``@file`` to read it from a file (as az accepts)."""
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
        raise UsageProblem(f"{option}: not valid JSON ({exc}).") from None


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
