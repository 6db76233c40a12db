"""``arcext connectedmachine``: az connectedmachine's machine and extension commands and upgrade-extension.

``extension update`` is az's generic update: GET the extension, apply the named properties, then
``--set``/``--add``/``--remove`` in the order given, and PUT the result (an update that changes
nothing is a PUT of what was read, and succeeds). The API never returns protectedSettings, so the PUT
carries none unless ``--protected-settings`` is given; arcext's server keeps the sealed protected
settings of a PUT without them (Azure documents no such promise, see docs/cli.md). As with az, a change
made between the GET and the PUT (an automatic upgrade's typeHandlerVersion) is written back as read.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .. import generic, http
from ..errors import ArmHttpError, OperationFailed, UsageProblem, WaitTimeout
from ..http import segment
from ..output import compile_query
from .common import (
    HELP_OPTIONS,
    ClientCommand,
    MultiValueOption,
    ResourceRef,
    client,
    emit,
    ids_option,
    json_argument,
    json_object_argument,
    no_wait_option,
    one_or_list,
    option_order,
    output_options,
    resolve_refs,
    subscription_option,
    tags_argument,
)

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings=HELP_OPTIONS)
def connectedmachine() -> None:
    """Azure Arc machines (az connectedmachine)."""


@connectedmachine.group(context_settings=HELP_OPTIONS)
def extension() -> None:
    """Machine extensions (az connectedmachine extension)."""


def _machine_options(required: bool = True) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        fn = click.option("--machine-name", required=required, help="The name of the machine. (Resource Id argument)")(
            fn
        )
        fn = click.option(
            "--resource-group", "-g", required=required, help="Name of the resource group. (Resource Id argument)"
        )(fn)
        return fn

    return decorate


def _name_option(required: bool = True) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        return click.option(
            "--name",
            "-n",
            "--extension-name",
            "name",
            required=required,
            help="The name of the machine extension. (Resource Id argument)",
        )(fn)

    return decorate


_BOOL = {"type": click.BOOL, "is_flag": False, "flag_value": "true", "default": None, "metavar": "true|false"}


def _property_options(fn: Any) -> Any:
    options = [
        click.option("--type", "extension_type", help='The extension type, e.g. "CustomScriptExtension".'),
        click.option("--publisher", help="The extension handler's publisher."),
        click.option("--type-handler-version", help="The version of the script handler."),
        click.option("--settings", help="Settings: JSON, shorthand ('{key:value}') or @file."),
        click.option(
            "--protected-settings",
            help="Protected settings: JSON, shorthand or @file; never shown back.",
        ),
        click.option(
            "--enable-auto-upgrade",
            "--auto-upgrade",
            "--enable-automatic-upgrade",
            "enable_auto_upgrade",
            help="Upgrade automatically when a newer version is published (alone: true).",
            **_BOOL,  # type: ignore[arg-type]
        ),
        click.option(
            "--auto-upgrade-minor",
            "--auto-upgrade-version",
            "--upgrade-minor-ver",
            "--auto-upgrade-minor-version",
            "auto_upgrade_minor",
            help="Use a newer minor version at deployment time (alone: true).",
            **_BOOL,  # type: ignore[arg-type]
        ),
        click.option("--force-update-tag", help="Force the handler to update even if the configuration is unchanged."),
        click.option(
            "--instance-view",
            help="The machine extension instance view: JSON or shorthand "
            "('{name:...,type:...,type-handler-version:...,status:{code:...,level:Info}}'). "
            "Sent as az sends it; the server reports its own instance view.",
        ),
        click.option(
            "--tags",
            cls=MultiValueOption,
            help='Space-separated tags: key[=value] [key[=value] ...]; "" clears.',
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


_INSTANCE_VIEW_KEYS = {
    "type-handler-version": "typeHandlerVersion",
    "type_handler_version": "typeHandlerVersion",
    "display-status": "displayStatus",
    "display_status": "displayStatus",
}


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_INSTANCE_VIEW_KEYS.get(str(k), str(k)): _camel_keys(v) for k, v in value.items()}
    return value


def _properties(
    extension_type: str | None,
    publisher: str | None,
    type_handler_version: str | None,
    settings: str | None,
    protected_settings: str | None,
    enable_auto_upgrade: bool | None,
    auto_upgrade_minor: bool | None,
    force_update_tag: str | None,
    instance_view: str | None = None,
) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if publisher is not None:
        props["publisher"] = publisher
    if extension_type is not None:
        props["type"] = extension_type
    if type_handler_version is not None:
        props["typeHandlerVersion"] = type_handler_version
    if enable_auto_upgrade is not None:
        props["enableAutomaticUpgrade"] = enable_auto_upgrade
    if auto_upgrade_minor is not None:
        props["autoUpgradeMinorVersion"] = auto_upgrade_minor
    if force_update_tag is not None:
        props["forceUpdateTag"] = force_update_tag
    parsed_settings = json_object_argument(settings, "--settings")
    if parsed_settings is not None:
        props["settings"] = parsed_settings
    parsed_protected = json_object_argument(protected_settings, "--protected-settings")
    if parsed_protected is not None:
        props["protectedSettings"] = parsed_protected
    parsed_view = json_object_argument(instance_view, "--instance-view")
    if parsed_view is not None:
        props["instanceView"] = _camel_keys(parsed_view)
    return props


# --- machines ------------------------------------------------------------------------------------
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


# --- extensions ----------------------------------------------------------------------------------
def _ext_path(arm: http.ArmClient, ref: ResourceRef) -> str:
    assert ref.name is not None
    return arm.extension_path(ref.resource_group, ref.machine, ref.name, ref.subscription)


@extension.command("list", cls=ClientCommand)
@_machine_options()
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
@_name_option(required=False)
@_machine_options(required=False)
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
@_name_option()
@_machine_options()
@click.option("--location", "-l", help="Location; by default the machine's.")
@_property_options
@no_wait_option
@subscription_option
@output_options
def extension_create(
    name: str,
    machine_name: str,
    resource_group: str,
    location: str | None,
    extension_type: str | None,
    publisher: str | None,
    type_handler_version: str | None,
    settings: str | None,
    protected_settings: str | None,
    enable_auto_upgrade: bool | None,
    auto_upgrade_minor: bool | None,
    force_update_tag: str | None,
    instance_view: str | None,
    tags: tuple[str, ...],
    no_wait: bool,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Create (or replace) an extension: PUT, then wait for the operation (unless --no-wait)."""
    props = _properties(
        extension_type,
        publisher,
        type_handler_version,
        settings,
        protected_settings,
        enable_auto_upgrade,
        auto_upgrade_minor,
        force_update_tag,
        instance_view,
    )
    with client(subscription) as arm:
        if not location:
            machine = arm.get_json(arm.machine_path(resource_group, machine_name))
            location = str(machine.get("location") or "")
        body: dict[str, Any] = {"location": location, "properties": props}
        parsed_tags = tags_argument(tags)
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
@_name_option(required=False)
@_machine_options(required=False)
@ids_option
@_property_options
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
    extension_type: str | None,
    publisher: str | None,
    type_handler_version: str | None,
    settings: str | None,
    protected_settings: str | None,
    enable_auto_upgrade: bool | None,
    auto_upgrade_minor: bool | None,
    force_update_tag: str | None,
    instance_view: str | None,
    tags: tuple[str, ...],
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
    props = _properties(
        extension_type,
        publisher,
        type_handler_version,
        settings,
        protected_settings,
        enable_auto_upgrade,
        auto_upgrade_minor,
        force_update_tag,
        instance_view,
    )
    parsed_tags = tags_argument(tags)
    operations = _generic_operations()
    results = []
    with client(subscription, need_subscription=not ids) as arm:
        for ref in refs:
            path = _ext_path(arm, ref)
            instance: dict[str, Any] = arm.get_json(path) or {}
            properties = instance.get("properties")
            if not isinstance(properties, dict):
                properties = instance["properties"] = {}
            properties.update(props)
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
@_name_option(required=False)
@_machine_options(required=False)
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
@_name_option(required=False)
@_machine_options(required=False)
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


