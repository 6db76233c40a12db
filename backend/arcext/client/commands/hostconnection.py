"""``arcext host-connection``: how arcext reaches a machine's Windows host (psrp or winrm driver).

The admin surface PUT/GET/DELETE /arcext/v1/subscriptions/{sub}/resourceGroups/{rg}/machines/{m}/hostConnection.
``set`` is a PUT: settings not given take their defaults again, except the credentials, which the server
keeps until new ones are sent. The password is read from standard input (``--password-stdin``), never
from the command line, where other users of the machine could read it in the process list.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import UsageProblem
from ..http import ArmClient, segment
from .common import ClientCommand, client, emit, json_object_argument, output_options, subscription_option


@click.group("host-connection")
def host_connection() -> None:
    """How arcext reaches a machine's Windows host: address, driver, auth, credentials (never shown)."""


def _path(arm: ArmClient, resource_group: str, machine: str) -> str:
    return (
        f"/arcext/v1/subscriptions/{segment(arm.subscription)}/resourceGroups/{segment(resource_group)}"
        f"/machines/{segment(machine)}/hostConnection"
    )


def _machine_options(fn: Any) -> Any:
    fn = click.option("--machine-name", required=True, help="The name of the machine.")(fn)
    fn = click.option("--resource-group", "-g", required=True, help="Name of the resource group.")(fn)
    return fn


def _file_text(value: str | None, option: str) -> str | None:
    """A PEM given as @file (or as text)."""
    if value is None or not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageProblem(f"{option}: cannot read {value[1:]}: {exc.strerror}") from None


@host_connection.command("set", cls=ClientCommand)
@_machine_options
@click.option("--address", required=True, help="Host name or IP address of the Windows host.")
@click.option("--port", type=click.IntRange(1, 65535), help="WinRM port (default 5986 for https, 5985 for http).")
@click.option(
    "--driver",
    type=click.Choice(["psrp", "winrm"]),
    help="psrp (PowerShell Remoting, the default) or winrm (WinRS cmd shell, for hosts that allow only WinRS).",
)
@click.option("--transport", type=click.Choice(["https", "http"]), help="Default https.")
@click.option(
    "--auth",
    type=click.Choice(["negotiate", "ntlm", "kerberos", "certificate", "basic"]),
    help="Default negotiate; basic and certificate need https.",
)
@click.option("--username", help="The account arcext signs in with (not for certificate auth).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (one line).")
@click.option("--no-cert-validation", is_flag=True, help="Do not validate the host's TLS certificate.")
@click.option("--ca-certificate-path", help="CA bundle (on the arcext server) to validate the host's certificate.")
@click.option("--configuration-name", help="PowerShell session configuration, e.g. a JEA endpoint (psrp only).")
@click.option("--operation-timeout", type=click.IntRange(1, 86400), help="Seconds per WS-Management operation.")
@click.option("--connection-timeout", type=click.IntRange(1, 86400), help="Seconds to connect.")
@click.option("--allow", "allow", multiple=True, metavar="PUBLISHER/TYPE", help="Allow only these extensions.")
@click.option("--block", "block", multiple=True, metavar="PUBLISHER/TYPE", help="Never touch these extensions.")
@click.option("--handler-timeouts", help='JSON seconds per handler command, e.g. {"install": 1200} (or @file).')
@click.option("--status-deadline", type=click.IntRange(1, 86400), help="Seconds to wait for a healthy status.")
@click.option("--heartbeat-max-age", type=click.IntRange(1, 86400), help="Seconds before a heartbeat is stale.")
@click.option("--certificate-pem", help="Client certificate for certificate auth (@file or PEM text).")
@click.option("--certificate-key-pem", help="Its private key (@file or PEM text).")
@click.option(
    "--protected-settings-certificate", help="Host certificate to encrypt protectedSettings to (@file or PEM text)."
)
@subscription_option
@output_options
def host_connection_set(
    resource_group: str,
    machine_name: str,
    address: str,
    port: int | None,
    driver: str | None,
    transport: str | None,
    auth: str | None,
    username: str | None,
    password_stdin: bool,
    no_cert_validation: bool,
    ca_certificate_path: str | None,
    configuration_name: str | None,
    operation_timeout: int | None,
    connection_timeout: int | None,
    allow: tuple[str, ...],
    block: tuple[str, ...],
    handler_timeouts: str | None,
    status_deadline: int | None,
    heartbeat_max_age: int | None,
    certificate_pem: str | None,
    certificate_key_pem: str | None,
    protected_settings_certificate: str | None,
    subscription: str | None,
    output: str,
    query: str | None,
) -> None:
    """Set (replace) a machine's host connection; the engine then upgrades it over that host."""
    body: dict[str, Any] = {"address": address}
    optional: dict[str, Any] = {
        "port": port,
        "driver": driver,
        "transport": transport,
        "auth": auth,
        "username": username,
        "caCertificatePath": ca_certificate_path,
        "configurationName": configuration_name,
        "operationTimeoutSeconds": operation_timeout,
        "connectionTimeoutSeconds": connection_timeout,
        "extensionsAllowList": list(allow) or None,
        "extensionsBlockList": list(block) or None,
        "handlerTimeoutSeconds": json_object_argument(handler_timeouts, "--handler-timeouts"),
        "statusDeadlineSeconds": status_deadline,
        "heartbeatMaxAgeSeconds": heartbeat_max_age,
        "certificatePem": _file_text(certificate_pem, "--certificate-pem"),
        "certificateKeyPem": _file_text(certificate_key_pem, "--certificate-key-pem"),
        "protectedSettingsCertificatePem": _file_text(
            protected_settings_certificate, "--protected-settings-certificate"
        ),
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if no_cert_validation:
        body["certValidation"] = False
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageProblem("--password-stdin: standard input held no password.")
        body["password"] = password
    with client(subscription) as arm:
        response = arm.request("PUT", _path(arm, resource_group, machine_name), json=body, arm=False)
        result: Any = response.json() if response.content else None
    emit(result, output, query)


@host_connection.command("show", cls=ClientCommand)
@_machine_options
@subscription_option
@output_options
def host_connection_show(
    resource_group: str, machine_name: str, subscription: str | None, output: str, query: str | None
) -> None:
    """Show a machine's host connection (credentials are never returned, only whether they are set)."""
    with client(subscription) as arm:
        result = arm.get_json(_path(arm, resource_group, machine_name), arm=False)
    emit(result, output, query)


@host_connection.command("delete", cls=ClientCommand)
@_machine_options
@subscription_option
def host_connection_delete(resource_group: str, machine_name: str, subscription: str | None) -> None:
    """Forget a machine's host connection and its credentials."""
    with client(subscription) as arm:
        arm.request("DELETE", _path(arm, resource_group, machine_name), arm=False)
