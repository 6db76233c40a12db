"""``arcext host-connection``: how arcext reaches a machine's host (psrp or winrm for Windows, ssh for Linux).

The admin surface PUT/GET/DELETE /arcext/v1/subscriptions/{sub}/resourceGroups/{rg}/machines/{m}/hostConnection.
``set`` is a PUT: settings not given take their defaults again, except the credentials, which the server
keeps until new ones are sent (and only while the endpoint stays the same). Secrets never come from the
command line, where other users of the machine could read them in the process list: the password and the
SSH key's passphrase are read from standard input, the SSH private key from a file (``--private-key-file``).
Nothing here prints or logs a secret: the request body is never logged, and the server never returns one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import ArmHttpError, UsageProblem
from ..http import ArmClient, segment
from .common import ClientCommand, client, emit, json_object_argument, output_options, subscription_option


@click.group("host-connection")
def host_connection() -> None:
    """How arcext reaches a machine's host (Windows: psrp/winrm; Linux: ssh); credentials are never shown."""


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


#: Options that only the ssh driver takes, and only the Windows drivers (psrp, winrm) take.
SSH_ONLY = (
    "--private-key-file",
    "--private-key-passphrase-stdin",
    "--host-key-fingerprint",
    "--trust-on-first-use",
    "--sudo/--no-sudo",
    "--handler-root",
)
WINDOWS_ONLY = (
    "--transport",
    "--no-cert-validation",
    "--ca-certificate-path",
    "--configuration-name",
    "--certificate-pem",
    "--certificate-key-pem",
)

#: The server's 400s name the API setting (``target``); this says which option of `set` gives it.
OPTION_FOR_TARGET = {
    "hostKeyFingerprint": "--host-key-fingerprint SHA256:... (ssh-keygen -lf on the host's public key), "
    "or --trust-on-first-use",
    "trustOnFirstUse": "--trust-on-first-use",
    "privateKeyPem": "--private-key-file PATH",
    "privateKeyPassphrase": "--private-key-passphrase-stdin",
    "password": "--password-stdin",
    "username": "--username",
    "address": "--address",
    "port": "--port",
    "auth": "--auth",
    "driver": "--driver",
    "sudo": "--sudo/--no-sudo",
    "handlerRoot": "--handler-root",
}


def _stdin_line(option: str, what: str) -> str:
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise UsageProblem(f"{option}: standard input held no {what}.")
    return value


