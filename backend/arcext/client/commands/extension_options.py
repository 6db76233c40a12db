"""The options ``arcext connectedmachine extension`` commands share: the machine and extension names, and
the extension properties ``create`` and ``update`` both take (collected into one :class:`ExtensionProperties`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from .common import MultiValueOption, json_object_argument, tags_argument

F = TypeVar("F", bound=Callable[..., Any])


def machine_options(required: bool = True) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        fn = click.option("--machine-name", required=required, help="The name of the machine. (Resource Id argument)")(
            fn
        )
        fn = click.option(
            "--resource-group", "-g", required=required, help="Name of the resource group. (Resource Id argument)"
        )(fn)
        return fn

    return decorate


def name_option(required: bool = True) -> Callable[[F], F]:
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


@dataclass(frozen=True, slots=True)
class ExtensionProperties:
    """What the property options of ``extension create``/``update`` were given (None: not given)."""

    extension_type: str | None
    publisher: str | None
    type_handler_version: str | None
    settings: str | None
    protected_settings: str | None
    enable_auto_upgrade: bool | None
    auto_upgrade_minor: bool | None
    force_update_tag: str | None
    instance_view: str | None
    tags: tuple[str, ...]

    def properties(self) -> dict[str, Any]:
        """The ``properties`` these options set, in the API's names (settings parsed from JSON or shorthand)."""
        props: dict[str, Any] = {}
        if self.publisher is not None:
            props["publisher"] = self.publisher
        if self.extension_type is not None:
            props["type"] = self.extension_type
        if self.type_handler_version is not None:
            props["typeHandlerVersion"] = self.type_handler_version
        if self.enable_auto_upgrade is not None:
            props["enableAutomaticUpgrade"] = self.enable_auto_upgrade
        if self.auto_upgrade_minor is not None:
            props["autoUpgradeMinorVersion"] = self.auto_upgrade_minor
        if self.force_update_tag is not None:
            props["forceUpdateTag"] = self.force_update_tag
        parsed_settings = json_object_argument(self.settings, "--settings")
        if parsed_settings is not None:
            props["settings"] = parsed_settings
        parsed_protected = json_object_argument(self.protected_settings, "--protected-settings")
        if parsed_protected is not None:
            props["protectedSettings"] = parsed_protected
        parsed_view = json_object_argument(self.instance_view, "--instance-view")
        if parsed_view is not None:
            props["instanceView"] = _camel_keys(parsed_view)
        return props

    def parsed_tags(self) -> dict[str, str] | None:
        """The ``--tags`` as a dict; None when not given."""
        return tags_argument(self.tags)


_PROPERTY_OPTIONS = [
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
_PROPERTY_NAMES = [field for field in ExtensionProperties.__dataclass_fields__]


def property_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The extension property options, handed to the command as one ``properties: ExtensionProperties``."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in _PROPERTY_NAMES}
        return fn(*args, properties=ExtensionProperties(**given), **kwargs)

    decorated: Callable[..., Any] = command
    for option in reversed(_PROPERTY_OPTIONS):
        decorated = option(decorated)
    return decorated
