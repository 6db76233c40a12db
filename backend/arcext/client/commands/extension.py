"""``arcext connectedmachine extension``: az connectedmachine extension's list, show, create, update, delete
and wait (``image`` is in extension_image.py).

``extension update`` is az's generic update: GET the extension, apply the named properties, then
``--set``/``--add``/``--remove`` in the order given, and PUT the result (an update that changes
nothing is a PUT of what was read, and succeeds). The API never returns protectedSettings, so the PUT
carries none unless ``--protected-settings`` is given; arcext's server keeps the sealed protected
settings of a PUT without them (Azure documents no such promise, see docs/cli.md). As with az, a change
made between the GET and the PUT (an automatic upgrade's typeHandlerVersion) is written back as read.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import generic, http
from ..errors import ArmHttpError, OperationFailed, UsageProblem, WaitTimeout
from ..output import compile_query
from .common import (
    HELP_OPTIONS,
    ClientCommand,
    MultiValueOption,
    ResourceRef,
    client,
    emit,
    ids_option,
    no_wait_option,
    one_or_list,
    option_order,
    output_options,
    resolve_refs,
    subscription_option,
)
from .extension_image import image
from .extension_options import ExtensionProperties, machine_options, name_option, property_options


@click.group(context_settings=HELP_OPTIONS)
def extension() -> None:
    """Machine extensions (az connectedmachine extension)."""


extension.add_command(image)


def _ext_path(arm: http.ArmClient, ref: ResourceRef) -> str:
    assert ref.name is not None
    return arm.extension_path(ref.resource_group, ref.machine, ref.name, ref.subscription)


@extension.command("list", cls=ClientCommand)
@machine_options()
@click.option("--expand", help="The expand expression to apply on the operation (e.g. instanceView).")
@subscription_option
@output_options
def extension_list(
    machine_name: str, resource_group: str, expand: str | None, subscription: str | None, output: str, query: str | None
) -> None:
    """List all extensions of a machine."""
    with client(subscription) as arm:
        params = {"$expand": expand} if expand else None
        items = arm.list_all(f"{arm.machine_path(resource_group, machine_name)}/extensions", params)
    emit(items, output, query)


@extension.command("show", cls=ClientCommand)
@name_option(required=False)
@machine_options(required=False)
@ids_option
@subscription_option
@output_options
def extension_show(
    name: str | None,
    machine_name: str | None,
    resource_group: str | None,
    ids: tuple[str, ...],
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Get an extension of a machine."""
    refs = resolve_refs(ids, True, resource_group, machine_name, name)
    with client(subscription, need_subscription=not ids) as arm:
        results = [arm.get_json(_ext_path(arm, ref)) for ref in refs]
    emit(one_or_list(results), output, query)


