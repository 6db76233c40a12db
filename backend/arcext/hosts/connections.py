"""Per-machine host-connection settings for the real drivers (psrp, winrm).

Stored in the machine document as ``doc["machine"]["hostConnection"]``: the public settings in clear,
the credentials sealed with the data directory's SecretBox. Credentials are never returned, printed
or logged (the ARM machine schema does not dump the field).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import errors
from ..clock import iso
from ..crypto import SecretBox
from ..ids import MachineKey
from ..store.base import MachineDoc, Store
from .connection_fields import (
    PUBLIC_DEFAULTS,
    bad_setting,
    check_timeouts_and_lists,
)

DRIVERS = ("psrp", "winrm", "ssh")  # winrm: pywinrm over WinRS, for hosts that do not allow PSRP; ssh: Linux
AUTHS = ("negotiate", "ntlm", "kerberos", "certificate", "basic")
TRANSPORTS = ("https", "http")
SECRET_FIELDS = ("password", "certificatePem", "certificateKeyPem", "certificateKeyPassword")
#: Where stored credentials go and how that endpoint is trusted. A change of any of these must carry the secret
#: again: stored credentials only ever go to the endpoint they were given for (issue #10, finding 1).
ENDPOINT_FIELDS = ("address", "port", "transport", "auth", "certValidation", "caCertificatePath", "username", "driver")


@dataclass(frozen=True)
class HostConnection:
    """Everything a driver needs to reach one host (secrets included; never log this object)."""

    driver: str
    address: str
    port: int
    transport: str
    auth: str
    username: str | None
    configuration_name: str
    cert_validation: bool
    ca_certificate_path: str | None
    operation_timeout_s: int
    connection_timeout_s: int
    allow_list: tuple[str, ...]
    block_list: tuple[str, ...]
    handler_timeouts: dict[str, int]
    status_deadline_s: int
    heartbeat_max_age_s: int
    protected_settings_certificate_pem: str | None
    password: str | None = field(default=None, repr=False)
    certificate_pem: str | None = field(default=None, repr=False)
    certificate_key_pem: str | None = field(default=None, repr=False)
    certificate_key_password: str | None = field(default=None, repr=False)
    # ssh (Linux hosts; hosts/ssh_settings.py validates these)
    host_key_fingerprint: str | None = None
    trust_on_first_use: bool = False
    sudo: bool = False
    handler_root: str = "/"
    private_key_pem: str | None = field(default=None, repr=False)
    private_key_passphrase: str | None = field(default=None, repr=False)

    @property
    def ssl(self) -> bool:
        return self.transport == "https"


def validate(
    body: dict[str, Any],
    previous: dict[str, Any] | None = None,
    previous_public: dict[str, Any] | None = None,
    default_driver: str = "psrp",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a PUT body; returns (public settings, secrets). Secrets not given are kept from ``previous`` (the
    stored secrets) only while the endpoint they were given for (``previous_public``) stays the same.
    ``default_driver`` applies when the body names none (ssh for osType linux machines)."""
    if not isinstance(body, dict):
        raise errors.invalid_request_content("The host connection must be a JSON object.")
    if body.get("driver", default_driver) == "ssh":
        from .ssh_settings import validate_ssh

        return validate_ssh(body, previous, previous_public)
    known = set(PUBLIC_DEFAULTS) | set(SECRET_FIELDS) | {"address", "port", "username"}
    for key in body:
        if key not in known:
            raise bad_setting(f"Unknown host-connection setting '{key}'.", key)
    public: dict[str, Any] = {k: body.get(k, v) for k, v in PUBLIC_DEFAULTS.items()}
    address = body.get("address")
    if not isinstance(address, str) or not address.strip() or any(c.isspace() for c in address.strip()):
        raise bad_setting("'address' (host name or IP address of the Windows host) is required.", "address")
    public["address"] = address.strip()
    for name, allowed in (("driver", DRIVERS), ("transport", TRANSPORTS), ("auth", AUTHS)):
        if public[name] not in allowed:
            raise bad_setting(f"'{name}' must be one of {', '.join(allowed)}.", name)
    port = body.get("port", 5986 if public["transport"] == "https" else 5985)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise bad_setting("'port' must be a TCP port number.", "port")
    public["port"] = port
    https = public["transport"] == "https"
    if public["auth"] == "basic" and not https:
        raise bad_setting("Basic authentication is allowed only over https (it cannot encrypt messages).", "auth")
    if public["auth"] == "certificate" and not https:
        raise bad_setting("Certificate authentication needs https.", "auth")
    if public["driver"] == "winrm" and public["auth"] == "negotiate":
        public["auth"] = "ntlm"  # pywinrm has no SPNEGO negotiation: NTLM (docs/hosts.md says so)
    username = body.get("username")
    if public["auth"] != "certificate" and (not isinstance(username, str) or not username):
        raise bad_setting("'username' is required for this authentication.", "username")
    public["username"] = username if isinstance(username, str) else None
    if not isinstance(public["certValidation"], bool):
        raise bad_setting("'certValidation' must be true or false.", "certValidation")
    for name in ("caCertificatePath", "protectedSettingsCertificatePem"):
        if public[name] is not None and not isinstance(public[name], str):
            raise bad_setting(f"'{name}' must be a string.", name)
    if not isinstance(public["configurationName"], str) or not public["configurationName"].strip():
        raise bad_setting(
            "'configurationName' (the PowerShell session configuration, e.g. a JEA endpoint) is invalid.",
            "configurationName",
        )
    if public["driver"] == "winrm" and public["configurationName"] != PUBLIC_DEFAULTS["configurationName"]:
        raise bad_setting(
            "'configurationName' (a JEA or other session configuration) needs the psrp driver: "
            "the winrm driver runs in the WinRS cmd shell.",
            "configurationName",
        )
    check_timeouts_and_lists(public)
    changed = [k for k in ENDPOINT_FIELDS if previous_public is not None and previous_public.get(k) != public[k]]
    old = {} if changed else (previous or {})
    secrets = {k: body[k] if k in body else old.get(k) for k in SECRET_FIELDS}
    secrets = {k: v for k, v in secrets.items() if v is not None}
    for k, v in secrets.items():
        if not isinstance(v, str):
            raise bad_setting(f"'{k}' must be a string.", k)
    if changed and previous:
        needed = ("certificatePem", "certificateKeyPem") if public["auth"] == "certificate" else ("password",)
        missing = [k for k in needed if not secrets.get(k)]
        if missing:
            raise bad_setting(
                f"'{missing[0]}' must be given again: this change of {', '.join(changed)} moves where the stored "
                "credentials would be sent, and they only ever go to the endpoint they were given for.",
                missing[0],
            )
    if public["auth"] == "certificate":
        if not secrets.get("certificatePem") or not secrets.get("certificateKeyPem"):
            raise bad_setting(
                "Certificate authentication needs 'certificatePem' and 'certificateKeyPem'.", "certificatePem"
            )
        if public["driver"] == "winrm" and secrets.get("certificateKeyPassword"):
            raise bad_setting(
                "The winrm driver (pywinrm) cannot use an encrypted certificate key; use the psrp driver "
                "or an unencrypted key.",
                "certificateKeyPassword",
            )
    elif not secrets.get("password"):
        raise bad_setting("'password' is required for this authentication.", "password")
    return public, secrets