def _private_key(path: str) -> str:
    """The PEM/OpenSSH text of a private key file (never echoed, not even in an error)."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageProblem(f"--private-key-file: {path} is not a text (PEM or OpenSSH) private key.") from None
    except OSError as exc:
        raise UsageProblem(f"--private-key-file: cannot read {path}: {exc.strerror}") from None
    head = text.lstrip()
    if head.startswith(("ssh-", "ecdsa-", "sk-")) or "PUBLIC KEY-----" in head[:64]:
        raise UsageProblem(
            f"--private-key-file: {path} is a public key; give the private key file (e.g. ~/.ssh/id_ed25519, "
            "not id_ed25519.pub). The public key goes in the host user's ~/.ssh/authorized_keys."
        )
    if "PRIVATE KEY-----" not in head:
        raise UsageProblem(f"--private-key-file: {path} is not a PEM or OpenSSH private key.")
    return text


def _fingerprint(value: str | None) -> str | None:
    """``SHA256:...``; a whole ``ssh-keygen -lf`` line (``256 SHA256:... root@h (ED25519)``) is accepted too."""
    if value is None:
        return None
    for word in value.split():
        if word.startswith("SHA256:"):
            return word
    return value.strip()


@host_connection.command("set", cls=ClientCommand)
@_machine_options
@click.option("--address", required=True, help="Host name or IP address of the host.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="WinRM port (default 5986 for https, 5985 for http); SSH port for ssh (default 22).",
)
@click.option(
    "--driver",
    type=click.Choice(["psrp", "winrm", "ssh"]),
    help="Windows: psrp (PowerShell Remoting, the default) or winrm (WinRS cmd shell, for hosts that allow only "
    "WinRS). Linux: ssh (the default for machines whose osType is linux).",
)
@click.option("--transport", type=click.Choice(["https", "http"]), help="Default https (not for ssh).")
@click.option(
    "--auth",
    type=click.Choice(["negotiate", "ntlm", "kerberos", "certificate", "basic", "publickey", "password"]),
    help="Windows: default negotiate; basic and certificate need https. ssh: publickey (the default when a key "
    "is given) or password.",
)
@click.option("--username", help="The account arcext signs in with (not for certificate auth; the SSH login).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (one line).")
@click.option(
    "--private-key-file",
    metavar="PATH",
    help="ssh: the private key arcext signs in with (ed25519, RSA or ECDSA; OpenSSH or PEM format), read from "
    "this file and sent to the server, which seals it. Never give key material on the command line.",
)
@click.option(
    "--private-key-passphrase-stdin",
    is_flag=True,
    help="ssh: read the passphrase of an encrypted --private-key-file from standard input (one line).",
)
@click.option(
    "--host-key-fingerprint",
    metavar="SHA256:...",
    help="ssh: pin the host's key, as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on the host.",
)
@click.option(
    "--trust-on-first-use",
    is_flag=True,
    help="ssh: no fingerprint; record the first host key seen and refuse any other afterwards.",
)
@click.option(
    "--sudo/--no-sudo",
    default=None,
    help="ssh: run the handlers through `sudo -n` (default: yes unless --username is root).",
)
@click.option("--handler-root", metavar="PATH", help="ssh: absolute path the handler tree lives under (default /).")
@click.option("--no-cert-validation", is_flag=True, help="Do not validate the host's TLS certificate.")
@click.option("--ca-certificate-path", help="CA bundle (on the arcext server) to validate the host's certificate.")
@click.option("--configuration-name", help="PowerShell session configuration, e.g. a JEA endpoint (psrp only).")
@click.option("--operation-timeout", type=click.IntRange(1, 86400), help="Seconds per remote operation.")
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
    private_key_file: str | None,
    private_key_passphrase_stdin: bool,
    host_key_fingerprint: str | None,
    trust_on_first_use: bool,
    sudo: bool | None,
    handler_root: str | None,
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
    """Set (replace) a machine's host connection; the engine then upgrades it over that host.

    A Linux host (ssh): --username, --private-key-file PATH (or --password-stdin), and --host-key-fingerprint
    SHA256:... or --trust-on-first-use. Changing the address, port, username, auth or host key needs the key
    (or password) again.
    """
    ssh_given = [
        name
        for name, given in zip(
            SSH_ONLY,
            (
                private_key_file is not None,
                private_key_passphrase_stdin,
                host_key_fingerprint is not None,
                trust_on_first_use,
                sudo is not None,
                handler_root is not None,
            ),
            strict=True,
        )
        if given
    ]
    windows_given = [
        name
        for name, given in zip(
            WINDOWS_ONLY,
            (
                transport is not None,
                no_cert_validation,
                ca_certificate_path is not None,
                configuration_name is not None,
                certificate_pem is not None,
                certificate_key_pem is not None,
            ),
            strict=True,
        )
        if given
    ]
    if driver in ("psrp", "winrm") and ssh_given:
        raise UsageProblem(f"{', '.join(ssh_given)}: only for --driver ssh (Linux hosts), not {driver}.")
    if (driver == "ssh" or ssh_given) and windows_given:
        raise UsageProblem(f"{', '.join(windows_given)}: only for the Windows drivers (psrp, winrm), not ssh.")
    if private_key_passphrase_stdin and private_key_file is None:
        raise UsageProblem("--private-key-passphrase-stdin: give the key too (--private-key-file PATH).")
    if private_key_passphrase_stdin and password_stdin:
        raise UsageProblem(
            "--password-stdin and --private-key-passphrase-stdin both read standard input; an SSH connection "
            "signs in with a key (and its passphrase) or with a password."
        )
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
        "hostKeyFingerprint": _fingerprint(host_key_fingerprint),
        "sudo": sudo,
        "handlerRoot": handler_root,
        "privateKeyPem": _private_key(private_key_file) if private_key_file is not None else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if no_cert_validation:
        body["certValidation"] = False
    if trust_on_first_use:
        body["trustOnFirstUse"] = True
    if password_stdin:
        body["password"] = _stdin_line("--password-stdin", "password")
    if private_key_passphrase_stdin:
        body["privateKeyPassphrase"] = _stdin_line("--private-key-passphrase-stdin", "passphrase")
    with client(subscription) as arm:
        try:
            response = arm.request("PUT", _path(arm, resource_group, machine_name), json=body, arm=False)
        except ArmHttpError as exc:
            option = OPTION_FOR_TARGET.get(exc.target or "") if exc.status == 400 else None
            if option is None:
                raise
            raise ArmHttpError(exc.status, exc.code or "", f"{exc.message} [option: {option}]", exc.target) from None
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
