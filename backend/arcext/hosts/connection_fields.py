"""The host-connection settings every driver shares (psrp, winrm and ssh): their defaults, the checks of
timeouts and allow/block lists, and the error a bad setting gets. ``connections`` (Windows) and
``ssh_settings`` (Linux) both build on it, so neither imports the other's rules."""

from __future__ import annotations

from typing import Any

from .. import errors

PUBLIC_DEFAULTS: dict[str, Any] = {
    "driver": "psrp",
    "transport": "https",
    "auth": "negotiate",
    "certValidation": True,
    "caCertificatePath": None,
    "configurationName": "Microsoft.PowerShell",
    "operationTimeoutSeconds": 20,
    "connectionTimeoutSeconds": 10,
    "extensionsAllowList": [],
    "extensionsBlockList": [],
    "handlerTimeoutSeconds": {},
    "statusDeadlineSeconds": 300,
    "heartbeatMaxAgeSeconds": 600,
    "protectedSettingsCertificatePem": None,
}
HANDLER_COMMANDS = ("install", "enable", "disable", "update", "uninstall")


def bad_setting(message: str, target: str) -> errors.ArmError:
    return errors.invalid_parameter(message, target=target)


def extension_pattern(value: Any, target: str) -> str:
    if not isinstance(value, str) or value.count("/") != 1 or not all(value.split("/")):
        raise bad_setting(f"'{value}' is not an extension: use Publisher/Type (azcmagent's allowlist format).", target)
    return value


def check_timeouts_and_lists(public: dict[str, Any]) -> None:
    """The settings every driver shares: timeouts in seconds and the extension allow/block lists (normalised
    in place)."""
    for name in (
        "operationTimeoutSeconds",
        "connectionTimeoutSeconds",
        "statusDeadlineSeconds",
        "heartbeatMaxAgeSeconds",
    ):
        value = public[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 86400:
            raise bad_setting(f"'{name}' must be a whole number of seconds between 1 and 86400.", name)
    timeouts = public["handlerTimeoutSeconds"]
    if not isinstance(timeouts, dict) or any(
        k not in HANDLER_COMMANDS or isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= 86400
        for k, v in timeouts.items()
    ):
        raise bad_setting(
            f"'handlerTimeoutSeconds' maps {', '.join(HANDLER_COMMANDS)} to seconds.", "handlerTimeoutSeconds"
        )
    for name in ("extensionsAllowList", "extensionsBlockList"):
        if not isinstance(public[name], list):
            raise bad_setting(f"'{name}' must be a list of Publisher/Type names.", name)
        public[name] = [extension_pattern(v, name) for v in public[name]]