def stored(doc: MachineDoc) -> dict[str, Any] | None:
    """The stored settings of a machine document, if any."""
    value = (doc.get("machine") or {}).get("hostConnection")
    return value if isinstance(value, dict) else None


def view(record: dict[str, Any]) -> dict[str, Any]:
    """What the API returns: the public settings, never a secret."""
    out = {k: v for k, v in record.items() if k != "credentials"}
    out["hasCredentials"] = bool(record.get("credentials"))
    return out


def load(record: dict[str, Any], box: SecretBox) -> HostConnection:
    secrets = box.open(record["credentials"]) if record.get("credentials") else {}
    p = {**PUBLIC_DEFAULTS, **record}
    return HostConnection(
        driver=p["driver"],
        address=p["address"],
        port=int(p["port"]),
        transport=p["transport"],
        auth=p["auth"],
        username=p.get("username"),
        configuration_name=p["configurationName"],
        cert_validation=bool(p["certValidation"]),
        ca_certificate_path=p.get("caCertificatePath"),
        operation_timeout_s=int(p["operationTimeoutSeconds"]),
        connection_timeout_s=int(p["connectionTimeoutSeconds"]),
        allow_list=tuple(p["extensionsAllowList"]),
        block_list=tuple(p["extensionsBlockList"]),
        handler_timeouts={str(k): int(v) for k, v in p["handlerTimeoutSeconds"].items()},
        status_deadline_s=int(p["statusDeadlineSeconds"]),
        heartbeat_max_age_s=int(p["heartbeatMaxAgeSeconds"]),
        protected_settings_certificate_pem=p.get("protectedSettingsCertificatePem"),
        password=secrets.get("password"),
        certificate_pem=secrets.get("certificatePem"),
        certificate_key_pem=secrets.get("certificateKeyPem"),
        certificate_key_password=secrets.get("certificateKeyPassword"),
        host_key_fingerprint=p.get("hostKeyFingerprint"),
        trust_on_first_use=bool(p.get("trustOnFirstUse", False)),
        sudo=bool(p.get("sudo", False)),
        handler_root=str(p.get("handlerRoot") or "/"),
        private_key_pem=secrets.get("privateKeyPem"),
        private_key_passphrase=secrets.get("privateKeyPassphrase"),
    )


