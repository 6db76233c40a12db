"""Host-connection settings of the ``ssh`` driver (Linux hosts), checked on PUT.

Public: ``address``, ``port`` (22), ``username``, ``auth`` (``publickey`` when a key is given, else
``password``), ``hostKeyFingerprint`` (OpenSSH ``SHA256:...``, as ``ssh-keygen -lf`` prints it) or
``trustOnFirstUse: true``, ``sudo`` (default: true unless the user is root), ``handlerRoot`` (``/``;
the handler tree is ``<handlerRoot>/var/lib/waagent``), timeouts, allow/block lists and
``protectedSettingsCertificatePem``. Secrets (sealed like passwords): ``password``,
``privateKeyPem``, ``privateKeyPassphrase``.
"""

from __future__ import annotations

import io
import re
from typing import Any

from .. import errors
from .connection_fields import PUBLIC_DEFAULTS, bad_setting, check_timeouts_and_lists

SSH_SECRET_FIELDS = ("password", "privateKeyPem", "privateKeyPassphrase")
SSH_AUTHS = ("publickey", "password")
FINGERPRINT_RE = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
ROOT_RE = re.compile(r"^/[A-Za-z0-9/._-]*$")
SHARED = (
    "operationTimeoutSeconds",
    "connectionTimeoutSeconds",
    "extensionsAllowList",
    "extensionsBlockList",
    "handlerTimeoutSeconds",
    "statusDeadlineSeconds",
    "heartbeatMaxAgeSeconds",
    "protectedSettingsCertificatePem",
)
SSH_PUBLIC = (
    "driver",
    "address",
    "port",
    "username",
    "auth",
    "hostKeyFingerprint",
    "trustOnFirstUse",
    "sudo",
    "handlerRoot",
)


#: Settings that decide where (and as whom) the stored key or password is presented.
SSH_ENDPOINT_FIELDS = ("driver", "address", "port", "username", "auth", "hostKeyFingerprint", "trustOnFirstUse")


def validate_ssh(
    body: dict[str, Any], previous: dict[str, Any] | None = None, previous_public: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check an ssh hostConnection body; returns (public settings, secrets). Stored secrets (``previous``) are
    kept only while the endpoint they were given for (``previous_public``) stays the same: a change of
    address, port, user, auth or host key must carry the key or password again (issue #10, finding 1)."""
    known = set(SHARED) | set(SSH_PUBLIC) | set(SSH_SECRET_FIELDS)
    for key in body:
        if key not in known:
            raise bad_setting(f"Unknown host-connection setting '{key}' for the ssh driver.", key)
    public: dict[str, Any] = {k: body.get(k, PUBLIC_DEFAULTS[k]) for k in SHARED}
    public["driver"] = "ssh"
    public["transport"] = "ssh"
    address = body.get("address")
    if not isinstance(address, str) or not address.strip() or any(c.isspace() for c in address.strip()):
        raise bad_setting("'address' (host name or IP address of the Linux host) is required.", "address")
    public["address"] = address.strip()
    port = body.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise bad_setting("'port' must be a TCP port number.", "port")
    public["port"] = port
    username = body.get("username")
    if not isinstance(username, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9._-]*$", username):
        raise bad_setting("'username' (the SSH login) is required.", "username")
    public["username"] = username
    fp = body.get("hostKeyFingerprint")
    tofu = body.get("trustOnFirstUse", False)
    if not isinstance(tofu, bool):
        raise bad_setting("'trustOnFirstUse' must be true or false.", "trustOnFirstUse")
    if fp is not None and (not isinstance(fp, str) or not FINGERPRINT_RE.match(fp.strip())):
        raise bad_setting(
            "'hostKeyFingerprint' must be an OpenSSH SHA256 fingerprint ('SHA256:' and 43 base64 characters, "
            "as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints).",
            "hostKeyFingerprint",
        )
    if fp is None and not tofu:
        raise bad_setting(
            "Pin the host key: set 'hostKeyFingerprint', or 'trustOnFirstUse': true to record the first key seen.",
            "hostKeyFingerprint",
        )
    public["hostKeyFingerprint"] = fp.strip() if isinstance(fp, str) else None
    public["trustOnFirstUse"] = tofu
    sudo = body.get("sudo", username != "root")
    if not isinstance(sudo, bool):
        raise bad_setting("'sudo' must be true or false.", "sudo")
    public["sudo"] = sudo
    root = body.get("handlerRoot", "/")
    if not isinstance(root, str) or not ROOT_RE.match(root) or ".." in root:
        raise bad_setting(
            "'handlerRoot' must be an absolute path (letters, digits, '/', '.', '-', '_').", "handlerRoot"
        )
    public["handlerRoot"] = root
    check_timeouts_and_lists(public)
    if public["protectedSettingsCertificatePem"] is not None and not isinstance(
        public["protectedSettingsCertificatePem"], str
    ):
        raise bad_setting("'protectedSettingsCertificatePem' must be a string.", "protectedSettingsCertificatePem")
    old = previous or {}
    secrets = {k: body[k] if k in body else old.get(k) for k in SSH_SECRET_FIELDS}
    secrets = {k: v for k, v in secrets.items() if v is not None}
    for k, v in secrets.items():
        if not isinstance(v, str):
            raise bad_setting(f"'{k}' must be a string.", k)
    auth = body.get("auth", "publickey" if secrets.get("privateKeyPem") else "password")
    if auth not in SSH_AUTHS:
        raise bad_setting(f"'auth' must be one of {', '.join(SSH_AUTHS)} for the ssh driver.", "auth")
    public["auth"] = auth
    changed = [k for k in SSH_ENDPOINT_FIELDS if previous_public is not None and previous_public.get(k) != public[k]]
    if changed and previous:
        secrets = {k: v for k, v in secrets.items() if k in body}
        needed = "privateKeyPem" if auth == "publickey" else "password"
        if not secrets.get(needed):
            raise bad_setting(
                f"'{needed}' must be given again: this change of {', '.join(changed)} moves where the stored "
                "credentials would be sent, and they only ever go to the endpoint they were given for.",
                needed,
            )
    if auth == "publickey":
        pem = secrets.get("privateKeyPem")
        if not isinstance(pem, str) or not pem:
            raise bad_setting(
                "Key authentication needs 'privateKeyPem' (an ed25519 or RSA private key).", "privateKeyPem"
            )
        try:
            load_private_key(pem, secrets.get("privateKeyPassphrase"))
        except ValueError as exc:
            raise bad_setting(f"'privateKeyPem': {exc}.", "privateKeyPem") from None
    elif not secrets.get("password"):
        raise bad_setting("'password' is required for password authentication.", "password")
    if not secrets:
        raise errors.invalid_parameter("No credentials.", target="password")
    return public, secrets


def load_private_key(pem: str, passphrase: str | None) -> Any:
    """A paramiko key from PEM/OpenSSH text: ed25519, RSA or ECDSA."""
    import paramiko

    errors: list[str] = []
    for cls in (paramiko.Ed25519Key, paramiko.RSAKey, paramiko.ECDSAKey):
        try:
            return cls.from_private_key(io.StringIO(pem), password=passphrase)
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(type(exc).__name__)
    raise ValueError(
        "the private key is not an ed25519, RSA or ECDSA key in PEM/OpenSSH format (or its passphrase is wrong)"
    )
