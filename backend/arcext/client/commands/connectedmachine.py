"""``arcext connectedmachine``: az connectedmachine's extension commands and upgrade-extension.

``extension update`` sends a PATCH (MachineExtensionUpdate) with only the properties given, where
az's generic update does GET then PUT. The API never returns protectedSettings, so a PUT built from
a GET carries none: on ARM a PUT replaces the resource, so that round trip would drop the
protected settings (or depend on the server keeping them), and it would also write back every
other property as read, undoing a change made between the GET and the PUT (an automatic upgrade's
typeHandlerVersion, say). A PATCH is a server-side merge: protectedSettings stay sealed on the
server unless ``--protected-settings`` replaces them, and nothing the user did not name is sent.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import UsageProblem
from ..http import segment
from .common import (
    ClientCommand,
    client,
    emit,
    json_object_argument,
    no_wait_option,
    output_options,
    subscription_option,
    tags_argument,
)


@click.group()
def connectedmachine() -> None:
    """Azure Arc machines (az connectedmachine)."""


@connectedmachine.group()
def extension() -> None:
    """Machine extensions (az connectedmachine extension)."""


def _machine_options(fn: Any) -> Any:
    fn = click.option("--machine-name", required=True, help="The name of the machine.")(fn)
    fn = click.option("--resource-group", "-g", required=True, help="Name of the resource group.")(fn)
    return fn


def _name_option(fn: Any) -> Any:
    return click.option(
        "--name", "-n", "--extension-name", "name", required=True, help="The name of the machine extension."
    )(fn)


def _property_options(fn: Any) -> Any:
    options = [
        click.option("--type", "extension_type", help='The extension type, e.g. "CustomScriptExtension".'),
        click.option("--publisher", help="The extension handler's publisher."),
        click.option("--type-handler-version", help="The version of the script handler."),
        click.option("--settings", help="JSON settings (or @file)."),
        click.option("--protected-settings", help="JSON protected settings (or @file); never shown back."),
        click.option(
            "--enable-auto-upgrade",
            "--auto-upgrade",
            "--enable-automatic-upgrade",
            "enable_auto_upgrade",
            type=click.BOOL,
            is_flag=False,
            flag_value="true",
            default=None,
            metavar="true|false",
            help="Upgrade automatically when a newer version is published (alone: true).",
        ),
        click.option(
            "--auto-upgrade-minor",
            "--upgrade-minor-ver",
            "--auto-upgrade-minor-version",
            "auto_upgrade_minor",
            type=click.BOOL,
            is_flag=False,
            flag_value="true",
            default=None,
            metavar="true|false",
            help="Use a newer minor version at deployment time (alone: true).",
        ),
        click.option("--force-update-tag", help="Force the handler to update even if the configuration is unchanged."),
        click.option("--tags", multiple=True, help='Space-separated tags: key[=value] [key[=value] ...]; "" clears.'),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _properties(
    extension_type: str | None,
    publisher: str | None,
    type_handler_version: str | None,
    settings: str | None,
    protected_settings: str | None,
    enable_auto_upgrade: bool | None,
    auto_upgrade_minor: bool | None,
    force_update_tag: str | None,
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
    return props


@extension.command("list", cls=ClientCommand)
@_machine_options
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
@_name_option
@_machine_options
@subscription_option
@output_options
def extension_show(
    name: str, machine_name: str, resource_group: str, subscription: str | None, output: str, query: str | None
) -> None:
    """Get an extension of a machine."""
    with client(subscription) as arm:
        item = arm.get_json(arm.extension_path(resource_group, machine_name, name))
    emit(item, output, query)


@extension.command("create", cls=ClientCommand)
@_name_option
@_machine_options
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


@extension.command("update", cls=ClientCommand)
@_name_option
@_machine_options
@_property_options
@no_wait_option
@subscription_option
@output_options
def extension_update(
    name: str,
    machine_name: str,
    resource_group: str,
    extension_type: str | None,
    publisher: str | None,
    type_handler_version: str | None,
    settings: str | None,
    protected_settings: str | None,
    enable_auto_upgrade: bool | None,
    auto_upgrade_minor: bool | None,
    force_update_tag: str | None,
    tags: tuple[str, ...],
    no_wait: bool,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Update an extension: PATCH only what is given (protected settings stay as they are)."""
    props = _properties(
        extension_type,
        publisher,
        type_handler_version,
        settings,
        protected_settings,
        enable_auto_upgrade,
        auto_upgrade_minor,
        force_update_tag,
    )
    body: dict[str, Any] = {}
    if props:
        body["properties"] = props
    parsed_tags = tags_argument(tags)
    if parsed_tags is not None:
        body["tags"] = parsed_tags
    if not body:
        raise UsageProblem(
            "Nothing to update: pass --enable-auto-upgrade, --settings, --type-handler-version, --tags or another "
            "property."
        )
    with client(subscription) as arm:
        result = arm.send_lro(
            "PATCH",
            arm.extension_path(resource_group, machine_name, name),
            json=body,
            wait=not no_wait,
            label=f"Updating extension {name}",
        )
    emit(result, output, query)


@extension.command("delete", cls=ClientCommand)
@_name_option
@_machine_options
@click.option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation.")
@no_wait_option
@subscription_option
@output_options
def extension_delete(
    name: str,
    machine_name: str,
    resource_group: str,
    yes: bool,
    no_wait: bool,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Delete an extension."""
    if not yes:
        if not sys.stdin.isatty():
            raise UsageProblem("Unable to prompt for confirmation as no tty is available; use --yes.")
        click.confirm("Are you sure you want to perform this operation?", abort=True, err=True)
    with client(subscription) as arm:
        result = arm.send_lro(
            "DELETE",
            arm.extension_path(resource_group, machine_name, name),
            wait=not no_wait,
            label=f"Deleting extension {name}",
        )
    emit(result, output, query)


@extension.group()
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
@click.option("--version", required=True, help="The extension version.")
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


@connectedmachine.command("upgrade-extension", cls=ClientCommand)
@_machine_options
@click.option(
    "--extension-targets",
    required=True,
    help='JSON (or @file): {"<publisher>.<type>": {"targetVersion": "<version>"}, ...}',
)
@no_wait_option
@subscription_option
@output_options
def upgrade_extension(
    machine_name: str,
    resource_group: str,
    extension_targets: str,
    no_wait: bool,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Upgrade extensions of a machine to the given versions now (POST upgradeExtensions)."""
    targets = json_object_argument(extension_targets, "--extension-targets")
    if not targets:
        raise UsageProblem('--extension-targets: name at least one "<publisher>.<type>".')
    with client(subscription) as arm:
        result = arm.send_lro(
            "POST",
            f"{arm.machine_path(resource_group, machine_name)}/upgradeExtensions",
            json={"extensionTargets": targets},
            wait=not no_wait,
            label=f"Upgrading extensions on {machine_name}",
        )
    emit(result, output, query)