def extension_allowed(conn: HostConnection, publisher: str, type_: str) -> str | None:
    """azcmagent semantics: the blocklist wins; a non-empty allowlist admits only its entries.
    Returns why the extension is refused, or None."""
    name = f"{publisher}/{type_}".lower()
    if any(p.lower() == name for p in conn.block_list):
        return f"{publisher}/{type_} is in the machine's extensions blocklist"
    if conn.allow_list and not any(p.lower() == name for p in conn.allow_list):
        return f"{publisher}/{type_} is not in the machine's extensions allowlist"
    return None


class HostConnectionService:
    def __init__(self, store: Store, box: SecretBox) -> None:
        self.store = store
        self.box = box

    def _missing(self, key: MachineKey) -> errors.ArmError:
        return errors.resource_not_found("Microsoft.HybridCompute/machines", key.name, key.resource_group)

    def get(self, key: MachineKey) -> dict[str, Any]:
        doc = self.store.get_machine(key)
        if doc is None:
            raise self._missing(key)
        record = stored(doc)
        if record is None:
            raise errors.resource_not_found("arcext/hostConnection", key.name, key.resource_group)
        return view(record)

    def put(self, key: MachineKey, body: dict[str, Any], now: datetime) -> tuple[dict[str, Any], bool]:
        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, tuple[dict[str, Any], bool]]:
            if doc is None:
                raise self._missing(key)
            current = stored(doc)
            previous_secrets = self.box.open(current["credentials"]) if current and current.get("credentials") else None
            os_type = str(((doc["machine"].get("properties") or {}).get("osType")) or "").lower()
            public, secrets = validate(body, previous_secrets, current, "ssh" if os_type == "linux" else "psrp")
            if os_type in ("linux", "windows") and (public["driver"] == "ssh") != (os_type == "linux"):
                raise bad_setting(
                    f"The {public['driver']} driver cannot reach this machine: its osType is {os_type} "
                    "(ssh drives Linux hosts; psrp and winrm drive Windows hosts).",
                    "driver",
                )
            record = {**public, "credentials": self.box.seal(secrets), "updatedAt": iso(now)}
            doc["machine"]["hostConnection"] = record
            return doc, (view(record), current is None)

        result: tuple[dict[str, Any], bool] = self.store.mutate_machine(key, change)
        return result

    def delete(self, key: MachineKey) -> bool:
        def change(doc: MachineDoc | None) -> tuple[MachineDoc | None, bool]:
            if doc is None:
                raise self._missing(key)
            existed = stored(doc) is not None
            doc["machine"].pop("hostConnection", None)
            return doc, existed

        deleted: bool = self.store.mutate_machine(key, change)
        return deleted