@extension.command("create", cls=ClientCommand)
@name_option()
@machine_options()
@click.option("--location", "-l", help="Location; by default the machine's.")
@property_options
@no_wait_option
@subscription_option
@output_options
def extension_create(
    name: str,
    machine_name: str,
    resource_group: str,
    location: str | None,
    properties: ExtensionProperties,
    no_wait: bool,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Create (or replace) an extension: PUT, then wait for the operation (unless --no-wait)."""
    props = properties.properties()
    with client(subscription) as arm:
        if not location:
            machine = arm.get_json(arm.machine_path(resource_group, machine_name))
            location = str(machine.get("location") or "")
        body: dict[str, Any] = {"location": location, "properties": props}
        parsed_tags = properties.parsed_tags()
        if parsed_tags is not None:
            body["tags"] = parsed_tags
        result = arm.send_lro(
            "PUT",
            arm.extension_path(resource_group, machine_name, name),
            json=body,
            wait=not no_wait,
            label=f"Creating extension {name}",
        )
    emit(result, output, query)


_READ_ONLY = ("provisioningState",)
_GENERIC = {"set_": generic.SET, "add": generic.ADD, "remove": generic.REMOVE}


def _generic_operations() -> list[tuple[str, list[str]]]:
    return [(_GENERIC[name], words) for name, words in option_order() if name in _GENERIC]


@extension.command("update", cls=ClientCommand)
@name_option(required=False)
@machine_options(required=False)
@ids_option
@property_options
@click.option(
    "--set",
    "set_",
    cls=MultiValueOption,
    metavar="KEY=VALUE",
    help="Update an object by specifying a property path and value to set, e.g. properties.settings.key=value.",
)
@click.option(
    "--add",
    cls=MultiValueOption,
    grouped=True,
    metavar="LIST_PATH VALUE",
    help="Add an object to a list by specifying a path and key value pairs, e.g. properties.settings.fileUris URI.",
)
@click.option(
    "--remove",
    cls=MultiValueOption,
    grouped=True,
    metavar="PATH [INDEX]",
    help="Remove a property or an element from a list, e.g. tags.env or properties.settings.fileUris 0.",
)
@click.option(
    "--force-string", is_flag=True, help="When using 'set' or 'add', keep string literals instead of reading JSON."
)
@no_wait_option
@subscription_option
@output_options
def extension_update(
    name: str | None,
    machine_name: str | None,
    resource_group: str | None,
    ids: tuple[str, ...],
    properties: ExtensionProperties,
    set_: tuple[str, ...],
    add: tuple[str, ...],
    remove: tuple[str, ...],
    force_string: bool,
    no_wait: bool,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Update an extension: az's generic update (GET, apply the changes, PUT)."""
    refs = resolve_refs(ids, True, resource_group, machine_name, name)
    props = properties.properties()
    parsed_tags = properties.parsed_tags()
    operations = _generic_operations()
    results = []
    with client(subscription, need_subscription=not ids) as arm:
        for ref in refs:
            path = _ext_path(arm, ref)
            instance: dict[str, Any] = arm.get_json(path) or {}
            current = instance.get("properties")
            if not isinstance(current, dict):
                current = instance["properties"] = {}
            current.update(props)
            if parsed_tags is not None:
                instance["tags"] = parsed_tags
            try:
                generic.apply(instance, operations, force_string)
            except generic.GenericUpdateError as exc:
                raise UsageProblem(str(exc)) from None
            body: dict[str, Any] = {"location": instance.get("location")}
            new_props = instance.get("properties")
            if isinstance(new_props, dict):
                body["properties"] = {k: v for k, v in new_props.items() if k not in _READ_ONLY}
            if instance.get("tags") is not None:
                body["tags"] = instance["tags"]
            results.append(
                arm.send_lro("PUT", path, json=body, wait=not no_wait, label=f"Updating extension {ref.name}")
            )
    emit(one_or_list(results) if not no_wait else None, output, query)


@extension.command("delete", cls=ClientCommand)
@name_option(required=False)
@machine_options(required=False)
@ids_option
@click.option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation.")
@no_wait_option
@subscription_option
@output_options
def extension_delete(
    name: str | None,
    machine_name: str | None,
    resource_group: str | None,
    ids: tuple[str, ...],
    yes: bool,
    no_wait: bool,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Delete an extension."""
    refs = resolve_refs(ids, True, resource_group, machine_name, name)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageProblem("Unable to prompt for confirmation as no tty is available; use --yes.")
        click.confirm("Are you sure you want to perform this operation?", abort=True, err=True)
    results = []
    with client(subscription, need_subscription=not ids) as arm:
        for ref in refs:
            results.append(
                arm.send_lro("DELETE", _ext_path(arm, ref), wait=not no_wait, label=f"Deleting extension {ref.name}")
            )
    done = [r for r in results if r is not None]
    emit(one_or_list(done) if done else None, output, query)


@extension.command("wait", cls=ClientCommand)
@name_option(required=False)
@machine_options(required=False)
@ids_option
@click.option("--created", is_flag=True, help="Wait until created with 'provisioningState' at 'Succeeded'.")
@click.option("--updated", is_flag=True, help="Wait until updated with provisioningState at 'Succeeded'.")
@click.option("--deleted", is_flag=True, help="Wait until deleted.")
@click.option("--exists", is_flag=True, help="Wait until the resource exists.")
@click.option("--custom", metavar="JMESPATH", help="Wait until the condition satisfies a custom JMESPath query.")
@click.option("--interval", type=int, default=30, show_default=True, help="Polling interval in seconds.")
@click.option("--timeout", type=int, default=3600, show_default=True, help="Maximum wait in seconds.")
@subscription_option
@output_options
def extension_wait(
    name: str | None,
    machine_name: str | None,
    resource_group: str | None,
    ids: tuple[str, ...],
    created: bool,
    updated: bool,
    deleted: bool,
    exists: bool,
    custom: str | None,
    interval: int,
    timeout: int,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Place the CLI in a waiting state until a condition is met (az's generic wait)."""
    refs = resolve_refs(ids, True, resource_group, machine_name, name)
    condition = compile_query(custom) if custom else None
    with client(subscription, need_subscription=not ids) as arm:
        for ref in refs:
            _wait_for(arm, _ext_path(arm, ref), created, updated, deleted, exists, condition, interval, timeout)
    emit(None, output, query)


def _wait_for(
    arm: http.ArmClient,
    path: str,
    created: bool,
    updated: bool,
    deleted: bool,
    exists: bool,
    condition: Any,
    interval: int,
    timeout: int,
) -> None:
    """az's generic wait loop: poll every ``interval`` seconds, at most ``timeout // interval`` times."""
    step = max(interval, 1)
    for _ in range(0, max(timeout, 0), step):
        try:
            instance = arm.get_json(path) or {}
        except ArmHttpError as exc:
            if exc.status != 404:
                raise
            if deleted:
                return
            if not (created or exists or condition is not None):
                raise
        else:
            if exists:
                return
            state = str((instance.get("properties") or {}).get("provisioningState") or "")
            if state.lower() == "failed":
                raise OperationFailed("The operation failed", "Failed")
            if (created or updated) and state.lower() == "succeeded":
                return
            if condition is not None and bool(condition.search(instance)):
                return
        http.sleep(step)
    raise WaitTimeout(f"Wait operation timed-out after {timeout} seconds", "WaitTimeout")
