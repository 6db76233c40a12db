"""``arcext connectedmachine extension image``: the published versions of an extension type
(ExtensionMetadata), flattened as az shows them."""

from __future__ import annotations

from typing import Any

import click

from ..http import segment
from .common import HELP_OPTIONS, ClientCommand, client, emit, output_options, subscription_option


@click.group(context_settings=HELP_OPTIONS)
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
