"""``arcext connectedmachine``: az connectedmachine's machine commands (list, show) and upgrade-extension;
the ``extension`` group is in extension.py."""

from __future__ import annotations

from typing import Any

import click

from ..errors import UsageProblem
from ..http import segment
from .common import (
    HELP_OPTIONS,
    ClientCommand,
    client,
    emit,
    ids_option,
    json_argument,
    no_wait_option,
    one_or_list,
    output_options,
    resolve_refs,
    subscription_option,
)
from .extension import extension
from .extension_options import machine_options


@click.group(context_settings=HELP_OPTIONS)
def connectedmachine() -> None:
    """Azure Arc machines (az connectedmachine)."""


connectedmachine.add_command(extension)


@connectedmachine.command("list", cls=ClientCommand)
@click.option("--resource-group", "-g", help="Name of the resource group (default: the whole subscription).")
@click.option("--expand", help="Expands referenced resources (e.g. instanceView).")
@click.option("--max-items", type=int, help="Total number of items to return.")
@subscription_option
@output_options
def machine_list(
    resource_group: str | None,
    expand: str | None,
    max_items: int | None,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """List the machines of a resource group, or of the subscription."""
    with client(subscription) as arm:
        path = f"{arm.subscription_path()}/providers/Microsoft.HybridCompute/machines"
        if resource_group:
            path = (
                f"{arm.subscription_path()}/resourceGroups/{segment(resource_group)}"
                "/providers/Microsoft.HybridCompute/machines"
            )
        params = {"$expand": expand} if expand else None
        items = list(arm.iter_pages(path, params, limit=max_items))
    emit(items, output, query)


@connectedmachine.command("show", cls=ClientCommand)
@click.option("--name", "-n", "--machine-name", "name", help="The name of the hybrid machine. (Resource Id argument)")
@click.option("--resource-group", "-g", help="Name of the resource group. (Resource Id argument)")
@click.option("--expand", help="The expand expression to apply on the operation (e.g. instanceView).")
@ids_option
@subscription_option
@output_options
def machine_show(
    name: str | None,
    resource_group: str | None,
    expand: str | None,
    ids: tuple[str, ...],
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Get a machine."""
    refs = resolve_refs(ids, False, resource_group, name)
    params = {"$expand": expand} if expand else None
    with client(subscription, need_subscription=not ids) as arm:
        results = [arm.get_json(arm.machine_path(r.resource_group, r.machine, r.subscription), params) for r in refs]
    emit(one_or_list(results), output, query)


_TARGET_KEYS = {"target-version": "targetVersion", "target_version": "targetVersion"}


def _targets(value: str | None) -> dict[str, Any] | None:
    parsed = json_argument(value, "--extension-targets")
    if parsed is None:
        return None
    if not isinstance(parsed, dict):
        raise UsageProblem("--extension-targets: expected an object.")
    out: dict[str, Any] = {}
    for key, target in parsed.items():
        if isinstance(target, dict):
            target = {_TARGET_KEYS.get(str(k), str(k)): v for k, v in target.items()}
        out[str(key)] = target
    return out


@connectedmachine.command("upgrade-extension", cls=ClientCommand)
@machine_options(required=False)
@ids_option
@click.option(
    "--extension-targets",
    help='JSON, shorthand or @file: {"<publisher>.<type>": {"targetVersion": "<version>"}, ...}',
)
@no_wait_option
@subscription_option
@output_options
def upgrade_extension(
    machine_name: str | None,
    resource_group: str | None,
    ids: tuple[str, ...],
    extension_targets: str | None,
    no_wait: bool,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Upgrade extensions of a machine to the given versions now (POST upgradeExtensions)."""
    refs = resolve_refs(ids, False, resource_group, machine_name)
    targets = _targets(extension_targets)
    body: dict[str, Any] = {} if targets is None else {"extensionTargets": targets}
    with client(subscription, need_subscription=not ids) as arm:
        for ref in refs:
            arm.send_lro(
                "POST",
                f"{arm.machine_path(ref.resource_group, ref.machine, ref.subscription)}/upgradeExtensions",
                json=body,
                wait=not no_wait,
                label=f"Upgrading extensions on {ref.machine}",
            )
    emit(None, output, query)