@extension.group(context_settings=HELP_OPTIONS)
def image() -> None:
    """Published extension versions (ExtensionMetadata)."""


def _image_options(fn: Any) -> Any:
    fn = click.option("--extension-type", "--type", "extension_type", required=True, help="The extension type.")(fn)
    fn = click.option("--publisher", "-p", required=True, help="The extension publisher.")(fn)
    fn = click.option("--location", "-l", required=True, help="Location.")(fn)
    return fn


def _flat_image(item: dict[str, Any]) -> dict[str, Any]:
    """az flattens ExtensionValue: id, name, type, extensionType, publisher, version."""
    props = item.get("properties") or {}
    return {
        "extensionType": props.get("extensionType"),
        "id": item.get("id"),
        "name": item.get("name"),
        "publisher": props.get("publisher"),
        "type": item.get("type"),
        "version": props.get("version"),
    }


def _image_path(subscription_path: str, location: str, publisher: str, extension_type: str) -> str:
    return (
        f"{subscription_path}/providers/Microsoft.HybridCompute/locations/{segment(location)}"
        f"/publishers/{segment(publisher)}/extensionTypes/{segment(extension_type)}/versions"
    )


@image.command("list", cls=ClientCommand)
@_image_options
@subscription_option
@output_options
def image_list(
    location: str, publisher: str, extension_type: str, subscription: str | None, output: str, query: str | None
) -> None:
    """List the published versions of an extension type (newest first)."""
    with client(subscription) as arm:
        items = arm.list_all(_image_path(arm.subscription_path(), location, publisher, extension_type))
    emit([_flat_image(i) for i in items], output, query)


@image.command("show", cls=ClientCommand)
@_image_options
@click.option("--version", "--name", "-n", "version", required=True, help="The extension version.")
@subscription_option
@output_options
def image_show(
    location: str,
    publisher: str,
    extension_type: str,
    version: str,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Show one published version of an extension type."""
    with client(subscription) as arm:
        item = arm.get_json(
            f"{_image_path(arm.subscription_path(), location, publisher, extension_type)}/{segment(version)}"
        )
    emit(_flat_image(item), output, query)


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
@_machine_options(required=False)
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
