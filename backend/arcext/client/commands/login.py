"""``arcext login`` / ``logout`` / ``account show``: where the client commands send their requests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import config
from ..errors import UsageProblem
from ..http import ArmClient
from .common import ClientCommand, emit, global_options, output_options, warn


@click.command("login", cls=ClientCommand)
@click.option("--endpoint", required=True, help="The arcext server, e.g. https://arcext.example:5000.")
@click.option(
    "--token",
    help="A token from 'arcext token create' ('-' reads it from stdin; omitted: prompted for, hidden).",
)
@click.option("--subscription", metavar="ID", help="Default subscription for the client commands.")
@click.option(
    "--subscription-name",
    metavar="NAME",
    help="A name for --subscription, so commands take '--subscription NAME' as az does.",
)
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM file of the CA (or self-signed certificate) to trust for https.",
)
@output_options
def login(
    endpoint: str,
    token: str | None,
    subscription: str | None,
    subscription_name: str | None,
    ca_bundle: Path | None,
    output: str,
    query: str | None,
) -> None:
    """Check the token against the server and store endpoint and token (mode 0600; the token is never printed)."""
    if token == "-":
        token = sys.stdin.readline().strip()
    elif token is None:
        token = click.prompt("Token", hide_input=True, err=True).strip()
    if not token:
        raise UsageProblem("--token: the token is empty.")
    endpoint = endpoint.rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise UsageProblem(f"--endpoint: '{endpoint}' is not an http:// or https:// URL.")
    bundle = str(ca_bundle.resolve()) if ca_bundle else None
    connection = config.Connection(endpoint, token, subscription, bundle)
    with ArmClient(connection) as arm:
        arm.get_json("/providers/Microsoft.HybridCompute/operations")  # 401 for a bad token; nothing is stored
    if subscription_name and not subscription:
        raise UsageProblem("--subscription-name names the --subscription given with it.")
    values: dict[str, Any] = {"endpoint": endpoint, "token": token}
    if subscription:
        values["subscription"] = subscription
    names = config.load_file().get("subscriptions")
    names = dict(names) if isinstance(names, dict) else {}
    if subscription_name:
        names[subscription_name] = subscription
    if names:
        values["subscriptions"] = names
    if bundle:
        values["caBundle"] = bundle
    path = config.save_file(values)
    emit(
        {"endpoint": endpoint, "subscription": subscription, "caBundle": bundle, "configFile": str(path)},
        output,
        query,
    )


@click.command("logout", cls=ClientCommand)
@global_options
def logout() -> None:
    """Forget the stored endpoint and token."""
    if not config.remove_file():
        warn(f"not logged in ({config.config_path()} does not exist).")


@click.group()
def account() -> None:
    """The endpoint and subscription the client commands use."""


@account.command("show", cls=ClientCommand)
@output_options
def account_show(output: str, query: str | None) -> None:
    """Show the effective endpoint, subscription and CA bundle, and where each comes from (never the token)."""
    values, sources = config.settings()
    if not values.get("endpoint") or not values.get("token"):
        raise UsageProblem(
            "Not logged in: run 'arcext login --endpoint URL --token TOKEN' or set ARCEXT_ENDPOINT and ARCEXT_TOKEN."
        )
    emit(
        {
            "endpoint": values.get("endpoint"),
            "subscription": values.get("subscription"),
            "caBundle": values.get("caBundle"),
            "sources": {k: sources[k] for k in ("endpoint", "token", "subscription", "caBundle") if k in sources},
        },
        output,
        query,
    )
